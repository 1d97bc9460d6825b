/**
 * The artifacts panel. Artifacts are grouped by title: when one with a known title arrives again,
 * its card shows the new version and a selector ("v1", "v2", ...) keeps the older ones reachable.
 * Content streams in as `artifact_content` deltas (plain text while it is written) and is settled,
 * and highlighted, by `artifact_completed`.
 *
 * Beside the chat on a wide screen, the panel opens by itself when an artifact starts. On a phone
 * it is a sheet over the chat that opens only from an artifact's chip, so a new artifact never
 * pushes the reply out of view; the close button, the backdrop and Escape close it.
 */
import { copyButton, h, icon } from './dom.js';
import { highlighted } from './markdown.js';

const EXTENSIONS = {
  python: 'py', javascript: 'js', typescript: 'ts', html: 'html', css: 'css', json: 'json',
  bash: 'sh', shell: 'sh', sh: 'sh', rust: 'rs', go: 'go', java: 'java', c: 'c', cpp: 'cpp',
  csharp: 'cs', ruby: 'rb', sql: 'sql', yaml: 'yaml', toml: 'toml', markdown: 'md',
};

/** Where the panel is a sheet over the chat rather than a column beside it (style.css agrees). */
const SHEET = window.matchMedia('(max-width: 760px)');

export class ArtifactPanel {
  #groups = new Map(); // title -> {card, versions, shown}
  #versions = new Map(); // artifactId -> version
  #serial = 0;
  #opener = null; // what had focus when the panel was opened from a chip

  /**
   * @param {{panel: HTMLElement, list: HTMLElement, count: HTMLElement, close: HTMLElement,
   *          backdrop: HTMLElement}} nodes
   */
  constructor({ panel, list, count, close, backdrop }) {
    this.panel = panel;
    this.list = list;
    this.count = count;
    close.addEventListener('click', () => this.close());
    backdrop.addEventListener('click', () => this.close());
    document.addEventListener('keydown', (event) => {
      const inside = this.panel.contains(document.activeElement);
      if (event.key !== 'Escape' || event.defaultPrevented || !this.isOpen) return;
      if (!inside && !SHEET.matches) return;
      event.preventDefault();
      this.close();
    });
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  open() {
    this.panel.hidden = false;
    document.body.classList.add('artifacts-open');
  }

  /** Closes the panel (the sheet, on a phone) and gives focus back to the chip that opened it. */
  close() {
    if (!this.isOpen) return;
    const focused = this.panel.contains(document.activeElement);
    this.panel.hidden = true;
    document.body.classList.remove('artifacts-open');
    if (focused || SHEET.matches) this.#opener?.focus({ preventScroll: true });
    this.#opener = null;
  }

  /** `artifact_started`: a new artifact, or a new version of one with the same title. */
  start({ artifactId, artifactType, title, language }) {
    const name = title || artifactId || 'Untitled';
    let group = this.#groups.get(name);
    if (!group) {
      group = this.#newGroup(name);
      this.#groups.set(name, group);
      this.list.append(group.card.node);
    }
    const version = {
      id: artifactId,
      title: name,
      type: artifactType || 'code',
      language: language || '',
      content: '',
      done: false,
      truncated: false,
      number: group.versions.length + 1,
      group,
    };
    group.versions.push(version);
    this.#versions.set(artifactId, version);
    group.card.select.append(h('option', { value: String(version.number) }, `v${version.number}`));
    this.#show(version);
    if (!SHEET.matches) this.open();
    this.#updateCount();
    if (this.isOpen) group.card.node.scrollIntoView({ block: 'nearest' });
    return version;
  }

  /** `artifact_content`: one more piece of the body. */
  append({ artifactId, contentDelta }) {
    const version = this.#versions.get(artifactId);
    if (!version || !contentDelta) return version;
    version.content += contentDelta;
    if (version.group.shown === version) {
      version.group.card.code.append(contentDelta);
      if (contentDelta.includes('\n')) numberLines(version.group.card, version.content);
    }
    return version;
  }

  /** `artifact_completed`: the whole body, which settles whatever the deltas said. */
  complete(event) {
    const version = this.#versions.get(event.artifactId) ?? this.start(event);
    version.content = event.content ?? version.content;
    version.type = event.artifactType || version.type;
    version.language = event.language || version.language;
    version.done = true;
    version.truncated = Boolean(event.truncated);
    if (version.group.shown === version) this.#show(version);
    return version;
  }

  /** Opens the panel on this version and moves focus there (the chat's artifact chips). */
  reveal(version) {
    this.#opener = document.activeElement;
    this.open();
    this.#show(version);
    const { node } = version.group.card;
    node.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    node.focus({ preventScroll: true });
  }

  clear() {
    this.#groups.clear();
    this.#versions.clear();
    this.list.replaceChildren();
    this.close();
    this.#updateCount();
  }

  #show(version) {
    const { group } = version;
    const { card } = group;
    group.shown = version;
    card.node.classList.toggle('is-writing', !version.done);
    card.meta.replaceChildren(
      h('span', { class: 'tag' }, version.type),
      version.language ? h('span', { class: 'tag' }, version.language) : null,
    );
    card.status.textContent = version.done
      ? version.truncated ? 'Truncated' : ''
      : 'Writing…';
    card.status.hidden = !card.status.textContent;
    card.select.value = String(version.number);
    card.select.parentElement.hidden = group.versions.length < 2;
    card.code.replaceChildren(
      version.done ? highlighted(version.content, version.language) : version.content,
    );
    numberLines(card, version.content);
  }

