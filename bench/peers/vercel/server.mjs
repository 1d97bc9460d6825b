// The Vercel AI SDK peer of bench/run.py: a small node:http server that answers
// `POST /api/stream {"message": ...}` the way an AI SDK app does: `streamText` on an
// OpenAI-compatible provider, sent as the SDK's UI message stream (SSE). A client that leaves
// aborts the upstream request through `abortSignal`. No conversations, no tools.
//
//   PORT=8002 OPENROUTER_BASE_URL=http://127.0.0.1:9000/v1 node server.mjs
import http from 'node:http';
import { streamText, toUIMessageStream, pipeUIMessageStreamToResponse } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 8002);
const defaultModel = process.env.DEFAULT_MODEL || 'bench/model';
const provider = createOpenAICompatible({
  name: 'bench',
  baseURL: process.env.OPENROUTER_BASE_URL || 'http://127.0.0.1:9000/v1',
  apiKey: process.env.OPENROUTER_API_KEY || 'bench-key',
  includeUsage: true,
});
const MAX_BODY = 256 * 1024;

function json(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

async function readBody(req) {
  const parts = [];
  let size = 0;
  for await (const part of req) {
    size += part.length;
    if (size > MAX_BODY) throw new Error('body too large');
    parts.push(part);
  }
  return Buffer.concat(parts).toString('utf8');
}

const server = http.createServer(async (req, res) => {
  if (req.method === 'GET' && req.url === '/health') return json(res, 200, { status: 'ok' });
  if (req.method !== 'POST' || req.url !== '/api/stream') {
    return json(res, 404, { error: { message: 'not found', code: 'not_found' } });
  }
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch {
    return json(res, 400, { error: { message: 'bad body', code: 'invalid_request' } });
  }
  if (typeof body?.message !== 'string' || !body.message) {
    return json(res, 400, { error: { message: "'message' is required", code: 'invalid_request' } });
  }
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const result = streamText({
    model: provider(body.model || defaultModel),
    system: 'You are a helpful assistant behind a chat API.',
    messages: [{ role: 'user', content: body.message }],
    abortSignal: abort.signal,
    maxRetries: 0,
    onError: ({ error }) => {
      if (!abort.signal.aborted) console.error('stream error:', error?.message || error);
    },
  });
  pipeUIMessageStreamToResponse({ response: res, stream: toUIMessageStream({ stream: result.stream }) });
});

server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.requestTimeout = 0;
server.maxConnections = 20_000;
server.listen(port, host, () => {
  console.log(`vercel ai sdk peer listening on http://${host}:${port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
