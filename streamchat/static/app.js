/**
 * The chat page: sends each message with `streamChat` and renders the reply as it streams
 * (text, tool cards, artifacts, errors). Every piece of model text goes into the DOM as text
 * nodes (see dom.js and markdown.js), never as HTML.
 */
import { ArtifactPanel } from './artifacts.js';
import { h, icon } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { clearConversation, streamChat } from './streamchat.js';

const $ = (id) => document.getElementById(id);
const ui = {
  scroller: $('scroller'),
  welcome: $('welcome'),
  messages: $('messages'),
  form: $('composer'),
  input: $('message'),
  send: $('send'),
  stop: $('stop'),
  status: $('status'),
  model: $('model'),
  conversationId: $('conversation-id'),
  newConversation: $('new-conversation'),
  backendNotice: $('backend-notice'),
};

const MODEL_KEY = 'streamchat.model';
const state = { conversationId: '', controller: null, defaultModel: '' };
const artifacts = new ArtifactPanel(
  { panel: $('artifacts'), list: $('artifact-list'), count: $('artifact-count') },
  announce,
);

/** A fresh id matching ^[A-Za-z0-9._:-]{1,128}$ (randomUUID needs a secure context). */
function newConversationId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function setConversationId(id) {
  state.conversationId = id;
  ui.conversationId.textContent = id;
  ui.conversationId.title = id;
}

function announce(message) {
  ui.status.textContent = message;
}

/** Keeps the view pinned to the newest message, unless the reader has scrolled up. */
function keepScrolled(change) {
  const { scrollTop, scrollHeight, clientHeight } = ui.scroller;
  const pinned = scrollHeight - scrollTop - clientHeight < 96;
  change();
  if (pinned) ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

function prettyJson(raw) {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return raw ?? '';
  }
}

