/**
 * The page's address names the conversation on view: `/#<conversationId>`. A reload keeps it, a
 * sidebar link or the back button changes it, and the same address in another tab shows the same
 * conversation. Ids are what the server accepts: 1-128 characters of `A-Z a-z 0-9 . _ : -`.
 */

const CONVERSATION_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** A fresh conversation id (randomUUID needs a secure context: plain http on a LAN has none). */
export function newConversationId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The conversation the address names, or '' when it names none. */
export function addressedId() {
  let id = '';
  try {
    id = decodeURIComponent(location.hash.slice(1));
  } catch {
    return '';
  }
  return CONVERSATION_ID.test(id) ? id : '';
}

/** Puts `id` in the address; `push` makes it a new entry of the browser's history. */
export function address(id, { push = false } = {}) {
  if (addressedId() === id) return;
  const url = `${location.pathname}${location.search}#${encodeURIComponent(id)}`;
  if (push) history.pushState(null, '', url);
  else history.replaceState(null, '', url);
}
