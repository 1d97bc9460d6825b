/**
 * streamchat.js: a dependency-free client for the streamchat API (an ES module).
 *
 *   import { streamChat, stop, join, approve, getConversation } from '/static/streamchat.js';
 *
 *   const turn = { message: 'What is 25 + 17?', conversationId: 'c1' };
 *   for await (const event of streamChat(turn)) {
 *     if (event.type === 'text') output.append(event.content);
 *   }
 *   await stop('c1');                    // from a Stop button: the reply ends with "cancelled"
 *   for await (const event of join({ conversationId: 'c1' })) { ... } // watch a running turn
 *   await approve('c1', event.toolId, true);  // after a tool_approval_required event
 *   const { messages, artifacts } = await getConversation('c1');
 *
 * `streamChat` POSTs one turn to `/api/stream` and yields each Server-Sent Event's JSON data as an
 * object, ending after the terminal `completion` or `error` event. Every event has `type`,
 * `chunkIndex` (0, 1, 2, ... across the turn) and `elapsedMs`; beyond those:
 *
 *   text                         content (the text delta)
 *   tool_approval_required       toolName, toolId, arguments: the call waits for `approve()`
 *   tool_executing               toolName, toolId, arguments (a JSON string)
 *   tool_completed / tool_error  the same, plus result or error, and executionMs
 *   artifact_started             artifactId, artifactType, title, language
 *   artifact_content             artifactId, contentDelta
 *   artifact_completed           artifactId, artifactType, title, language, content
 *   completion                   finishReason ("cancelled" after a stop), model, conversationId,
 *                                turn, usage
 *   error                        message (for a person), code (for a program)
 *
 * Each event also carries its SSE id as `event.eventId` (`"<turn>:<chunkIndex>"`), a property
 * that is not enumerable, so the object spreads and serialises exactly as the server sent it.
 *
 * A turn runs on the server on its own. When the connection drops before the terminal event (a
 * network error, or the body ending early), `streamChat`, `resume` and `join` reconnect to
 * `GET /api/conversation/{id}/stream` with `Last-Event-ID`, up to `reconnect` times in a row with
 * a short back-off, and go on yielding from the event after the last one seen: one unbroken
 * sequence, no gap, no duplicate. If the server no longer has the turn (`204`), the sequence ends
 * without a terminal event; the history (`getConversation`) then has the reply. Aborting the
 * caller's `signal` is not a drop: it rejects with the usual `AbortError` and closes the
 * connection; the turn goes on on the server for its grace period, so only `stop` ends it.
 *
 * With `regenerate: true` the server first forgets the conversation's last user message and
 * everything after it, so the turn replaces the last one (regenerate, edit and resend, retry).
 * Frames may be split anywhere by the network, even inside a UTF-8 character. A refused request
 * (not 200) or a stream that ends without a terminal event and cannot be resumed throws a
 * `StreamChatError` carrying the server's `message`, `code` and HTTP `status`.
 *
 * Every function takes `baseUrl` (where the server is; the page's own origin by default),
 * `apiKey` (sent as `Authorization: Bearer <apiKey>` when the server needs a key), `headers`
 * (added to each request; an `Authorization` among them wins over `apiKey`), `signal` and `fetch`.
 * A server that wants a key and got none, or a wrong one, answers `401`: a `StreamChatError`
 * with `status` 401 and `code` "unauthorized".
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
  for await (const { record } of readRecords(body)) yield parseRecord(record);
}

/**
 * The `{event, data, id}` records of a body; `flushed` marks the one the end of the body
 * completed (it had no blank line after it, so it may be cut short).
 */
