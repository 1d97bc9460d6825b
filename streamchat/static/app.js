/**
 * The chat page: sends each message with `streamChat`, renders the reply as it streams (see
 * messages.js), and keeps the conversation's last turn replaceable: Retry after an error,
 * Regenerate the answer, or edit the message and send it again all resend the last message with
 * `regenerate`, so the server swaps that turn for the new one.
 *
 * The address names the conversation on view (`#<conversationId>`), so a reload, the sidebar's
 * links and the back button all open one the same way: its stored history is drawn (history.js),
 * and a turn still running on the server is joined and keeps streaming. Stop asks the server to
 * stop the turn; leaving a conversation (another one, a new one, a reload) only stops reading it.
 *
 * Every API call goes through the page's API key (apikey.js): a server that needs one asks for it
 * once, and the call is made again with it. A tool call that waits for a person shows Approve and
 * Deny in its card (toolcard.js), which answer it with `approve`.
 */
import { address, addressedId, newConversationId } from './address.js';
import { ApiKey } from './apikey.js';
import { ArtifactPanel } from './artifacts.js';
import { StoredArtifacts, replay, turnsOf } from './history.js';
import { AssistantReply, UserMessage } from './messages.js';
import { ModelPicker } from './models.js';
import { ConversationList } from './sidebar.js';
import {
  approve,
  getConversation,
  join,
  listConversations,
  stop as stopTurn,
  streamChat,
} from './streamchat.js';

const $ = (id) => document.getElementById(id);
const ui = {
  scroller: $('scroller'),
  thread: $('thread'),
  welcome: $('welcome'),
  messages: $('messages'),
  form: $('composer'),
  input: $('message'),
  send: $('send'),
  stop: $('stop'),
  status: $('status'),
  conversationId: $('conversation-id'),
  newConversation: $('new-conversation'),
  backendNotice: $('backend-notice'),
  offlineNote: $('offline-note'),
};

/**
 * `turns`: what the page shows, one {user, reply, stored} per turn. `stored`: the server took
 * the turn (it answered with a stream), so its history holds the turn's user message. `live`: the
 * reply being read, {controller, reply, stopping}. `view` counts the conversations shown, so an
 * answer that arrives for one no longer on view is dropped; `opening` while a history loads.
 */
const state = {
  conversationId: '',
  live: null,
  turns: [],
  pinned: true,
  view: 0,
  opening: false,
};
const models = new ModelPicker($('model'));
const artifacts = new ArtifactPanel({
  panel: $('artifacts'),
  list: $('artifact-list'),
  count: $('artifact-count'),
  close: $('close-artifacts'),
  backdrop: $('sheet-backdrop'),
});
const key = new ApiKey({
  dialog: $('key-dialog'),
  form: $('key-form'),
  input: $('key-input'),
  heading: $('key-heading'),
  intro: $('key-intro'),
  error: $('key-error'),
  forget: $('forget-key'),
  cancel: $('cancel-key'),
  button: $('key-button'),
  changed: keyChanged,
  forgotten: keyForgotten,
});
const sidebar = new ConversationList({
  nav: $('sidebar'),
  list: $('conversation-list'),
  more: $('load-more'),
  empty: $('conversations-empty'),
  toggle: $('open-sidebar'),
  close: $('close-sidebar'),
  backdrop: $('drawer-backdrop'),
  inert: [document.querySelector('.topbar'), document.querySelector('main')],
  announce,
  load: (page) => key.authorized((options) => listConversations(page, options)),
});

/** Shows `id` as the current conversation; `push` adds it to the browser's history. */
function setConversationId(id, { push = false } = {}) {
  state.conversationId = id;
  ui.conversationId.textContent = id;
  ui.conversationId.title = id;
  sidebar.select(id);
  address(id, { push });
}

function announce(message) {
  ui.status.textContent = message;
}

/*
 * The view follows the newest message while the reader is at the bottom: whatever grows the
 * thread (a token, a card, an artifact chip, a narrower column when the panel opens) scrolls it
 * along; a reader who scrolled up is left alone until they come back down or send.
 */
function followNewest() {
  ui.scroller.addEventListener(
    'scroll',
    () => {
      const { scrollTop, scrollHeight, clientHeight } = ui.scroller;
      state.pinned = scrollHeight - scrollTop - clientHeight < 96;
    },
    { passive: true },
  );
  const follow = () => {
    if (state.pinned) ui.scroller.scrollTop = ui.scroller.scrollHeight;
  };
  const observer = new ResizeObserver(follow);
  observer.observe(ui.thread);
  observer.observe(ui.scroller);
}

