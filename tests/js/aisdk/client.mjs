// Drives the AI SDK's own transport and UI message reader against a live streamchat:
//   node client.mjs <base> send <chatId> <text> [regenerate]
//   node client.mjs <base> resume <chatId>
// Prints {message, errors, chunks}: the UI message the SDK built, errors it reported, and the
// chunk types in order.
import { DefaultChatTransport, readUIMessageStream } from 'ai';

const [base, mode, chatId, text, trigger] = process.argv.slice(2);
const transport = new DefaultChatTransport({ api: `${base}/api/chat` });
const chunks = [];
const dataParts = [];
let stream;
if (mode === 'send') {
  stream = await transport.sendMessages({
    chatId,
    messages: [{ id: 'u1', role: 'user', parts: [{ type: 'text', text }] }],
    trigger: trigger === 'regenerate' ? 'regenerate-message' : 'submit-message',
    messageId: undefined,
    abortSignal: undefined,
  });
} else {
  stream = await transport.reconnectToStream({ chatId });
  if (stream === null) {
    console.log(JSON.stringify({ message: null, errors: [], chunks: [] }));
    process.exit(0);
  }
}
const watched = stream.pipeThrough(
  new TransformStream({
    transform(chunk, controller) {
      chunks.push(chunk.type);
      if (chunk.type.startsWith('data-')) dataParts.push(chunk);
      controller.enqueue(chunk);
    },
  }),
);
const errors = [];
let message = null;
for await (const m of readUIMessageStream({ stream: watched, onError: (e) => errors.push(String(e.message ?? e)) })) {
  message = m;
}
console.log(JSON.stringify({ message, errors, chunks, dataParts }));