async function* readRecords(body) {
  const reader = body.getReader();
  const text = new TextDecoder('utf-8'); // {stream: true} keeps a split character for later
  const decoder = new SSEDecoder();
  let done = false;
  try {
    while (!done) {
      const read = await reader.read();
      done = read.done;
      const chunk = done ? text.decode() : text.decode(read.value, { stream: true });
      for (const record of decoder.feed(chunk)) yield { record, flushed: false };
      if (done) for (const record of decoder.flush()) yield { record, flushed: true };
    }
  } finally {
    // The consumer stopped early (break, return, throw) or the read failed: close the connection.
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
const EVENT_ID = /^(\d+):(\d+)$/;
/** How many times in a row a dropped stream is reconnected, and the first wait before it. */
const RECONNECT_ATTEMPTS = 3;
const RECONNECT_DELAY_MS = 250;

/**
 * Streams one chat turn, reconnecting after a dropped connection.
 * @param {{message: string, model?: string, conversationId?: string, regenerate?: boolean,
 *          baseUrl?: string, url?: string, apiKey?: string, headers?: Record<string, string>,
 *          signal?: AbortSignal, fetch?: typeof fetch, reconnect?: number}} options
 *   `url`: the full address of `POST /api/stream` (instead of `baseUrl`); reconnection uses the
 *   conversation route beside it. `reconnect`: attempts in a row after a drop (0: none).
 * @returns {AsyncGenerator<Record<string, any>>}
 */
export async function* streamChat({
  message,
  model,
  conversationId,
  regenerate = false,
  baseUrl = '',
  url,
  apiKey,
  headers: extraHeaders,
  signal,
  fetch: fetchImpl = globalThis.fetch,
  reconnect = RECONNECT_ATTEMPTS,
}) {
  const headers = withKey(extraHeaders, apiKey);
  const body = { message };
  if (model) body.model = model;
  if (conversationId) body.conversationId = conversationId;
  if (regenerate) body.regenerate = true;
  const postUrl = url ?? `${baseUrl}/api/stream`;
  const response = await fetchImpl(postUrl, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream', ...headers },
    body: JSON.stringify(body),
    signal,
  });
  if (response.status !== 200) throw await errorFrom(response);
  if (!response.body) throw new StreamChatError('The response has no body', { code: 'no_body' });
  // Where to reconnect: the conversation route beside the stream route.
  const routes = url === undefined ? `${baseUrl}/api/conversation` : besideStream(url);
  yield* follow(response, {
    conversationId: conversationId || response.headers.get('X-Conversation-Id') || '',
    routes: reconnect > 0 ? routes : null,
    lastEventId: null,
    headers,
    signal,
    fetchImpl,
    reconnect,
  });
}

/** `.../api/stream` -> `.../api/conversation`; null for an address of another shape. */
function besideStream(url) {
  return /\/stream$/.test(url) ? url.replace(/\/stream$/, '/conversation') : null;
}

/**
 * Reads a turn of a conversation through `GET /api/conversation/{id}/stream`: with `lastEventId`
 * (`"<turn>:<chunkIndex>"`), the events after that one, live to the terminal event; without it,
 * the running turn from its first event. Yields nothing when the server has nothing after that
 * id or nothing running (`204`). Reconnects after a dropped connection like `streamChat`.
 * @param {{conversationId: string, lastEventId?: string, baseUrl?: string, url?: string,
 *          apiKey?: string, headers?: Record<string, string>, signal?: AbortSignal,
 *          fetch?: typeof fetch, reconnect?: number}} options
 *   `url`: the conversation route's base (`/api/conversation`), instead of `baseUrl`.
 * @returns {AsyncGenerator<Record<string, any>>}
 */
export async function* resume({
  conversationId,
  lastEventId,
  baseUrl = '',
  url,
  apiKey,
  headers: extraHeaders,
  signal,
  fetch: fetchImpl = globalThis.fetch,
  reconnect = RECONNECT_ATTEMPTS,
}) {
  const headers = withKey(extraHeaders, apiKey);
  const routes = url ?? `${baseUrl}/api/conversation`;
  const response = await openStream(routes, conversationId, lastEventId, {
    headers,
    signal,
    fetchImpl,
  });
  if (response.status === 204) return;
  if (response.status !== 200) throw await errorFrom(response);
  if (!response.body) throw new StreamChatError('The response has no body', { code: 'no_body' });
  yield* follow(response, {
    conversationId,
    routes: reconnect > 0 ? routes : null,
    lastEventId: lastEventId || null,
    headers,
    signal,
    fetchImpl,
    reconnect,
  });
}

/**
 * Watches the conversation's running turn from its first event (a second tab, a page that was
 * reloaded): `resume` without an id. Yields nothing when no turn is running.
 * @param {{conversationId: string, baseUrl?: string, url?: string, apiKey?: string,
 *          headers?: Record<string, string>, signal?: AbortSignal, fetch?: typeof fetch,
 *          reconnect?: number}} options
 * @returns {AsyncGenerator<Record<string, any>>}
 */
export function join(options) {
  return resume({ ...options, lastEventId: undefined });
}

function openStream(routes, conversationId, lastEventId, { headers, signal, fetchImpl }) {
  const extra = lastEventId ? { 'Last-Event-ID': lastEventId } : {};
  return fetchImpl(`${routes}/${encodeURIComponent(conversationId)}/stream`, {
    headers: { Accept: 'text/event-stream', ...headers, ...extra },
    signal,
  });
}

/**
 * Yields a turn's events from `response`, then, whenever the connection drops before the
 * terminal event, from a new request after the last event id seen.
 */
async function* follow(response, { conversationId, routes, lastEventId, ...request }) {
  const { signal, reconnect } = request;
  let last = parseId(lastEventId);
  let failures = 0; // reconnections in a row that brought nothing
  for (;;) {
    let cause;
    try {
      for await (const { record, flushed } of readRecords(response.body)) {
        signal?.throwIfAborted(); // what was read before an abort is not shown after it
        let event;
        try {
          event = parseRecord(record);
        } catch (error) {
          if (flushed) break; // the connection ended inside this event: it comes again
          throw error;
        }
        const id = parseId(record.id);
        if (id && last && id.turn === last.turn && id.index <= last.index) continue; // seen
        if (id) last = id;
        failures = 0;
        if (record.id && typeof event === 'object' && event !== null) {
          Object.defineProperty(event, 'eventId', { value: record.id });
        }
        yield event;
        if (TERMINAL.has(event?.type)) return;
      }
      cause = new StreamChatError('The connection closed before the reply was complete.', {
        code: 'incomplete_stream',
        status: response.status,
      });
    } catch (error) {
      // fetch reports a dropped connection as a TypeError; anything else is not a drop.
      if (signal?.aborted || !(error instanceof TypeError)) throw error;
      cause = error;
    }
    conversationId ||= response.headers.get('X-Conversation-Id') || '';
    response = null;
    while (!response) {
      if (!routes || !conversationId || failures >= reconnect) throw lost(cause);
      await sleep(RECONNECT_DELAY_MS * 2 ** failures, signal);
      failures += 1;
      const resumeAfter = last ? `${last.turn}:${last.index}` : '';
      try {
        response = await openStream(routes, conversationId, resumeAfter, request);
      } catch (error) {
        if (signal?.aborted || !(error instanceof TypeError)) throw error;
        cause = error;
        continue;
      }
      if (response.status === 204) return; // the turn is over and gone: the history has it
      if (response.status === 200 && response.body) break;
      const refused = await errorFrom(response);
      if (response.status < 500) throw refused;
      cause = refused; // the server is restarting or overloaded: try again
      response = null;
    }
  }
}

function parseId(id) {
  const match = EVENT_ID.exec(id ?? '');
  return match ? { turn: Number(match[1]), index: Number(match[2]) } : null;
}

function lost(cause) {
  if (cause instanceof StreamChatError) return cause;
  const error = new StreamChatError('The connection was lost before the reply was complete.', {
    code: 'incomplete_stream',
    status: 200, // the stream had begun: the server took the turn
  });
  error.cause = cause;
  return error;
}

/** Waits `ms`, or rejects with the signal's reason (an `AbortError`) as soon as it aborts. */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const aborted = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', aborted);
      resolve();
    }, ms);
    if (signal?.aborted) aborted();
    else signal?.addEventListener('abort', aborted, { once: true });
  });
}

