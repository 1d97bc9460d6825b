/**
 * The messages of the chat: a user's message (copy, and edit while it is the last one) and an
 * assistant reply as it streams: Markdown text segments, tool cards (toolcard.js, with Approve and
 * Deny for a call that waits for a person) and artifact chips in arrival order, an error with
 * Retry, then a footer with copy, Regenerate and what the reply cost. Which turn may be edited or
 * regenerated is the conversation's business (app.js); style.css shows those buttons on the last
 * turn only.
 */
import { copyButton, h, icon, iconButton } from './dom.js';
import { MarkdownView } from './markdown.js';
import { ToolCard, formatMs } from './toolcard.js';

/** The state label of each artifact chip in the chat, by artifact version. */
const chipLabels = new WeakMap();

/** "Writing…" while it streams, then "Open", or its version number once there are several. */
function labelChips(version) {
  const { versions } = version.group;
  for (const each of versions) {
    const label = chipLabels.get(each);
    if (!label) continue;
    if (!each.done) label.textContent = 'Writing…';
    else label.textContent = versions.length > 1 ? `v${each.number}` : 'Open';
  }
}

export class UserMessage {
  /** @param {string} text @param {(text: string) => void} resend  sends an edited text instead */
  constructor(text, resend) {
    this.text = text;
    this.resend = resend;
    this.bubble = h('div', { class: 'bubble' }, text);
    this.actions = h(
      'div',
      { class: 'msg-actions' },
      copyButton(() => this.text, { label: 'Copy message' }),
      iconButton('edit', 'Edit message', () => this.edit(), 'turn-action'),
    );
    this.node = h(
      'article',
      { class: 'msg msg-user' },
      h('h2', { class: 'visually-hidden' }, 'You'),
      this.bubble,
      this.actions,
    );
  }

  /** Swaps the bubble for a text box: Send (or Enter) resends, Cancel (or Escape) puts it back. */
  edit() {
    const box = h('textarea', { class: 'edit-box', rows: '1', 'aria-label': 'Edit your message' });
    box.value = this.text;
    const close = () => {
      form.remove();
      this.bubble.hidden = false;
      this.actions.hidden = false;
      this.node.classList.remove('is-editing');
    };
    const submit = () => {
      const text = box.value;
      if (!text.trim()) return;
      close();
      this.resend(text);
    };
    const form = h(
      'form',
      { class: 'edit-form', onsubmit: (event) => (event.preventDefault(), submit()) },
      box,
      h(
        'div',
        { class: 'edit-actions' },
        h('button', { type: 'button', class: 'btn btn-ghost btn-small', onclick: close }, 'Cancel'),
        h('button', { type: 'submit', class: 'btn btn-primary btn-small' }, 'Send'),
      ),
    );
    box.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submit();
      } else if (event.key === 'Escape') {
        event.preventDefault();
        close();
      }
    });
    const fit = () => {
      box.style.height = 'auto';
      box.style.height = `${Math.min(box.scrollHeight, 240)}px`;
    };
    box.addEventListener('input', fit);
    this.bubble.hidden = true;
    this.actions.hidden = true;
    this.node.classList.add('is-editing');
    this.node.append(form);
    fit();
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  }
}

/**
 * One assistant reply. `hooks`: {artifacts, announce, retry(), regenerate(),
 * approve(toolId, approved)}.
 */
export class AssistantReply {
  constructor(hooks) {
    this.hooks = hooks;
    const dots = [h('span'), h('span'), h('span')];
    this.typing = h('div', { class: 'typing', 'aria-hidden': 'true' }, dots);
    this.body = h('div', { class: 'msg-body' }, this.typing);
    this.meta = h('div', { class: 'msg-meta' });
    this.copy = copyButton(() => this.markdown(), { label: 'Copy message' });
    this.regenerate = iconButton('refresh', 'Regenerate', hooks.regenerate, 'turn-action');
    this.foot = h(
      'div',
      { class: 'msg-foot', hidden: true },
      h('div', { class: 'msg-actions' }, this.copy, this.regenerate),
      this.meta,
    );
    this.node = h(
      'article',
      { class: 'msg msg-assistant', 'aria-busy': 'true' },
      h('div', { class: 'avatar', 'aria-hidden': 'true' }, icon('spark')),
      h(
        'div',
        { class: 'msg-main' },
        h('h2', { class: 'visually-hidden' }, 'Assistant'),
        this.body,
        this.foot,
      ),
    );
    this.segments = []; // every text segment's MarkdownView, in order
    this.text = null; // the one being written
    this.tools = new Map();
    this.frame = 0;
    this.failed = false;
  }

