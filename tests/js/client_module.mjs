// Drives the client module, streamchat.js, against a live server (through the test's proxy,
// which cuts the first connection mid-turn) and prints what it saw as JSON for the test to check.
//
//   node client_module.mjs <URL of streamchat.js> <server address>
const [moduleUrl, baseUrl] = process.argv.slice(2);
const { streamChat, resume, join, stop, listConversations, getConversation, clearConversation } =
  await import(moduleUrl);

const server = { baseUrl, headers: { 'X-Client-Test': 'yes' } };
const brief = (event) => ({
  id: event.eventId,
  type: event.type,
  chunkIndex: event.chunkIndex,
  content: event.content ?? null,
  finishReason: event.finishReason ?? null,
});
const collect = async (events) => {
  const seen = [];
  for await (const event of events) seen.push(brief(event));
  return seen;
};
const failure = async (promise) => {
  try {
    await promise;
    return null;
  } catch (error) {
    return { name: error.name, code: error.code, status: error.status };
  }
};
const out = {};

// A paced turn whose connection the proxy cuts: reconnection finishes it.
out.reconnected = await collect(
  streamChat({ ...server, message: 'Count slowly', conversationId: 'node-reconnect' }),
);
// The finished turn is kept for a while: the events after an id. Nothing runs: join yields none.
out.resumed = await collect(
  resume({ ...server, conversationId: 'node-reconnect', lastEventId: '1:2' }),
);
out.joined = await collect(join({ ...server, conversationId: 'node-reconnect' }));

// Stop a running turn that a second reader watches too: both end with "cancelled".
out.stopped = [];
let watcher = null;
for await (const event of streamChat({
  ...server,
  message: 'Tell me a long story',
  conversationId: 'node-stop',
})) {
  out.stopped.push(brief(event));
  if (event.chunkIndex === 0) watcher = collect(join({ ...server, conversationId: 'node-stop' }));
  if (event.chunkIndex === 2) out.stopAnswer = await stop('node-stop', server);
}
out.watched = await watcher;
out.stopAgain = await stop('node-stop', server);

out.conversation = await getConversation('node-stop', server);
const first = await listConversations({ limit: 1 }, server);
const second = await listConversations({ limit: 1, before: first.next }, server);
out.pages = [first, second];
out.unknown = await failure(getConversation('nobody-here', server));
await clearConversation('node-stop', server);
await clearConversation('node-reconnect', server);
out.afterClear = await listConversations({}, server);

process.stdout.write(JSON.stringify(out));