/**
 * Stops the conversation's running turn on the server: the upstream call is aborted, the text
 * so far is stored, and every reader of the turn gets `completion` with
 * `finishReason: "cancelled"`. Resolves to `{stopped: true, turn}`, or `{stopped: false}` when
 * nothing was running.
 * @param {string} conversationId
 * @param {{baseUrl?: string, url?: string, apiKey?: string, headers?: Record<string, string>,
 *          signal?: AbortSignal, fetch?: typeof fetch}} [options]
 *   `url`: the conversation route's base (`/api/conversation`), instead of `baseUrl`.
 * @returns {Promise<{stopped: boolean, turn?: number}>}
 */
export function stop(conversationId, { baseUrl = '', url, ...options } = {}) {
  const routes = url ?? `${baseUrl}/api/conversation`;
  return requestJson(`${routes}/${encodeURIComponent(conversationId)}/stop`, 'POST', options);
}

/**
 * Answers a tool call that waits for a person (the `tool_approval_required` event's `toolId`):
 * `approved` true runs it, false turns it into a `tool_error` ("Denied by the user."); the turn
 * then goes on, and every reader of it sees what followed. Resolves to `{toolId, approved}`;
 * rejects with a `StreamChatError` (`status` 404) when no such call waits (already answered,
 * from another tab say, timed out, or the turn ended).
 * @param {string} conversationId
 * @param {string} toolId
 * @param {boolean} approved
 * @param {{baseUrl?: string, url?: string, apiKey?: string, headers?: Record<string, string>,
 *          signal?: AbortSignal, fetch?: typeof fetch}} [options]
 *   `url`: the conversation route's base (`/api/conversation`), instead of `baseUrl`.
 * @returns {Promise<{toolId: string, approved: boolean}>}
 */