function scrollToNewest() {
  state.pinned = true;
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

function setStreaming(streaming) {
  const stopHadFocus = document.activeElement === ui.stop;
  ui.send.hidden = streaming;
  ui.stop.hidden = !streaming;
  document.body.classList.toggle('is-streaming', streaming);
  if (!streaming && (stopHadFocus || document.activeElement === document.body)) ui.input.focus();
}

/** Another key was saved from the header: the list and the conversation as that key sees them. */
function keyChanged() {
  sidebar.refresh();
  if (!state.live) show(state.conversationId);
}

/** The key is forgotten: nothing it opened stays on the page. */
function keyForgotten() {
  leave();
  setConversationId(newConversationId(), { push: true });
  sidebar.clear('Your conversations show here once the server has your key.');
  announce('The API key is forgotten in this tab.');
}

function describe(error) {
  if (error instanceof TypeError) return `Could not reach the server (${error.message}).`;
  return error.message || String(error);
}

/** A turn on the page: the user's message and the reply under it. */
function addTurn(text, { stored = false } = {}) {
  const conversationId = state.conversationId;
  const turn = {
    user: new UserMessage(text, (edited) => replaceLastTurn(edited)),
    reply: new AssistantReply({
      artifacts,
      announce,
      retry: () => replaceLastTurn(),
      regenerate: () => replaceLastTurn(),
      approve: (toolId, approved) =>
        key.authorized((options) => approve(conversationId, toolId, approved, options)),
    }),
    stored,
  };
  state.turns.push(turn);
  ui.welcome.hidden = true;
  ui.messages.append(turn.user.node, turn.reply.node);
  return turn;
}

/** Sends the last turn's message again (or `text` instead), replacing that turn. */
function replaceLastTurn(text) {
  const last = state.turns.at(-1);
  if (!last || state.live) return;
  send(text ?? last.user.text, { replace: last });
}

/**
 * One turn. With `replace` (the last turn), its messages leave the page and the request asks the
 * server to forget them too, when the server had stored them.
 */
async function send(text, { replace = null } = {}) {
  if (state.live || state.opening || !text.trim()) return;
  if (replace) {
    state.turns.pop();
    replace.user.node.remove();
    replace.reply.node.remove();
  }
  const model = models.value;
  const turn = addTurn(text);
  scrollToNewest();
  if (!replace) {
    ui.input.value = '';
    autosize();
  }
  const conversationId = state.conversationId;
  const outcome = await read(turn, (signal) =>
    key.authorizedStream((options) =>
      streamChat({
        ...options,
        message: text,
        model,
        conversationId,
        regenerate: Boolean(replace?.stored),
        signal,
      }),
    ),
  );
  if (outcome?.type === 'completion') models.succeeded(model);
  else if (outcome && models.refused(model, outcome.code)) {
    announce(`The server refused the model ${model}; the picker is back on its default.`);
  }
}

/**
 * Shows a turn's events in its reply until the terminal one; the terminal event, or null. A
 * sequence that ends without one (the server no longer had the turn) is drawn again from the
 * stored history.
 */
async function read(turn, open) {
  const { reply } = turn;
  const controller = new AbortController();
  const live = { controller, reply, stopping: false };
  const view = state.view;
  state.live = live;
  setStreaming(true);
  announce('Thinking…');
  let outcome = null; // the terminal event
  try {
    for await (const event of open(controller.signal)) {
      if (!turn.stored) sidebar.refresh(); // the server has it now: list it
      turn.stored = true;
      if (event.type === 'completion' || event.type === 'error') outcome = event;
      reply.handle(event);
    }
  } catch (error) {
    if (error.status === 200) turn.stored = true; // the stream broke off after it began
    if (state.view !== view) return null; // another conversation is on view: nothing to show
    if (error.name === 'AbortError') reply.stopped();
    else {
      outcome = { type: 'error', code: error.code };
      reply.fail(describe(error), error.code);
    }
  } finally {
    if (state.live === live) {
      state.live = null;
      setStreaming(false);
    }
  }
  if (state.view !== view) return null;
  reply.finish();
  sidebar.refresh();
  if (!outcome && !controller.signal.aborted) await show(state.conversationId, { again: true });
  return outcome;
}

/** Stop: the server stops the turn and every reader gets its `cancelled` completion. */
async function stop() {
  const live = state.live;
  if (!live || live.stopping) return;
  live.stopping = true;
  announce('Stopping…');
  try {
    const conversationId = state.conversationId;
    const { stopped } = await key.authorized((options) => stopTurn(conversationId, options));
    // Nothing running on the server yet (the turn is still queued): stop reading it here.
    if (!stopped) live.controller.abort();
  } catch {
    live.controller.abort();
  }
}

/** Stops reading the reply on view; the server's turn goes on (another reader may come). */
function leave() {
  state.view += 1;
  state.opening = false;
  state.live?.controller.abort();
  state.live = null;
  setStreaming(false);
  state.turns = [];
  ui.messages.replaceChildren();
  artifacts.clear();
  ui.welcome.hidden = false;
}

/**
 * Opens a conversation: draws its stored history, then joins the running turn from its first
 * event (resolving once the history is drawn, not when that turn ends). An id the server does
 * not know is a new conversation. `again`: only redraw, with no join (no second try).
 */
async function show(conversationId, { again = false } = {}) {
  leave();
  setConversationId(conversationId);
  const view = state.view;
  let conversation;
  state.opening = true;
  try {
    conversation = await key.authorized((options) => getConversation(conversationId, options));
  } catch (error) {
    if (state.view !== view) return;
    if (error.status !== 404) announce(`Could not open the conversation: ${describe(error)}`);
    return;
  } finally {
    if (state.view === view) state.opening = false;
  }
  if (state.view !== view) return;
  const turns = turnsOf(conversation.messages);
  // The running turn's stored part (its message, finished tool rounds) comes again from the join.
  const running = conversation.runningTurn && !again ? turns.pop() : null;
  quietly(() => {
    const stored = new StoredArtifacts(conversation.artifacts, artifacts);
    for (const { user, after } of turns) replay(addTurn(user, { stored: true }).reply, after, stored);
  });
  scrollToNewest();
  if (!again) announce(turns.length ? `Opened “${conversation.title}”.` : '');
  if (running) {
    const turn = addTurn(running.user, { stored: true });
    scrollToNewest();
    read(turn, (signal) =>
      key.authorizedStream((options) => join({ ...options, conversationId, signal })),
    );
  }
}

/** Draws without the log announcing each message: a history is not news. */
function quietly(draw) {
  ui.messages.setAttribute('aria-live', 'off');
  try {
    draw();
  } finally {
    requestAnimationFrame(() => ui.messages.setAttribute('aria-live', 'polite'));
  }
}

function newConversation() {
  leave();
  setConversationId(newConversationId(), { push: true });
  ui.input.focus();
  announce('Started a new conversation.');
}

function autosize() {
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 240)}px`;
}

/** The backend and its models from `/health`: the picker, and notes on what is answering. */
async function loadDefaults() {
  try {
    const response = await fetch('/health', { headers: { Accept: 'application/json' } });
    const health = await response.json();
    models.load(health);
    if (health.backend === 'none') {
      ui.backendNotice.textContent =
        'No model backend is configured on the server: each reply says how to set ' +
        'OPENROUTER_API_KEY.';
      ui.backendNotice.hidden = false;
    } else if (health.backend === 'local') {
      ui.offlineNote.textContent =
        `Offline: ${health.model}, a small model on this server, best at arithmetic and short code.`;
      ui.offlineNote.hidden = false;
    }
  } catch (error) {
    models.load({});
    announce(`Could not read the server's models: ${describe(error)}`);
  }
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  send(ui.input.value);
});
ui.input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send(ui.input.value);
  } else if (event.key === 'Escape' && state.live) {
    event.preventDefault();
    stop();
  }
});
ui.input.addEventListener('input', autosize);
ui.stop.addEventListener('click', stop);
ui.newConversation.addEventListener('click', newConversation);
for (const button of document.querySelectorAll('.suggestion')) {
  button.addEventListener('click', () => send(button.dataset.prompt));
}
// A sidebar link, the back button, or an address typed by hand.
window.addEventListener('hashchange', () => {
  const id = addressedId();
  if (id && id !== state.conversationId) show(id);
});

async function start() {
  followNewest();
  const addressed = addressedId();
  if (!addressed) setConversationId(newConversationId());
  await Promise.all([loadDefaults(), sidebar.refresh(), addressed && show(addressed)]);
  document.body.dataset.ready = 'true';
}

start();
