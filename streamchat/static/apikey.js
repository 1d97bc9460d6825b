/**
 * The API key the page sends, for a server started with `AUTH=keys` (or `jwt`: a token pastes the
 * same way). Nothing happens until the server asks: the first call it answers with `401
 * unauthorized` opens a dialog for the key, and every call that failed that way meanwhile waits
 * for it and is then made again. The key is kept in this tab's `sessionStorage` (a reload keeps
 * it, closing the tab forgets it; other tabs ask for their own), and sent with every call as
 * `Authorization: Bearer <key>`. A key the server refuses is dropped and asked for again, with a
 * message. The header's key button, shown once a key is in play, changes or forgets it.
 */

const STORAGE = 'streamchat.apiKey';

/** The server wants a key: none was sent, or the one sent was refused. */
function isUnauthorized(error) {
  return error?.status === 401 && error?.code === 'unauthorized';
}

/** A refusal for want of a key, said for a person at this page rather than for a program. */
function explained(error) {
  if (isUnauthorized(error)) {
    error.message = 'This server needs an API key: enter it with the key button at the top.';
  }
  return error;
}

function stored() {
  try {
    return sessionStorage.getItem(STORAGE) ?? '';
  } catch {
    return ''; // storage turned off: the key lives until the page is left
  }
}

export class ApiKey {
  #key = stored();
  #asking = null; // the open dialog's answer: true once a key was saved, false if cancelled
  #settle = null;
  #opener = null;
  #manage = false; // opened from the header, not by a refused call

  /**
   * @param {{dialog: HTMLDialogElement, form: HTMLFormElement, input: HTMLInputElement,
   *          heading: HTMLElement, intro: HTMLElement, error: HTMLElement,
   *          forget: HTMLButtonElement, cancel: HTMLButtonElement, button: HTMLButtonElement,
   *          changed: () => void, forgotten: () => void}}
   *   nodes  `changed` runs after a key is saved from the header's button (nothing failed that
   *   waits for it), `forgotten` after the key is forgotten.
   */
  constructor({ dialog, form, input, heading, intro, error, forget, cancel, button, ...hooks }) {
    Object.assign(this, { dialog, input, heading, intro, error, forgetButton: forget, button });
    this.hooks = hooks;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#save();
    });
    cancel.addEventListener('click', () => this.#close(false));
    forget.addEventListener('click', () => this.forget());
    // Escape (or the browser's own close request) closes it: nothing was saved.
    dialog.addEventListener('close', () => this.#close(false));
    button.addEventListener('click', () => this.#open({ manage: true }));
    button.hidden = !this.#key;
  }

  /** The options that carry the key to a streamchat.js function. */
  get options() {
    return this.#key ? { apiKey: this.#key } : {};
  }

  /** `call(options)`, made again with a key while the server refuses it for want of one. */
  async authorized(call) {
    for (;;) {
      const sent = this.#key;
      try {
        return await call(this.options);
      } catch (error) {
        if (!(await this.#retry(error, sent))) throw explained(error);
      }
    }
  }

  /**
   * The events of `open(options)` (a stream), opened again with a key when the server refused
   * it: a refusal comes before the first event, so nothing is shown twice.
   */
  async *authorizedStream(open) {
    for (;;) {
      const sent = this.#key;
      let started = false;
      try {
        for await (const event of open(this.options)) {
          started = true;
          yield event;
        }
        return;
      } catch (error) {
        if (started || !(await this.#retry(error, sent))) throw explained(error);
      }
    }
  }

  /** After a failed call: whether to make it again (with the key a person has just given). */
  async #retry(error, sent) {
    if (!isUnauthorized(error)) return false;
    if (this.#key !== sent) return true; // another call's dialog brought a key meanwhile
    if (sent) this.#store(''); // refused: drop it, so the page stops sending it
    return this.#open({ wrong: Boolean(sent) });
  }

  /** Forgets the key in this tab; the dialog stays open to take another. */
  forget() {
    const had = Boolean(this.#key);
    this.#store('');
    this.input.value = '';
    this.error.hidden = true;
    this.forgetButton.hidden = true;
    this.heading.textContent = 'API key';
    this.intro.textContent = had
      ? 'The key is forgotten in this tab. Enter one to go on.'
      : 'No key is kept in this tab.';
    this.input.focus();
    if (had) this.hooks.forgotten();
  }

  #store(key) {
    this.#key = key;
    try {
      if (key) sessionStorage.setItem(STORAGE, key);
      else sessionStorage.removeItem(STORAGE);
    } catch {
      // storage turned off: kept in memory only
    }
  }

  /** Shows the dialog (once for every call waiting on it); resolves to whether a key was saved. */
  #open({ wrong = false, manage = false } = {}) {
    if (wrong) this.#say('That key was not accepted. Check it and enter it again.');
    if (this.#asking) return this.#asking;
    this.button.hidden = false;
    this.#opener = document.activeElement;
    this.heading.textContent = manage ? 'API key' : 'This server needs an API key';
    this.intro.textContent = manage
      ? this.#key
        ? 'This tab sends a key with every request. Enter another to replace it, or forget it.'
        : 'No key is kept in this tab. Enter one to send it with every request.'
      : 'Enter the key you were given to use this chat.';
    this.forgetButton.hidden = !this.#key;
    if (!wrong) this.error.hidden = true;
    this.input.value = '';
    this.#asking = new Promise((resolve) => {
      this.#settle = resolve;
    });
    this.#manage = manage;
    this.dialog.showModal();
    this.input.focus();
    return this.#asking;
  }

  #say(message) {
    this.error.textContent = message;
    this.error.hidden = false;
  }

  #save() {
    const key = this.input.value.trim();
    if (!key) {
      this.#say('Enter a key, or cancel.');
      this.input.focus();
      return;
    }
    this.#store(key);
    const manage = this.#manage;
    this.#close(true);
    if (manage) this.hooks.changed();
  }

  #close(saved) {
    if (!this.#asking) return;
    this.dialog.close();
    this.input.value = '';
    const settle = this.#settle;
    this.#asking = null;
    this.#settle = null;
    if (this.#opener?.isConnected) this.#opener.focus({ preventScroll: true });
    this.#opener = null;
    settle(saved);
  }
}
