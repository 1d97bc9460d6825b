/**
 * The model picker: the server's default model first, then the others it offers (`/health`
 * lists them), or the one offline model when the server runs the embedded one. A choice is
 * remembered (localStorage) only after a reply with it succeeded, and forgotten when the server
 * refuses it, so a bad model never sticks.
 */
import { h } from './dom.js';

const KEY = 'streamchat.model';
const REFUSED = new Set(['invalid_model', 'model_not_allowed']);

export class ModelPicker {
  /** @param {HTMLSelectElement} select */
  constructor(select) {
    this.select = select;
    this.default = '';
  }

  /** Fills the picker from `/health`: `{backend, model, models}`. */
  load({ backend, model, models }) {
    this.default = model ?? '';
    const names = [...new Set([this.default, ...(models ?? [])].filter(Boolean))];
    const option = (name) => h('option', { value: name, title: name }, name);
    if (backend === 'local') {
      // The offline note beside the composer names it; here it is simply what answers.
      this.select.replaceChildren(h('option', { value: this.default }, 'Offline model'));
    } else if (names.length > 1) {
      this.select.replaceChildren(
        h('optgroup', { label: 'Default' }, option(this.default)),
        h('optgroup', { label: 'More models' }, names.slice(1).map(option)),
      );
    } else {
      this.select.replaceChildren(option(this.default));
    }
    if (!this.default) this.select.replaceChildren(h('option', { value: '' }, 'Server default'));
    const saved = localStorage.getItem(KEY);
    if (saved && names.includes(saved) && backend !== 'local') this.select.value = saved;
    else localStorage.removeItem(KEY);
  }

  get value() {
    return this.select.value;
  }

  /** A reply with `model` completed: keep it for the next visit (the default needs no keeping). */
  succeeded(model) {
    if (model && model !== this.default) localStorage.setItem(KEY, model);
    else localStorage.removeItem(KEY);
  }

  /** The server refused `model` (`code`): back to the default. True when that happened. */
  refused(model, code) {
    if (!REFUSED.has(code) || model === this.default) return false;
    localStorage.removeItem(KEY);
    this.select.value = this.default;
    return true;
  }
}