  #newGroup(title) {
    const serial = ++this.#serial;
    const group = { versions: [], shown: null, card: null };
    const headingId = `artifact-${serial}-title`;
    const selectId = `artifact-${serial}-version`;
    const current = () => group.shown;
    const select = h('select', {
      id: selectId,
      onchange: () => this.#show(group.versions[Number(select.value) - 1]),
    });
    const code = h('code', { class: 'hljs' });
    const gutter = h('span', { class: 'gutter', 'aria-hidden': 'true' });
    const copy = copyButton(() => current().content, { label: `Copy ${title}`, visible: true });
    const download = h(
      'button',
      { type: 'button', class: 'btn btn-ghost btn-small', 'aria-label': `Download ${title}` },
      icon('download'),
      h('span', {}, 'Download'),
    );
    download.addEventListener('click', () => saveFile(current()));
    const meta = h('div', { class: 'artifact-meta' });
    const status = h('span', { class: 'artifact-status', hidden: true });
    const node = h(
      'article',
      { class: 'artifact', tabindex: '-1', 'aria-labelledby': headingId },
      h(
        'header',
        { class: 'artifact-head' },
        h(
          'div',
          { class: 'artifact-name' },
          h('span', { class: 'artifact-icon' }, icon('file')),
          h('h3', { id: headingId }, title),
          meta,
          status,
        ),
        h(
          'div',
          { class: 'artifact-actions' },
          h(
            'span',
            { class: 'version-picker', hidden: true },
            h('label', { for: selectId, class: 'visually-hidden' }, `Version of ${title}`),
            select,
          ),
          copy,
          download,
        ),
      ),
      h(
        'pre',
        { class: 'artifact-code', tabindex: '0', 'aria-label': `${title} content` },
        gutter,
        code,
      ),
    );
    group.card = { node, select, code, gutter, lines: 0, meta, status };
    return group;
  }

  #updateCount() {
    const count = this.#groups.size;
    this.count.textContent = count ? String(count) : '';
  }
}

/** Line numbers in a gutter beside the code (not part of it: copying skips them). */
function numberLines(card, content) {
  const lines = content.split('\n').length;
  if (lines === card.lines) return;
  card.lines = lines;
  card.gutter.textContent = Array.from({ length: lines }, (_, i) => i + 1).join('\n');
}

/** The title as a safe file name, with an extension from the language when it has none. */
export function fileName(version) {
  let name = version.title.replace(/[\\/:*?"<>|\u0000-\u001f]+/g, '_').trim() || 'artifact';
  const extension = EXTENSIONS[version.language.toLowerCase()];
  if (!name.includes('.')) name += `.${extension ?? 'txt'}`;
  return name;
}

function saveFile(version) {
  const blob = new Blob([version.content], { type: 'text/plain;charset=utf-8' });
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: fileName(version), hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
