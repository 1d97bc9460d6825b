/**
 * The chat page: sends each message with `streamChat`, renders the reply as it streams (see
 * messages.js), and keeps the conversation's last turn replaceable: Retry after an error,
 * Regenerate the answer, or edit the message and send it again all resend the last message with
 * `regenerate`, so the server swaps that turn for the new one.
 */
import { ArtifactPanel } from './artifacts.js';
import { AssistantReply, UserMessage } from './messages.js';
import { ModelPicker } from './models.js';
import { clearConversation, streamChat } from './streamchat.js';

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
 * `turns`: what the page shows, one {user, reply, stored, model} per turn. `stored`: the server
 * took the turn (it answered with a stream), so its history holds the turn's user message.
 */
const state = { conversationId: '', controller: null, turns: [], pinned: true };
const models = new ModelPicker($('model'));
const artifacts = new ArtifactPanel({
  panel: $('artifacts'),
  list: $('artifact-list'),
  count: $('artifact-count'),
  close: $('close-artifacts'),
  backdrop: $('sheet-backdrop'),
});

/** A fresh id matching ^[A-Za-z0-9._:-]{1,128}$ (randomUUID needs a secure context). */
function newConversationId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function setConversationId(id) {
  state.conversationId = id;
  ui.conversationId.textContent = id;
  ui.conversationId.title = id;
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

function describe(error) {
  if (error instanceof TypeError) return `Could not reach the server (${error.message}).`;
  return error.message || String(error);
}

/** Sends the last turn's message again (or `text` instead), replacing that turn. */
function replaceLastTurn(text) {
  const last = state.turns.at(-1);
  if (!last || state.controller) return;
  send(text ?? last.user.text, { replace: last });
}

/**
 * One turn. With `replace` (the last turn), its messages leave the page and the request asks the
 * server to forget them too, when the server had stored them.
 */
async function send(text, { replace = null } = {}) {
  if (state.controller || !text.trim()) return;
  if (replace) {
    state.turns.pop();
    replace.user.node.remove();
    replace.reply.node.remove();
  }
  ui.welcome.hidden = true;
  const model = models.value;
  const turn = {
    user: new UserMessage(text, (edited) => replaceLastTurn(edited)),
    reply: new AssistantReply({
      artifacts,
      announce,
      retry: () => replaceLastTurn(),
      regenerate: () => replaceLastTurn(),
    }),
    stored: false,
    model,
  };
  state.turns.push(turn);
  ui.messages.append(turn.user.node, turn.reply.node);
  scrollToNewest();
  if (!replace) {
    ui.input.value = '';
    autosize();
  }
  const { reply } = turn;
  const controller = new AbortController();
  state.controller = controller;
  setStreaming(true);
  announce('Thinking…');
  let outcome = null; // the terminal event
  try {
    const events = streamChat({
      message: text,
      model,
      conversationId: state.conversationId,
      regenerate: Boolean(replace?.stored),
      signal: controller.signal,
    });
    for await (const event of events) {
      turn.stored = true;
      if (event.type === 'completion' || event.type === 'error') outcome = event;
      reply.handle(event);
    }
  } catch (error) {
    if (error.status === 200) turn.stored = true; // the stream broke off after it began
    if (error.name === 'AbortError') reply.stopped();
    else {
      outcome = { type: 'error', code: error.code };
      reply.fail(describe(error), error.code);
    }
  } finally {
    reply.finish();
    if (state.controller === controller) {
      state.controller = null;
      setStreaming(false);
    }
  }
  if (outcome?.type === 'completion') models.succeeded(model);
  else if (outcome && models.refused(model, outcome.code)) {
    announce(`The server refused the model ${model}; the picker is back on its default.`);
  }
}

function stop() {
  state.controller?.abort();
}

async function newConversation() {
  const old = state.conversationId;
  stop();
  state.controller = null;
  setStreaming(false);
  state.turns = [];
  ui.messages.replaceChildren();
  artifacts.clear();
  ui.welcome.hidden = false;
  setConversationId(newConversationId());
  ui.input.focus();
  try {
    await clearConversation(old);
    announce('Started a new conversation.');
  } catch (error) {
    announce(`The old conversation could not be cleared on the server: ${describe(error)}`);
  }
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
  document.body.dataset.ready = 'true';
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  send(ui.input.value);
});
ui.input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send(ui.input.value);
  } else if (event.key === 'Escape' && state.controller) {
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

followNewest();
setConversationId(newConversationId());
loadDefaults();