function formatMs(ms) {
  if (typeof ms !== 'number') return '';
  if (ms < 1) return '<1 ms';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function section(caption, content) {
  return h('div', { class: 'tool-section' }, h('div', { class: 'tool-caption' }, caption), content);
}

/** A tool call's card: name and arguments at once, then its result or error. */
function toolCard({ toolName, arguments: args }) {
  const badge = h('span', { class: 'tool-state' }, h('span', { class: 'spinner' }), 'Running');
  const output = h('div', { class: 'tool-output' });
  const node = h(
    'section',
    { class: 'tool-card is-running', 'aria-label': `Tool call: ${toolName}` },
    h(
      'header',
      { class: 'tool-head' },
      h('span', { class: 'tool-icon' }, icon('tool')),
      h('span', { class: 'tool-label' }, 'Tool'),
      h('code', { class: 'tool-name' }, toolName),
      badge,
    ),
    h(
      'div',
      { class: 'tool-body' },
      section('Arguments', h('pre', { class: 'tool-args' }, prettyJson(args))),
      output,
    ),
  );
  const finish = (state, label, ms, result) => {
    node.classList.replace('is-running', state);
    badge.replaceChildren(label, h('span', { class: 'tool-ms' }, formatMs(ms)));
    if (result) output.replaceChildren(result);
  };
  return {
    node,
    completed: (e) => {
      const result = h('pre', { class: 'tool-result' }, prettyJson(e.result));
      finish('is-done', 'Done', e.executionMs, section('Result', result));
    },
    failed: (e) => {
      const error = h('pre', { class: 'tool-error' }, e.error || 'The tool failed');
      finish('is-error', 'Failed', e.executionMs, section('Error', error));
    },
    /** The reply ended (stopped, failed) before the tool's result arrived. */
    interrupt: () => {
      if (node.classList.contains('is-running')) finish('is-interrupted', 'Interrupted');
    },
  };
}

function errorBox(message, code) {
  return h(
    'div',
    { class: 'error-box', role: 'alert' },
    icon('alert'),
    h(
      'div',
      {},
      h('p', { class: 'error-message' }, message),
      code ? h('code', { class: 'error-code' }, code) : null,
    ),
  );
}

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

/** One assistant reply: text segments, tool cards and artifact chips, in arrival order. */
class AssistantReply {
  constructor() {
    const dots = [h('span'), h('span'), h('span')];
    this.typing = h('div', { class: 'typing', 'aria-hidden': 'true' }, dots);
    this.body = h('div', { class: 'msg-body' }, this.typing);
    this.meta = h('div', { class: 'msg-meta' });
    this.node = h(
      'article',
      { class: 'msg msg-assistant', 'aria-busy': 'true' },
      h('div', { class: 'avatar', 'aria-hidden': 'true' }, icon('spark')),
      h(
        'div',
        { class: 'msg-main' },
        h('h2', { class: 'visually-hidden' }, 'Assistant'),
        this.body,
        this.meta,
      ),
    );
    this.text = null; // the text segment being written: {value, node}
    this.tools = new Map();
    this.frame = 0;
  }

  handle(event) {
    switch (event.type) {
      case 'text':
        return this.addText(event.content ?? event.textDelta ?? '');
      case 'tool_executing':
        announce(`Running ${event.toolName}…`);
        return this.tool(event);
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
    keepScrolled(() => this.body.insertBefore(node, this.typing));
  }

  addText(delta) {
    if (!delta) return;
    if (!this.text) {
      this.text = { value: '', node: h('div', { class: 'md' }) };
      this.insert(this.text.node);
      announce('Responding…');
    }
    this.text.value += delta;
    // Re-render at most once per frame: a fast model sends far more deltas than that.
    this.frame ||= requestAnimationFrame(() => this.render());
  }

  render() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    const text = this.text;
    if (text) keepScrolled(() => text.node.replaceChildren(renderMarkdown(text.value)));
  }

  /** Ends the text segment, so what follows (a card, more text) comes after it. */
  breakText() {
    this.render();
    this.text = null;
  }

  tool(event) {
    let card = this.tools.get(event.toolId);
    if (!card) {
      this.breakText();
      card = toolCard(event);
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
      { type: 'button', class: 'artifact-chip', onclick: () => artifacts.reveal(version) },
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

  complete({ model, usage, elapsedMs }) {
    const parts = [model];
    if (usage?.totalTokens) parts.push(`${usage.totalTokens.toLocaleString()} tokens`);
    if (typeof usage?.cost === 'number') parts.push(`$${usage.cost.toFixed(4)}`);
    parts.push(formatMs(elapsedMs));
    this.meta.textContent = parts.filter(Boolean).join(' · ');
    announce('');
  }

  fail(message, code) {
    this.breakText();
    this.insert(errorBox(message, code));
    announce('The reply failed.');
  }

  stopped() {
    this.breakText();
    this.insert(h('p', { class: 'stopped-note' }, icon('stop'), 'Stopped'));
    announce('Stopped.');
  }

  finish() {
    this.render();
    this.typing.remove();
    for (const card of this.tools.values()) card.interrupt();
    if (!this.body.childElementCount) {
      this.body.append(h('p', { class: 'empty-note' }, '(no reply)'));
    }
    this.node.setAttribute('aria-busy', 'false');
  }
}

function addUserMessage(text) {
  const node = h(
    'article',
    { class: 'msg msg-user' },
    h('h2', { class: 'visually-hidden' }, 'You'),
    h('div', { class: 'bubble' }, text),
  );
  keepScrolled(() => ui.messages.append(node));
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

function setStreaming(streaming) {
  const stopHadFocus = document.activeElement === ui.stop;
  ui.send.hidden = streaming;
  ui.stop.hidden = !streaming;
  document.body.classList.toggle('is-streaming', streaming);
  if (!streaming && (stopHadFocus || document.activeElement === document.body)) ui.input.focus();
}

function describe(error) {
  if (error instanceof TypeError) return `Could not reach the server (${error.message}).`;
  return error.message || String(error);
}

async function send(text) {
  if (state.controller || !text.trim()) return;
  ui.welcome.hidden = true;
  addUserMessage(text);
  ui.input.value = '';
  autosize();
  const reply = new AssistantReply();
  keepScrolled(() => ui.messages.append(reply.node));
  const controller = new AbortController();
  state.controller = controller;
  setStreaming(true);
  announce('Thinking…');
  try {
    const events = streamChat({
      message: text,
      model: ui.model.value.trim(),
      conversationId: state.conversationId,
      signal: controller.signal,
    });
    for await (const event of events) reply.handle(event);
  } catch (error) {
    if (error.name === 'AbortError') reply.stopped();
    else reply.fail(describe(error), error.code);
  } finally {
    reply.finish();
    if (state.controller === controller) {
      state.controller = null;
      setStreaming(false);
    }
  }
}

function stop() {
  state.controller?.abort();
}

async function newConversation() {
  const old = state.conversationId;
  stop();
  state.controller = null;
  setStreaming(false);
  ui.messages.replaceChildren();
  artifacts.clear();
  ui.welcome.hidden = false;
  setConversationId(newConversationId());
  ui.input.focus();
  try {
    await clearConversation(old);
    announce('Started a new conversation.');
  } catch (error) {
    announce(`The old conversation could not be cleared on the server: ${describe(error)}`);
  }
}

function autosize() {
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 240)}px`;
}

async function loadDefaults() {
  const saved = localStorage.getItem(MODEL_KEY);
  if (saved) ui.model.value = saved;
  try {
    const response = await fetch('/health', { headers: { Accept: 'application/json' } });
    const health = await response.json();
    state.defaultModel = health.model ?? '';
    ui.model.placeholder = state.defaultModel || 'server default';
    if (!ui.model.value) ui.model.value = state.defaultModel;
    if (health.backend === 'none') {
      ui.backendNotice.textContent =
        'No model backend is configured on the server: each reply says how to set ' +
        'OPENROUTER_API_KEY.';
      ui.backendNotice.hidden = false;
    }
  } catch (error) {
    announce(`Could not read the server's default model: ${describe(error)}`);
  }
  document.body.dataset.ready = 'true';
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  send(ui.input.value);
});
ui.input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send(ui.input.value);
  } else if (event.key === 'Escape' && state.controller) {
    event.preventDefault();
    stop();
  }
});
ui.input.addEventListener('input', autosize);
ui.stop.addEventListener('click', stop);
ui.newConversation.addEventListener('click', newConversation);
ui.model.addEventListener('change', () => {
  const model = ui.model.value.trim();
  if (model && model !== state.defaultModel) localStorage.setItem(MODEL_KEY, model);
  else localStorage.removeItem(MODEL_KEY);
});
for (const button of document.querySelectorAll('.suggestion')) {
  button.addEventListener('click', () => send(button.dataset.prompt));
}

setConversationId(newConversationId());
loadDefaults();