export function approve(conversationId, toolId, approved, { baseUrl = '', url, ...options } = {}) {
  const routes = url ?? `${baseUrl}/api/conversation`;
  const route = `${routes}/${encodeURIComponent(conversationId)}/approve`;
  return requestJson(route, 'POST', options, { toolId, approved });
}

/**
 * A conversation's stored history: `{conversationId, title, createdAt, updatedAt, turns,
 * runningTurn, messages, artifacts}`; `messages` are OpenAI-shaped (`role`, `content`,
 * `tool_calls`, `tool_call_id`), `artifacts` the `artifact_completed` payloads with their `turn`.
 * Rejects with a `StreamChatError` (`status` 404) for a conversation the server does not know.
 * @param {string} conversationId
 * @param {{baseUrl?: string, url?: string, apiKey?: string, headers?: Record<string, string>,
 *          signal?: AbortSignal, fetch?: typeof fetch}} [options]
 *   `url`: the conversation route's base (`/api/conversation`), instead of `baseUrl`.
 */
export function getConversation(conversationId, { baseUrl = '', url, ...options } = {}) {
  const routes = url ?? `${baseUrl}/api/conversation`;
  return requestJson(`${routes}/${encodeURIComponent(conversationId)}`, 'GET', options);
}

/**
 * One page of conversations, most recently used first: `{conversations: [{conversationId, title,
 * createdAt, updatedAt, turns, runningTurn}], next}`; pass `next` back as `before` for the next
 * page (it is null after the last).
 * @param {{limit?: number, before?: string | null}} [page]
 * @param {{baseUrl?: string, url?: string, apiKey?: string, headers?: Record<string, string>,
 *          signal?: AbortSignal, fetch?: typeof fetch}} [options]
 *   `url`: the full address of the list route (`/api/conversations`), instead of `baseUrl`.
 */
export function listConversations({ limit, before } = {}, { baseUrl = '', url, ...options } = {}) {
  const query = new URLSearchParams();
  if (limit) query.set('limit', String(limit));
  if (before) query.set('before', before);
  const route = url ?? `${baseUrl}/api/conversations`;
  const search = query.toString();
  return requestJson(search ? `${route}?${search}` : route, 'GET', options);
}

/**
 * Forgets a conversation on the server (idempotent); a running turn is stopped first.
 * @param {string} conversationId
 * @param {{baseUrl?: string, url?: string, apiKey?: string, headers?: Record<string, string>,
 *          signal?: AbortSignal, fetch?: typeof fetch}} [options]
 *   `url`: the conversation route's base (`/api/conversation`), instead of `baseUrl`.
 */
export function clearConversation(conversationId, { baseUrl = '', url, ...options } = {}) {
  const routes = url ?? `${baseUrl}/api/conversation`;
  return requestJson(`${routes}/${encodeURIComponent(conversationId)}`, 'DELETE', options);
}

async function requestJson(
  url,
  method,
  { apiKey, headers, signal, fetch: fetchImpl = globalThis.fetch },
  body = undefined,
) {
  const init = { method, signal };
  const json = body === undefined ? {} : { 'Content-Type': 'application/json' };
  const sent = { ...json, ...withKey(headers, apiKey) };
  if (body !== undefined) init.body = JSON.stringify(body);
  if (Object.keys(sent).length) init.headers = sent;
  const response = await fetchImpl(url, init);
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

/** `headers` with `Authorization: Bearer <apiKey>` added, unless they name an `Authorization`. */
function withKey(headers, apiKey) {
  if (!apiKey) return headers;
  const own = Object.keys(headers ?? {}).some((name) => name.toLowerCase() === 'authorization');
  return own ? headers : { Authorization: `Bearer ${apiKey}`, ...headers };
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
