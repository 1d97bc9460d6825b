/**
 * A stored conversation (`GET /api/conversation/{id}`) drawn the way the page draws a reply live.
 * The history is OpenAI-shaped messages: each user message opens a turn, whose assistant texts,
 * `tool_calls` and `tool` results become the reply's text, tool cards and artifact chips. The
 * conversation's artifacts (the `artifact_completed` payloads the server kept) fill the panel;
 * in the stored text an artifact is still its `<artifact ...>` markup (or, from the embedded
 * model, a Markdown code fence), which becomes a chip for the artifact it made, found by content.
 */

/** The stored turns: each user message with the assistant and tool messages after it. */
export function turnsOf(messages) {
  const turns = [];
  for (const message of messages ?? []) {
    if (message.role === 'user') turns.push({ user: textOf(message.content), after: [] });
    else if (message.role !== 'system' && turns.length) turns.at(-1).after.push(message);
  }
  return turns;
}

function textOf(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((part) => part?.text ?? '').join('');
  return '';
}

/** Draws one stored turn's messages into `reply` (an AssistantReply), then finishes it. */
export function replay(reply, messages, artifacts) {
  const names = new Map(); // tool call id -> tool name, for the results
  for (const message of messages) {
    if (message.role === 'assistant') {
      for (const part of artifacts.split(textOf(message.content))) {
        if (typeof part === 'string') reply.addText(part);
        else reply.addChip(part);
      }
      for (const call of message.tool_calls ?? []) {
        const toolName = call.function?.name ?? 'tool';
        names.set(call.id, toolName);
        const args = call.function?.arguments ?? '';
        reply.handle({ type: 'tool_executing', toolName, toolId: call.id, arguments: args });
      }
    } else if (message.role === 'tool') {
      const toolName = names.get(message.tool_call_id) ?? 'tool';
      const result = textOf(message.content);
      // The history keeps what the model was told; a failed call's sentence reads the same.
      reply.handle({ type: 'tool_completed', toolName, toolId: message.tool_call_id, result });
    }
  }
  reply.finish();
}

const OPEN_TAG = /<artifact(?=[\s/>])((?:[^>"']|"[^"]*"|'[^']*')*)>/gi;
const CLOSE_TAG = /<\/artifact\s*>/gi;
const ATTRIBUTE = /([^\s=/"'<>]+)\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)/g;
const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})(.*)$/;

/** The conversation's stored artifacts, in the panel, matched to the places in the text. */
export class StoredArtifacts {
  #serial = 0;

  /** @param {Record<string, any>[]} records @param {import('./artifacts.js').ArtifactPanel} panel */
  constructor(records, panel) {
    this.panel = panel;
    this.records = (records ?? []).map((record) => ({ record, version: this.#add(record) }));
  }

  #add(record) {
    this.panel.start(record);
    return this.panel.complete(record);
  }

  /** The first artifact not yet placed that `matches`, now placed; or null. */
  #take(matches) {
    const index = this.records.findIndex((entry) => !entry.placed && matches(entry.record));
    if (index === -1) return null;
    this.records[index].placed = true;
    return this.records[index].version;
  }

  /** `text` cut into prose (strings) and the artifact versions its markup and fences made. */
  split(text) {
    const parts = [];
    for (const part of this.#splitMarkup(text)) {
      if (typeof part === 'string') parts.push(...this.#splitFences(part));
      else parts.push(part);
    }
    return parts.filter((part) => part !== '');
  }

  #splitMarkup(text) {
    const parts = [];
    let position = 0;
    for (;;) {
      OPEN_TAG.lastIndex = position;
      const open = OPEN_TAG.exec(text);
      if (!open) break;
      let start = open.index + open[0].length;
      if (text.startsWith('\r\n', start)) start += 2;
      else if (text[start] === '\n') start += 1;
      CLOSE_TAG.lastIndex = start;
      const close = CLOSE_TAG.exec(text);
      let body = text.slice(start, close ? close.index : text.length);
      if (close) body = body.replace(/\r?\n$/, '');
      const attributes = {};
      for (const [, name, raw] of open[1].matchAll(ATTRIBUTE)) {
        attributes[name.toLowerCase()] = raw.replace(/^(["'])([\s\S]*)\1$/, '$2');
      }
      parts.push(text.slice(position, open.index));
      parts.push(
        this.#take((record) => record.content === body) ??
          this.#take((record) => Boolean(attributes.title) && record.title === attributes.title) ??
          this.#fromMarkup(attributes, body, !close),
      );
      position = close ? close.index + close[0].length : text.length;
    }
    parts.push(text.slice(position));
    return parts;
  }

  /** Markup the server kept no artifact for (a reply stopped inside it): drawn from the text. */
  #fromMarkup({ id, type, title, language }, content, truncated) {
    const record = {
      artifactId: `stored-${++this.#serial}-${id ?? 'artifact'}`,
      artifactType: type || 'code',
      title: title || id || 'Untitled',
      language,
      content,
      truncated,
    };
    return this.#add(record);
  }

  /** Code fences whose body is a stored artifact become its chip; other fences stay code. */
  #splitFences(text) {
    if (!this.records.some((entry) => !entry.placed)) return [text];
    const lines = text.split('\n');
    const parts = [];
    let prose = [];
    for (let i = 0; i < lines.length; i++) {
      const opener = FENCE_OPEN.exec(lines[i]);
      if (!opener || (opener[1][0] === '`' && opener[2].includes('`'))) {
        prose.push(lines[i]);
        continue;
      }
      const fence = opener[1];
      const closer = new RegExp(`^ {0,3}${fence[0] === '`' ? '`' : '~'}{${fence.length},}[ \\t]*$`);
      let end = i + 1;
      while (end < lines.length && !closer.test(lines[end])) end++;
      const body = lines.slice(i + 1, end).join('\n');
      const version = this.#take((record) => record.content === body);
      if (!version) {
        prose.push(lines[i]);
        continue;
      }
      parts.push(prose.join('\n') + (prose.length ? '\n' : ''), version);
      prose = [''];
      i = end; // the closing line (or the end of the text)
    }
    parts.push(prose.join('\n'));
    return parts;
  }
}
