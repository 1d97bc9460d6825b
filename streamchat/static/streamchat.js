/**
 * streamchat.js: a dependency-free client for the streamchat API (an ES module).
 *
 *   import { streamChat, clearConversation } from '/static/streamchat.js';
 *
 *   const controller = new AbortController(); // controller.abort() stops the reply
 *   const turn = { message: 'What is 25 + 17?', conversationId: 'c1', signal: controller.signal };
 *   for await (const event of streamChat(turn)) {
 *     if (event.type === 'text') output.append(event.content);
 *   }
 *   await clearConversation('c1');
 *
 * `streamChat` POSTs one turn to `/api/stream` and yields each Server-Sent Event's JSON data as an
 * object, ending after the terminal `completion` or `error` event. Every event has `type`,
 * `chunkIndex` (0, 1, 2, ... across the turn) and `elapsedMs`; beyond those:
 *
 *   text                         content (the text delta)
 *   tool_executing               toolName, toolId, arguments (a JSON string)
 *   tool_completed / tool_error  the same, plus result or error, and executionMs
 *   artifact_started             artifactId, artifactType, title, language
 *   artifact_content             artifactId, contentDelta
 *   artifact_completed           artifactId, artifactType, title, language, content
 *   completion                   finishReason, model, conversationId, usage
 *   error                        message (for a person), code (for a program)
 *
 * With `regenerate: true` the server first forgets the conversation's last user message and
 * everything after it, so the turn replaces the last one (regenerate, edit and resend, retry).
 * Frames may be split anywhere by the network, even inside a UTF-8 character. A refused request
 * (not 200) or a stream that ends without a terminal event throws a `StreamChatError` carrying
 * the server's `message`, `code` and HTTP `status`. `controller.abort()` rejects with the usual
 * `AbortError` and closes the connection, which stops the model upstream.
 *
 * `SSEDecoder` is the sans-IO part: `feed(text)` returns the complete events so far, `flush()`
 * the last one when the stream ends without a blank line.
 */

/** An API failure a person can read: `message` from the server, `code` for a program. */
export class StreamChatError extends Error {
  /** @param {string} message @param {{code?: string, status?: number}} [details] */
  constructor(message, { code = 'error', status = 0 } = {}) {
    super(message);
    this.name = 'StreamChatError';
    this.code = code;
    this.status = status;
  }
}

/**
 * Decodes `text/event-stream` text (already UTF-8 decoded) into `{event, data, id}` records,
 * following the WHATWG rules: CRLF, CR or LF line ends, `:` comments, multi-line `data:`.
 */
export class SSEDecoder {
  #partial = ''; // the unfinished last line
  #pendingCR = false; // a CR ended the last feed: a LF may follow
  #data = [];
  #event = '';
  #id = '';

  /** @param {string} text @returns {{event: string, data: string, id: string}[]} */
  feed(text) {
    if (text === '') return [];
    if (this.#pendingCR && text.startsWith('\n')) text = text.slice(1);
    this.#pendingCR = text.endsWith('\r');
    const lines = (this.#partial + text).split(/\r\n|\r|\n/);
    this.#partial = lines.pop();
    const events = [];
    for (const line of lines) {
      const event = this.#line(line);
      if (event) events.push(event);
    }
    return events;
  }

  /** What is left when the stream ends: what it said counts even without a final blank line. */
  flush() {
    const events = [this.#line(this.#partial), this.#dispatch()].filter(Boolean);
    this.#partial = '';
    this.#pendingCR = false;
    return events;
  }

  #line(line) {
    if (line === '') return this.#dispatch();
    if (line.startsWith(':')) return null; // a comment such as `: ping`
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'event') this.#event = value;
    else if (field === 'id' && !value.includes('\0')) this.#id = value;
    return null;
  }

  #dispatch() {
    const event =
      this.#data.length > 0
        ? { event: this.#event || 'message', data: this.#data.join('\n'), id: this.#id }
        : null;
    this.#data = [];
    this.#event = '';
    return event;
  }
}

/**
 * Yields the parsed events of a `text/event-stream` body.
 * @param {ReadableStream<Uint8Array>} body
 */
export async function* readEvents(body) {
  const reader = body.getReader();
  const text = new TextDecoder('utf-8'); // {stream: true} keeps a split character for later
  const decoder = new SSEDecoder();
  let done = false;
  try {
    while (!done) {
      const read = await reader.read();
      done = read.done;
      const chunk = done ? text.decode() : text.decode(read.value, { stream: true });
      const records = done ? decoder.feed(chunk).concat(decoder.flush()) : decoder.feed(chunk);
      for (const record of records) yield parseRecord(record);
    }
  } finally {
    // The consumer stopped early (break, return, throw): close the connection.
    if (!done) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

function parseRecord({ event, data }) {
  let parsed;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw new StreamChatError(`The server sent an event that is not JSON: ${data.slice(0, 80)}`, {
      code: 'bad_event',
    });
  }
  if (parsed && typeof parsed === 'object' && !parsed.type && event !== 'message') {
    parsed.type = event;
  }
  return parsed;
}

const TERMINAL = new Set(['completion', 'error']);

/**
 * Streams one chat turn.
 * @param {{message: string, model?: string, conversationId?: string, regenerate?: boolean,
 *          signal?: AbortSignal, url?: string, fetch?: typeof fetch}} options
 * @returns {AsyncGenerator<Record<string, any>>}
 */
export async function* streamChat({
  message,
  model,
  conversationId,
  regenerate = false,
  signal,
  url = '/api/stream',
  fetch: fetchImpl = globalThis.fetch,
}) {
  const body = { message };
  if (model) body.model = model;
  if (conversationId) body.conversationId = conversationId;
  if (regenerate) body.regenerate = true;
  const response = await fetchImpl(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
    body: JSON.stringify(body),
    signal,
  });
  if (response.status !== 200) throw await errorFrom(response);
  if (!response.body) throw new StreamChatError('The response has no body', { code: 'no_body' });
  let finished = false;
  for await (const event of readEvents(response.body)) {
    finished ||= TERMINAL.has(event.type);
    yield event;
  }
  if (finished) return;
  throw new StreamChatError('The connection closed before the reply was complete.', {
    code: 'incomplete_stream',
    status: response.status,
  });
}

/**
 * Forgets a conversation on the server (idempotent).
 * @param {string} conversationId
 * @param {{url?: string, signal?: AbortSignal, fetch?: typeof fetch}} [options]
 */
export async function clearConversation(
  conversationId,
  { url = '/api/conversation', signal, fetch: fetchImpl = globalThis.fetch } = {},
) {
  const response = await fetchImpl(`${url}/${encodeURIComponent(conversationId)}`, {
    method: 'DELETE',
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

/** A `StreamChatError` from a refused request's `{"error": {"message", "code"}}` body. */
async function errorFrom(response) {
  const status = response.status;
  const fallback = `The server answered ${status} ${response.statusText || ''}`.trim();
  let text = '';
  try {
    text = await response.text();
    const error = JSON.parse(text).error ?? {};
    const message = typeof error === 'string' ? error : error.message;
    return new StreamChatError(message || fallback, { code: String(error.code ?? status), status });
  } catch {
    const detail = text.trim().slice(0, 200);
    return new StreamChatError(detail ? `${fallback}: ${detail}` : fallback, {
      code: String(status),
      status,
    });
  }
}
