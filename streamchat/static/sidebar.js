/**
 * The conversations sidebar: the server's conversations, most recently used first (title and how
 * long ago), a page at a time with "Load more", the one on view marked `aria-current`. Each is a
 * link to `#<conversationId>`, so choosing one is ordinary navigation (the page opens whatever
 * the address names, app.js) and a conversation opens in a new tab too.
 *
 * On a narrow screen the sidebar is a drawer over the page, opened from the header's button and
 * closed by choosing a conversation, its close button, the backdrop or Escape; while it is open
 * the rest of the page is inert, and closing it gives focus back to the button.
 *
 * The list comes from `load({limit, before})`: streamchat.js's `listConversations` with the
 * page's API key (app.js).
 */
import { h } from './dom.js';

const PAGE = 20;
const MOST = 100; // the list route's largest page
/** Where the sidebar is a drawer rather than a column (style.css agrees). */
const DRAWER = window.matchMedia('(max-width: 960px)');

export class ConversationList {
  #items = []; // the conversations shown, newest first
  #next = null; // the cursor of the next page, or null
  #current = '';
  #dirty = false;
  #busy = null;

  /**
   * @param {{nav: HTMLElement, list: HTMLElement, more: HTMLButtonElement, empty: HTMLElement,
   *          toggle: HTMLButtonElement, close: HTMLButtonElement, backdrop: HTMLElement,
   *          inert: HTMLElement[], announce: (message: string) => void,
   *          load: (page: {limit?: number, before?: string}) => Promise<any>}} nodes
   */
  constructor({ nav, list, more, empty, toggle, close, backdrop, inert, announce, load }) {
    Object.assign(this, { nav, list, more, empty, toggle, inert, announce, load });
    this.emptyNote = empty.textContent;
    toggle.addEventListener('click', () => this.openDrawer());
    close.addEventListener('click', () => this.closeDrawer());
    backdrop.addEventListener('click', () => this.closeDrawer());
    more.addEventListener('click', () => this.loadMore());
    list.addEventListener('click', (event) => {
      if (event.target.closest('a') && this.isDrawerOpen) this.closeDrawer();
    });
    // Capture: Escape closes the drawer before anything under it sees the key.
    document.addEventListener(
      'keydown',
      (event) => {
        if (event.key !== 'Escape' || !this.isDrawerOpen) return;
        event.preventDefault();
        event.stopPropagation();
        this.closeDrawer();
      },
      true,
    );
    DRAWER.addEventListener('change', () => this.closeDrawer({ focus: false }));
  }

  get isDrawerOpen() {
    return document.body.classList.contains('sidebar-open');
  }

  openDrawer() {
    document.body.classList.add('sidebar-open');
    this.toggle.setAttribute('aria-expanded', 'true');
    for (const node of this.inert) node.inert = true;
    const current = this.list.querySelector('[aria-current]');
    (current ?? this.list.querySelector('a') ?? this.nav.querySelector('button')).focus();
  }

  closeDrawer({ focus = true } = {}) {
    if (!this.isDrawerOpen) return;
    document.body.classList.remove('sidebar-open');
    this.toggle.setAttribute('aria-expanded', 'false');
    for (const node of this.inert) node.inert = false;
    if (focus && DRAWER.matches) this.toggle.focus();
  }

  /** Marks the conversation on view. */
  select(conversationId) {
    this.#current = conversationId;
    for (const link of this.list.querySelectorAll('a')) {
      if (link.dataset.id === conversationId) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
  }

  /** Reads the list again (as many as are shown); calls made meanwhile share one more read. */
  refresh() {
    this.#dirty = true;
    this.#busy ??= (async () => {
      try {
        while (this.#dirty) {
          this.#dirty = false;
          const limit = Math.min(Math.max(this.#items.length, PAGE), MOST);
          const { conversations, next } = await this.load({ limit });
          this.#items = conversations;
          this.#next = next;
          this.#render();
        }
      } catch (error) {
        this.announce(`Could not list the conversations: ${error.message}`);
      } finally {
        this.#busy = null;
      }
    })();
    return this.#busy;
  }

  async loadMore() {
    if (!this.#next) return;
    this.more.disabled = true;
    try {
      const page = await this.load({ limit: PAGE, before: this.#next });
      const known = new Set(this.#items.map((item) => item.conversationId));
      const added = page.conversations.filter((item) => !known.has(item.conversationId));
      this.#items.push(...added);
      this.#next = page.next;
      this.#render();
      // The button goes away after the last page: focus the first conversation it brought.
      if (!this.#next && added.length) this.#link(added[0].conversationId)?.focus();
    } catch (error) {
      this.announce(`Could not list more conversations: ${error.message}`);
    } finally {
      this.more.disabled = false;
    }
  }

  /** Shows no conversations, and `note` instead (the key that lists them was forgotten). */
  clear(note) {
    this.#dirty = false;
    this.#items = [];
    this.#next = null;
    this.#render(note);
  }

  #link(conversationId) {
    return [...this.list.querySelectorAll('a')].find((a) => a.dataset.id === conversationId);
  }

  #render(note = this.emptyNote) {
    const focused = this.list.contains(document.activeElement)
      ? document.activeElement.dataset.id
      : null;
    const now = Date.now();
    this.list.replaceChildren(...this.#items.map((item) => this.#item(item, now)));
    this.empty.textContent = note;
    this.empty.hidden = this.#items.length > 0;
    this.more.hidden = !this.#next;
    if (focused) this.#link(focused)?.focus();
  }

  #item({ conversationId, title, updatedAt, runningTurn }, now) {
    const when = new Date(updatedAt);
    return h(
      'li',
      {},
      h(
        'a',
        {
          href: `#${encodeURIComponent(conversationId)}`,
          class: 'conversation',
          'data-id': conversationId,
          'aria-current': conversationId === this.#current ? 'page' : null,
        },
        h('span', { class: 'conversation-title' }, title || 'New conversation'),
        h(
          'span',
          { class: 'conversation-meta' },
          runningTurn
            ? h('span', { class: 'answering' }, h('span', { class: 'pulse' }), 'Answering · ')
            : null,
          h(
            'time',
            { datetime: updatedAt, title: when.toLocaleString() },
            relativeTime(when.getTime(), now),
          ),
        ),
      ),
    );
  }
}

const UNITS = [
  ['minute', 60, 60],
  ['hour', 3600, 24],
  ['day', 86400, 7],
];
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

/** "just now", "5 minutes ago", "yesterday", then the date. */
export function relativeTime(then, now = Date.now()) {
  const seconds = Math.max(0, (now - then) / 1000);
  if (seconds < 60) return 'just now';
  for (const [unit, size, below] of UNITS) {
    const count = Math.floor(seconds / size);
    if (count < below) return relative.format(-count, unit);
  }
  const date = new Date(then);
  const sameYear = date.getFullYear() === new Date(now).getFullYear();
  return date.toLocaleDateString(undefined, {
    month: 'short',
    day: 'numeric',
    year: sameYear ? undefined : 'numeric',
  });
}
