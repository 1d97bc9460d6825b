/**
 * Markdown for chat replies: marked (GitHub-flavoured: tables, task lists, strikethrough) made
 * into DOM through DOMPurify. Raw HTML in the model's text shows as text, not markup (a model that
 * writes `<b>` or `<img onerror=...>` in prose means the characters); links open in a new tab with
 * rel="noopener noreferrer"; images become links, since the page loads nothing from elsewhere;
 * code blocks are highlighted and carry a copy button.
 *
 * `MarkdownView` renders a reply while it streams: blocks that are complete (another block has
 * begun after them) are rendered once and kept, so each frame renders only the open last block.
 */
import DOMPurify from './vendor/dompurify/purify.es.js';
import { Marked } from './vendor/marked/marked.esm.js';
import { copyButton, h } from './dom.js';
import { highlightHtml, languageName } from './highlight.js';

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  breaks: true, // a line break the model writes is a line break on the page
  renderer: {
    html({ text, block }) {
      return block ? `<p>${escapeHtml(text.trim())}</p>` : escapeHtml(text);
    },
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
    code({ text, lang }) {
      const language = (lang ?? '').trim().split(/\s/)[0];
      const html = highlightHtml(text, language) ?? escapeHtml(text);
      return `<pre data-language="${escapeHtml(language)}"><code class="hljs">${html}</code></pre>`;
    },
  },
});

// An instance of our own, so these rules apply to this page's Markdown and nothing else.
const purify = DOMPurify(window);
purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
  if (node.tagName === 'INPUT') node.setAttribute('disabled', ''); // task-list boxes only show
});
const SANITIZE = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ['style', 'form', 'img', 'svg', 'math', 'button', 'textarea', 'select'],
  FORBID_ATTR: ['style', 'id', 'name'],
};

/** Sanitised DOM for marked's tokens, with our code-block and table chrome around them. */
function toDom(tokens) {
  const fragment = purify.sanitize(marked.parser(tokens), SANITIZE);
  for (const pre of fragment.querySelectorAll('pre')) {
    const code = pre.querySelector('code') ?? pre;
    const language = languageName(pre.dataset.language) || pre.dataset.language || '';
    const box = h('div', { class: 'md-code' });
    pre.replaceWith(box);
    const head = h(
      'div',
      { class: 'md-code-head' },
      h('span', { class: 'md-code-lang' }, language),
      copyButton(() => code.textContent, { label: 'Copy code', visible: true }),
    );
    box.append(head, pre);
  }
  for (const table of fragment.querySelectorAll('table')) {
    const wrapper = h('div', { class: 'md-table' });
    table.replaceWith(wrapper);
    wrapper.append(table);
  }
  return fragment;
}

const length = (tokens) => tokens.reduce((sum, token) => sum + token.raw.length, 0);

/** The Markdown of one text segment of a reply, rendered into `node` as it grows. */
export class MarkdownView {
  #source = '';
  #settled = 0; // how much of the source is rendered for good
  #open = []; // the nodes of the open last block, rendered again each time

  constructor(node) {
    this.node = node;
  }

  get text() {
    return this.#source;
  }

  append(delta) {
    this.#source += delta;
  }

  /** Renders what is new; `final` when no more text will come, so the last block is done too. */
  render(final = false) {
    const tail = this.#source.slice(this.#settled).replace(/\r\n?/g, '\n');
    const tokens = marked.lexer(tail);
    let cut = tokens.length;
    if (!final) {
      while (cut > 0 && tokens[cut - 1].type === 'space') cut--;
      cut = Math.max(cut - 1, 0);
      // Offsets only add up when the lexer kept every character (it does for "\n" text).
      if (length(tokens) !== tail.length || tail.length !== this.#source.length - this.#settled) {
        cut = 0;
      }
    }
    for (const node of this.#open) node.remove();
    if (cut > 0) {
      const done = tokens.slice(0, cut);
      this.node.append(toDom(done));
      this.#settled += length(done);
    }
    const open = toDom(tokens.slice(cut));
    this.#open = [...open.childNodes];
    this.node.append(open);
  }
}

/** `code` highlighted for `language` (sanitised DOM), or as plain text when not known. */
export function highlighted(code, language) {
  const html = highlightHtml(code, language);
  if (html === null) return document.createTextNode(code);
  return purify.sanitize(html, { RETURN_DOM_FRAGMENT: true, ALLOWED_TAGS: ['span'] });
}
