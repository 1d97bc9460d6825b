/**
 * A tool call's card in a reply: its name and arguments at once, then its result or error and
 * how long it took. A call that waits for a person (`tool_approval_required`) first asks: Approve
 * and Deny under the arguments. The decision stays on the card whoever took it: this page, or
 * another tab or program, which the next event about the call tells (`tool_executing`: it was
 * approved; `tool_error` before that: it was denied, or nobody answered in time).
 */
import { h, icon } from './dom.js';

function prettyJson(raw) {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return raw ?? '';
  }
}

export function formatMs(ms) {
  if (typeof ms !== 'number') return '';
  if (ms < 1) return '<1 ms';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function section(caption, content) {
  return h('div', { class: 'tool-section' }, h('div', { class: 'tool-caption' }, caption), content);
}

let questions = 0; // ids that tie each approval group to its question

export class ToolCard {
  #state = 'is-running';
  #approval = null; // {bar, chosen (this page's answer, or null), decided}

  /**
   * @param {{toolName: string, toolId: string, arguments: string}} call
   * @param {{announce: (message: string) => void,
   *          approve: (toolId: string, approved: boolean) => Promise<unknown>}} hooks
   */
  constructor({ toolName, toolId, arguments: args }, hooks) {
    this.name = toolName;
    this.id = toolId;
    this.hooks = hooks;
    this.badge = h('span', { class: 'tool-state' }, h('span', { class: 'spinner' }), 'Running');
    this.output = h('div', { class: 'tool-output' });
    this.node = h(
      'section',
      { class: 'tool-card is-running', 'aria-label': `Tool call: ${toolName}` },
      h(
        'header',
        { class: 'tool-head' },
        h('span', { class: 'tool-icon' }, icon('tool')),
        h('span', { class: 'tool-label' }, 'Tool'),
        h('code', { class: 'tool-name' }, toolName),
        this.badge,
      ),
      h(
        'div',
        { class: 'tool-body' },
        section('Arguments', h('pre', { class: 'tool-args' }, prettyJson(args))),
        this.output,
      ),
    );
  }

  #setState(state, ...label) {
    this.node.classList.replace(this.#state, state);
    this.#state = state;
    this.badge.replaceChildren(...label);
  }

  #finish(state, label, ms, result) {
    this.#setState(state, label, h('span', { class: 'tool-ms' }, formatMs(ms)));
    if (result) this.output.replaceChildren(result);
  }

  /** `tool_approval_required`: the call waits; Approve and Deny answer it. */
  ask() {
    if (this.#approval) return; // the same event again (a join replays the turn)
    const choice = (approved, label, className) =>
      h(
        'button',
        {
          type: 'button',
          class: `btn btn-small ${className}`,
          onclick: () => this.#choose(approved),
        },
        icon(approved ? 'check' : 'close'),
        h('span', {}, label),
      );
    const question = h(
      'p',
      { class: 'approval-question', id: `approval-${++questions}` },
      icon('shield'),
      h('span', {}, 'Run ', h('code', {}, this.name), ' with these arguments?'),
    );
    const buttons = h(
      'div',
      { class: 'approval-buttons' },
      choice(false, 'Deny', 'btn-outline'),
      choice(true, 'Approve', 'btn-primary'),
    );
    const bar = h(
      'div',
      { class: 'tool-approval', role: 'group', 'aria-labelledby': question.id },
      question,
      buttons,
    );
    this.#approval = { bar, buttons, chosen: null, decided: false, focused: false };
    this.#setState('is-waiting', 'Needs approval');
    this.node.append(bar);
    this.hooks.announce(`${this.name} needs your approval.`);
  }

  /** This page's answer: sent with `approve()`; the events that follow settle the card. */
  async #choose(approved) {
    const approval = this.#approval;
    if (!approval || approval.decided || approval.chosen !== null) return;
    approval.chosen = approved;
    approval.focused = approval.bar.contains(document.activeElement);
    for (const button of approval.buttons.querySelectorAll('button')) button.disabled = true;
    const sending = approved ? 'Approving' : 'Denying';
    this.#setState('is-waiting', h('span', { class: 'spinner' }), sending);
    try {
      await this.hooks.approve(this.id, approved);
      this.#decided(approved);
    } catch (error) {
      if (approval.decided) return; // the turn's events already said what happened
      if (error?.status === 404) {
        // Answered elsewhere or timed out: the next event about the call says which.
        this.#say('is-gone', icon('clock'), 'This call no longer waits for an answer.');
        return;
      }
      approval.chosen = null;
      for (const button of approval.buttons.querySelectorAll('button')) button.disabled = false;
      this.#setState('is-waiting', 'Needs approval');
      const reason = error?.message || String(error);
      this.hooks.announce(`Could not send the answer: ${reason}`);
      approval.buttons.before(h('p', { class: 'approval-failed', role: 'alert' }, reason));
    }
  }

  /** The call was approved (true) or denied (false), here or elsewhere. */
  #decided(approved) {
    const approval = this.#approval;
    if (!approval || approval.decided) return;
    approval.decided = true;
    const here = approval.chosen === approved;
    let text;
    if (approved) text = here ? 'Approved' : 'Approved elsewhere';
    else text = here ? 'Denied' : 'Not run: denied elsewhere, or no answer in time';
    const mark = icon(approved ? 'check' : 'close');
    this.#say(approved ? 'is-approved' : 'is-denied', mark, text);
    if (approved) this.#setState('is-running', h('span', { class: 'spinner' }), 'Running');
    this.hooks.announce(`${this.name}: ${text.toLowerCase()}.`);
  }

  /**
   * Replaces the question and buttons with one line that says how things stand. Focus on them
   * (or lost when a pressed button was disabled) moves to that line, so the keyboard keeps its
   * place in the reply.
   */
  #say(className, ...content) {
    const { bar, focused } = this.#approval;
    const active = document.activeElement;
    const refocus = bar.contains(active) || (focused && (!active || active === document.body));
    const note = h('p', { class: `approval-note ${className}`, tabindex: '-1' }, ...content);
    bar.replaceChildren(note);
    if (refocus) note.focus({ preventScroll: true });
  }

  /** `tool_executing`: the call runs (so it was approved, if it waited). */
  executing() {
    if (this.#approval) this.#decided(true);
  }

  completed(event) {
    this.executing();
    const result = h('pre', { class: 'tool-result' }, prettyJson(event.result));
    this.#finish('is-done', 'Done', event.executionMs, section('Result', result));
  }

  failed(event) {
    const denied = this.#approval !== null && this.#state !== 'is-running';
    if (this.#approval) this.#decided(!denied);
    const error = h('pre', { class: 'tool-error' }, event.error || 'The tool failed');
    const [state, label] = denied ? ['is-denied', 'Denied'] : ['is-error', 'Failed'];
    this.#finish(state, label, denied ? undefined : event.executionMs, section('Error', error));
  }

  /** The reply ended (stopped, failed) before the tool's result arrived. */
  interrupt() {
    if (this.#state !== 'is-running' && this.#state !== 'is-waiting') return;
    const approval = this.#approval;
    if (approval && !approval.decided) {
      approval.decided = true;
      this.#say('is-gone', icon('stop'), 'Not answered: the reply ended first.');
    }
    this.#finish('is-interrupted', 'Interrupted');
  }
}