  /** The reply's text as the model wrote it (Markdown), for the copy button. */
  markdown() {
    return this.segments.map((view) => view.text.trim()).filter(Boolean).join('\n\n');
  }

  handle(event) {
    const { artifacts, announce } = this.hooks;
    switch (event.type) {
      case 'text':
        return this.addText(event.content ?? event.textDelta ?? '');
      case 'tool_approval_required':
        return this.tool(event).ask();
      case 'tool_executing':
        announce(`Running ${event.toolName}…`);
        return this.tool(event).executing();
      case 'tool_completed':
        return this.tool(event).completed(event);
      case 'tool_error':
        return this.tool(event).failed(event);
      case 'artifact_started':
        announce(`Writing ${event.title}…`);
        return this.addChip(artifacts.start(event));
      case 'artifact_content':
        return artifacts.append(event);
      case 'artifact_completed':
        return labelChips(artifacts.complete(event));
      case 'completion':
        return this.complete(event);
      case 'error':
        return this.fail(event.message || 'Something went wrong', event.code);
      default:
        return undefined; // newer servers may send more kinds of event
    }
  }

  insert(node) {
    this.body.insertBefore(node, this.typing);
  }

  addText(delta) {
    if (!delta) return;
    if (!this.text) {
      const node = h('div', { class: 'md' });
      this.text = new MarkdownView(node);
      this.segments.push(this.text);
      this.insert(node);
      this.hooks.announce('Responding…');
    }
    this.text.append(delta);
    // Render at most once per frame: a fast model sends far more deltas than that.
    this.frame ||= requestAnimationFrame(() => this.render());
  }

  render(final = false) {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.text?.render(final);
  }

  /** Ends the text segment, so what follows (a card, more text) comes after it. */
  breakText() {
    this.render(true);
    this.text = null;
  }

  tool(event) {
    let card = this.tools.get(event.toolId);
    if (!card) {
      this.breakText();
      card = new ToolCard(event, this.hooks);
      this.tools.set(event.toolId, card);
      this.insert(card.node);
    }
    return card;
  }

  addChip(version) {
    this.breakText();
    const label = h('span', { class: 'chip-state' }, 'Writing…');
    const chip = h(
      'button',
      {
        type: 'button',
        class: 'artifact-chip',
        'aria-label': `Open ${version.title}`,
        onclick: () => this.hooks.artifacts.reveal(version),
      },
      h('span', { class: 'chip-icon' }, icon('file')),
      h(
        'span',
        { class: 'chip-text' },
        h('strong', {}, version.title),
        h('span', {}, [version.type, version.language].filter(Boolean).join(' · ')),
      ),
      label,
    );
    chipLabels.set(version, label);
    this.insert(chip);
    labelChips(version);
  }

  complete({ model, usage, elapsedMs, finishReason }) {
    if (finishReason === 'cancelled') this.stopped(); // the stop route ended it: said quietly
    const parts = [model];
    if (usage?.totalTokens) parts.push(`${usage.totalTokens.toLocaleString()} tokens`);
    if (typeof usage?.cost === 'number') parts.push(`$${usage.cost.toFixed(4)}`);
    parts.push(formatMs(elapsedMs));
    this.meta.textContent = parts.filter(Boolean).join(' · ');
    if (finishReason !== 'cancelled') this.hooks.announce('');
  }

  fail(message, code) {
    this.breakText();
    this.failed = true;
    this.node.classList.add('is-failed');
    const retry = h(
      'button',
      { type: 'button', class: 'btn btn-outline btn-small turn-action', onclick: this.hooks.retry },
      icon('refresh'),
      h('span', {}, 'Retry'),
    );
    this.insert(
      h(
        'div',
        { class: 'error-box', role: 'alert' },
        icon('alert'),
        h(
          'div',
          { class: 'error-text' },
          h('p', { class: 'error-message' }, message),
          code ? h('code', { class: 'error-code' }, code) : null,
        ),
        retry,
      ),
    );
    this.hooks.announce('The reply failed.');
  }

  stopped() {
    this.breakText();
    this.insert(h('p', { class: 'stopped-note' }, icon('stop'), 'Stopped'));
    this.hooks.announce('Stopped.');
  }

  finish() {
    this.render(true);
    this.typing.remove();
    for (const card of this.tools.values()) card.interrupt();
    if (!this.body.childElementCount) {
      this.body.append(h('p', { class: 'empty-note' }, '(no reply)'));
    }
    this.copy.hidden = !this.markdown();
    this.foot.hidden = false;
    this.node.setAttribute('aria-busy', 'false');
  }
}
