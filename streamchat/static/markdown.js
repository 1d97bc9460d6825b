/**
 * A small Markdown subset for chat replies: paragraphs, line breaks, bullet and numbered lists,
 * headings, rules, fenced code blocks, inline `code` and **bold**. It returns DOM nodes built with
 * textContent only: markup in the model's text (`<b>`, `<img onerror=...>`) stays literal text.
 * It is re-run on the whole text as a reply streams, so half-finished syntax simply shows as
 * typed until its closing mark arrives.
 */
import { h } from './dom.js';

const BULLET = /^\s{0,3}[-*+•]\s+(.*)$/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*/g;

/** @param {string} text @returns {DocumentFragment} */
export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const lines = text.split(/\r\n|\r|\n/);
  let paragraph = [];
  let list = null; // {node, ordered}
  let item = null;

  const endParagraph = () => {
    if (paragraph.length > 0) out.append(h('p', {}, inlineLines(paragraph)));
    paragraph = [];
  };
  const endBlock = () => {
    endParagraph();
    list = null;
    item = null;
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      endBlock();
      const closing = new RegExp(`^\\s{0,3}\\${fence[1][0]}{${fence[1].length},}\\s*$`);
      const body = [];
      while (++i < lines.length && !closing.test(lines[i])) body.push(lines[i]);
      out.append(codeBlock(body.join('\n'), fence[2]));
      continue;
    }
    if (!line.trim()) {
      // A blank line ends a paragraph; a list goes on if its next item follows.
      endParagraph();
      item = null;
      continue;
    }
    const bullet = BULLET.exec(line);
    const numbered = bullet ? null : NUMBERED.exec(line);
    if ((bullet || numbered) && !RULE.test(line)) {
      endParagraph();
      const ordered = Boolean(numbered);
      if (!list || list.ordered !== ordered) {
        const start = ordered && numbered[1] !== '1' ? Number(numbered[1]) : null;
        list = { ordered, node: h(ordered ? 'ol' : 'ul', { start }) };
        out.append(list.node);
      }
      item = h('li', {}, inline(bullet ? bullet[1] : numbered[2]));
      list.node.append(item);
      continue;
    }
    if (item && /^\s/.test(line)) {
      item.append(h('br'), ...inline(line.trim()));
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading || RULE.test(line)) {
      endBlock();
      const level = heading ? Math.min(heading[1].length + 2, 6) : 0;
      out.append(heading ? h(`h${level}`, {}, inline(heading[2])) : h('hr'));
      continue;
    }
    if (list) endBlock();
    paragraph.push(line);
  }
  endParagraph();
  return out;
}

function codeBlock(code, language) {
  return h(
    'div',
    { class: 'md-code' },
    language ? h('div', { class: 'md-code-lang' }, language) : null,
    h('pre', {}, h('code', {}, code)),
  );
}

function inlineLines(lines) {
  return lines.flatMap((line, index) => (index === 0 ? inline(line) : [h('br'), ...inline(line)]));
}

/** Inline `code` and **bold**; everything else is text. */
function inline(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) nodes.push(text.slice(last, match.index));
    if (match[1]) {
      const code = match[2];
      const trimmed = /^ .*[^ ].* $/.test(code) ? code.slice(1, -1) : code;
      nodes.push(h('code', {}, trimmed));
    } else {
      nodes.push(h('strong', {}, inline(match[3])));
    }
    last = match.index + match[0].length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}
