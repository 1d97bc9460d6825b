/**
 * `h(tag, attributes, ...children)`: the one way this page builds DOM by hand. Children that are
 * strings become Text nodes, so text from the model is never parsed as HTML here (Markdown goes
 * through markdown.js, which sanitises what it makes). Also the page's icons and copy buttons.
 */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'class') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.flat(Infinity).filter((child) => child !== null && child !== undefined));
  return node;
}

/** An SVG icon from the sprite in index.html (markup of our own, never model text). */
export function icon(name) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
  use.setAttribute('href', `#icon-${name}`);
  svg.append(use);
  return svg;
}

export async function copyText(text) {
  if (navigator.clipboard?.writeText) return navigator.clipboard.writeText(text);
  // Plain http on a LAN address is not a secure context: no Clipboard API there.
  const area = h('textarea', { class: 'visually-hidden', readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  const ok = document.execCommand('copy');
  area.remove();
  if (!ok) throw new Error('copy failed');
  return undefined;
}

/**
 * A button that copies `text()` and says so for a moment. `label` names what it copies (its
 * accessible name, "Copy code"); with `visible` the word "Copy" shows beside the icon too.
 */
export function copyButton(text, { label = 'Copy', visible = false, className = '' } = {}) {
  const word = visible ? h('span', {}, 'Copy') : null;
  const button = h(
    'button',
    {
      type: 'button',
      class: `btn btn-ghost btn-small ${visible ? '' : 'btn-square'} ${className}`.trim(),
      'aria-label': label,
      title: label,
    },
    icon('copy'),
    word,
  );
  let timer = 0;
  const say = (what) => {
    if (word) word.textContent = what;
    button.title = what === 'Copy' ? label : what;
    button.classList.toggle('is-copied', what === 'Copied');
  };
  button.addEventListener('click', async () => {
    try {
      await copyText(text());
      say('Copied');
    } catch {
      say('Copy failed');
    }
    clearTimeout(timer);
    timer = setTimeout(() => say('Copy'), 1600);
  });
  return button;
}

/** A small icon button with a name for assistive technology and a tooltip. */
export function iconButton(name, label, onclick, className = '') {
  return h(
    'button',
    {
      type: 'button',
      class: `btn btn-ghost btn-small btn-square ${className}`.trim(),
      'aria-label': label,
      title: label,
      onclick,
    },
    icon(name),
  );
}
