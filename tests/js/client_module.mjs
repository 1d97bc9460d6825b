// Drives the client module, streamchat.js, against a live server and prints what it saw as JSON
// for the test to check. The default part goes through the test's proxy, which cuts the first
// connection mid-turn; `keys` talks to a server that needs an API key and asks before `divide`.
//
//   node client_module.mjs <URL of streamchat.js> <server address> [keys <API key>]
const [moduleUrl, baseUrl, part, key] = process.argv.slice(2);
const {
  streamChat,
  resume,
  join,
  stop,
  approve,
  listConversations,
  getConversation,
  clearConversation,
} = await import(moduleUrl);

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

/** Reconnection, resume, join, stop and the conversation routes (through the cutting proxy). */
async function reconnecting() {
  const server = { baseUrl, headers: { 'X-Client-Test': 'yes' } };
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
  return out;
}

/** A server that needs a key: `apiKey` on every call; `approve()` answers a waiting `divide`. */
async function keys() {
  const server = { baseUrl, apiKey: key };
  const wrong = 'not-the-key-0123456789';
  const out = {};
  out.noKey = await failure(listConversations({}, { baseUrl }));
  out.wrongKey = await failure(listConversations({}, { baseUrl, apiKey: wrong }));
  // `headers` win over `apiKey`: their Authorization is the one sent, and it is refused.
  const overridden = { ...server, headers: { authorization: `Bearer ${wrong}` } };
  out.headersWin = await failure(listConversations({}, overridden));
  out.approveNoKey = await failure(approve('node-approve', 'call_none', true, { baseUrl }));
  out.notWaiting = await failure(approve('node-approve', 'call_none', true, server));

  // One turn whose `divide` waits: answered with `approve()`, while a second reader watches.
  const answer = async (conversationId, message, approved) => {
    const turn = { events: [], watched: null, answer: null };
    for await (const event of streamChat({ ...server, message, conversationId })) {
      const { toolId = null, result = null, error = null } = event;
      turn.events.push({ ...brief(event), toolId, result, error });
      if (event.type === 'tool_approval_required') {
        turn.watched = collect(join({ ...server, conversationId }));
        turn.answer = await approve(conversationId, toolId, approved, server);
      }
    }
    turn.watched = await turn.watched;
    return turn;
  };
  out.approved = await answer('node-approve', 'What is 84 / 2?', true);
  out.denied = await answer('node-deny', 'What is 1 / 0?', false);
  out.listed = (await listConversations({}, server)).conversations.map((c) => c.conversationId);
  await clearConversation('node-approve', server);
  await clearConversation('node-deny', server);
  return out;
}

const out = part === 'keys' ? await keys() : await reconnecting();
process.stdout.write(JSON.stringify(out));
