// Room page (GET /r/{id}): joins the room named in the URL over the
// WebSocket protocol of SPEC §4 and renders it. All user-supplied text goes
// into the page through textContent, never as HTML.
//
// Message bookkeeping:
//   - rendered maps seq → element. A seq is rendered at most once; history
//     replays and live events are merged by seq, in seq order.
//   - Our own messages live in the outbox until their ack arrives. Each has a
//     client ID (the envelope id). The server answers a re-sent id with the
//     original ack, so after a reconnect every unacknowledged message is
//     simply sent again with the same id.
//   - The msg event for our own message and its ack usually come together;
//     whichever comes second finds the seq already rendered, so one message
//     shows, not two.
//   - Catching up: a joined with more: true left stored messages out. We ask
//     for them a page at a time (history, after = the last seq shown) until
//     we reach joined.lastSeq or the server says there is no more. Live msg
//     events arriving meanwhile wait in a buffer and show after the pages, so
//     lastSeq only grows through a gapless run and a reconnect's since never
//     skips anything. Our outbox waits for the catch-up too, since an ack
//     would otherwise put a seq far beyond the pages on screen.

import {
  DEFAULT_LIMITS,
  checkRoomID,
  cleanName,
  copyText,
  formatTime,
  messageLength,
  newID,
  ownerKeyStorageKey,
  roomURL,
  storageGet,
  storageSet,
} from './common.js';
import { CLOSE, Connection, takeToken } from './conn.js';

const $ = (id) => document.getElementById(id);

const NAME_KEY = 'roomchat.name';
const NAME_SKIPPED_KEY = 'roomchat.nameSkipped';
const TYPING_SEND_MS = 2000; // send typing at most this often
const TYPING_ID = 'typing-'; // prefix of the ids of typing notices
const MAX_REASON = 200; // characters of a moderation reason (the server's limit)
const TYPING_SHOW_MS = 3000; // show someone's typing this long
// The server de-duplicates a re-sent id for 5 minutes. A message unconfirmed
// for longer than this could be stored twice if re-sent, so it is marked
// failed instead and the user decides.
const UNCONFIRMED_MS = 4.5 * 60 * 1000;
const ROOM_FULL_RETRY_MS = 10000;
// A join refused by the room's join budget (rate_limited, field roomID:
// many people joining at once) is tried again after this long, plus up to
// as much again at random, so that a crowd does not come back at once.
const ROOM_BUSY_RETRY_MS = 2000;
// A history page refused for a passing reason (rate_limited,
// store_unavailable, …) is asked for again after this long.
const HISTORY_RETRY_MS = 2000;

// ---- elements ---------------------------------------------------------------

const el = {
  roomID: $('room-id'),
  status: $('status'),
  statusText: $('status-text'),
  reconnectNow: $('reconnect-now'),
  shareLink: $('share-link'),
  copyLink: $('copy-link'),
  copyStatus: $('copy-status'),
  myName: $('my-name'),
  changeName: $('change-name'),
  errorBar: $('error-bar'),
  error: $('error'),
  errorDismiss: $('error-dismiss'),
  messages: $('messages'),
  typing: $('typing'),
  composer: $('composer'),
  input: $('message-input'),
  charCount: $('char-count'),
  send: $('send'),
  membersPanel: $('members-panel'),
  membersToggle: $('members-toggle'),
  members: $('members'),
  memberCount: $('member-count'),
  nameDialog: $('name-dialog'),
  nameForm: $('name-form'),
  nameInput: $('name-input'),
  nameError: $('name-error'),
  nameSkip: $('name-skip'),
  modPanel: $('mod-panel'),
  postPolicy: $('post-policy'),
  modLink: $('mod-link'),
  copyModLink: $('copy-mod-link'),
  modStatus: $('mod-status'),
  mutedNote: $('muted-note'),
  replacedBar: $('replaced-bar'),
  useHere: $('use-here'),
};

// The outbox holds our pending and failed messages, always at the bottom of
// the message list.
const outboxEl = document.createElement('div');
outboxEl.className = 'outbox';
el.messages.append(outboxEl);

// ---- state ------------------------------------------------------------------

const roomID = roomIDFromPath(location.pathname);
let limits = { ...DEFAULT_LIMITS };
const me = { userID: '', name: '' };
let joined = false; // in the room on the current connection
let everJoined = false;
let epoch = null; // epoch of the room history we render; '' = room had none yet
let joinInFlightForEpoch = false;
let lastSeq = 0; // highest seq rendered
const rendered = new Map(); // seq → message element
const joinRequests = new Map(); // join envelope id → since sent (or null)
// catchup is non-null while we page through missed messages on this
// connection: {target: joined.lastSeq, reqID: id of the history request in
// flight ('' while none), buffer: Map seq → live msg held back, retryTimer}.
let catchup = null;
let nameDecided = false;
let roomFullTimer = 0;
const members = new Map(); // userID → name
let memberCount = 0;
const outbox = []; // {cid, text, el, state: 'queued'|'sent'|'failed', firstSentAt, userID}
const typers = new Map(); // userID → {name, timer}
let lastTypingSent = 0;
// typingRefused: the room's policy refused our typing notice (SPEC §9
// typing = false); none is sent again until the next join.
let typingRefused = false;
let unread = 0;
let statusTimer = 0;
// Moderation (SPEC §11). ownerKey is this room's owner key, kept in
// localStorage from create or a moderator link; with it we join as the
// room's owner and show the moderation tools. removed is set when a
// moderator put us out of the room ({banned, until}): we do not join
// again by ourselves. mutedUntil is a Date, or true for until lifted.
let ownerKey = '';
let removed = null;
let mutedUntil = null;
let muteTimer = 0;
// postRule is the room's post rule in force (joined.post, then
// configured): 'moderators' disables the composer of a member below
// moderator, 'api' everyone's (only the HTTP API posts); '' while every
// member may post.
let postRule = '';
const MOD_TEXT = 'removed by a moderator';

const conn = new Connection();

// ---- start ------------------------------------------------------------------

function roomIDFromPath(path) {
  const m = /^\/r\/([^/]*)\/?$/.exec(path);
  if (!m) return '';
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return '';
  }
}

function init() {
  const problem = checkRoomID(roomID);
  el.roomID.textContent = roomID || '?';
  if (problem) {
    document.title = 'roomchat · no such room';
    showError(`This address does not name a valid room. ${problem} Go back to the start page to create or join a room.`);
    setStatus('offline', 'Not connected');
    el.input.disabled = true;
    el.send.disabled = true;
    el.changeName.disabled = true;
    return;
  }
  updateTitle();
  takeOwnerKey();
  el.shareLink.value = roomURL(roomID);
  el.copyLink.addEventListener('click', () => copyText(el.shareLink, el.copyStatus));
  el.reconnectNow.addEventListener('click', () => conn.reconnectNow());
  el.errorDismiss.addEventListener('click', clearError);
  el.changeName.addEventListener('click', () => openNameDialog(true));
  el.nameForm.addEventListener('submit', onNameSubmit);
  el.nameSkip.addEventListener('click', onNameSkip);
  el.nameDialog.addEventListener('cancel', (ev) => {
    ev.preventDefault();
    onNameSkip();
  });
  el.composer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendFromInput();
  });
  el.input.addEventListener('keydown', onInputKey);
  // Some input paths (IMEs, automation sending a separate "char" event)
  // insert the newline through keypress even when keydown was cancelled.
  el.input.addEventListener('keypress', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) ev.preventDefault();
  });
  el.input.addEventListener('input', onInput);
  el.membersToggle.addEventListener('click', toggleMembers);
  el.postPolicy.addEventListener('change', () => moderate('configure', { post: el.postPolicy.value }));
  el.copyModLink.addEventListener('click', () => copyText(el.modLink, el.modStatus));
  el.members.addEventListener('keydown', onMenuKey);
  el.useHere.addEventListener('click', () => conn.takeOver());
  document.addEventListener('click', (ev) => {
    if (!ev.target.closest?.('.mod-menu, .mod-toggle')) closeMenus(false);
  });
  document.addEventListener('visibilitychange', onVisibility);

  const stored = storageGet('localStorage', NAME_KEY);
  me.name = stored || '';
  renderMyName();
  if (stored || storageGet('localStorage', NAME_SKIPPED_KEY) === '1') {
    nameDecided = true;
  } else {
    openNameDialog(false);
  }

  conn.addEventListener('state', (ev) => onConnState(ev.detail));
  conn.addEventListener('message', (ev) => onEvent(ev.detail.event));
  conn.addEventListener('close', (ev) => onClose(ev.detail));
  conn.addEventListener('auth', (ev) => onAuth(ev.detail));
  takeToken();
  conn.start();
  setInterval(expireUnconfirmed, 5000);
  updateCharCount();

  // A handle for browser tests and for debugging from the console.
  globalThis.roomchat = Object.freeze({
    conn,
    get roomID() {
      return roomID;
    },
    get lastSeq() {
      return lastSeq;
    },
    get userID() {
      return me.userID;
    },
    get joined() {
      return joined;
    },
    get catchingUp() {
      return catchup !== null;
    },
    get moderator() {
      return ownerKey !== '';
    },
    get postRule() {
      return postRule;
    },
  });
}

// ---- connection -------------------------------------------------------------

function onConnState({ state, retryAt }) {
  clearInterval(statusTimer);
  el.reconnectNow.hidden = !(state === 'waiting' || state === 'offline');
  showReplaced(state === 'replaced');
  switch (state) {
    case 'connecting':
      setStatus('connecting', everJoined ? 'Reconnecting…' : 'Connecting…');
      break;
    case 'open':
      setStatus('connecting', nameDecided ? 'Joining the room…' : 'Connected. Choose a name to join.');
      break;
    case 'waiting': {
      const tick = () => {
        const s = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
        setStatus('reconnecting', `Disconnected. Reconnecting in ${s} s…`);
      };
      tick();
      statusTimer = setInterval(tick, 250);
      break;
    }
    case 'offline':
      setStatus('offline', 'Offline. Waiting for the network…');
      break;
    case 'replaced':
      setStatus('offline', 'Not connected: this room is open in another tab or window.');
      break;
    default:
      break;
  }
}

// showReplaced puts the "open in another tab or window" notice, with its
// "Use here" button, in place of the composer (on), or the composer back
// (off). Another tab, window or roomchat CLI of the same signed identity
// holds the connection (SPEC §10: one per identity); Use here takes it
// back. The focus follows when it was in what is hidden.
function showReplaced(on) {
  if (el.replacedBar.hidden === !on) return;
  const focusIn = (on ? el.composer : el.replacedBar).contains(document.activeElement);
  el.replacedBar.hidden = !on;
  el.composer.hidden = on;
  if (focusIn) (on ? el.useHere : el.input).focus();
}

// onAuth tells the user what became of their token (SPEC §10).
function onAuth({ what }) {
  if (what === 'expired') {
    showError('Your sign-in expired. Reload the page with a new token to keep chatting; the server disconnects you shortly.');
  } else if (what === 'refused') {
    el.reconnectNow.hidden = true;
    setStatus('offline', 'Not connected: your token was not accepted.');
    showError('Could not connect with your token: it was refused or has expired. Reload the page with a new token.');
  } else if (what === 'renewed') {
    if (/sign-in expired/.test(el.error.textContent)) clearError();
  }
}

function setStatus(state, text) {
  // #status is a live region: write only changes, so that a screen reader
  // does not hear the same sentence again every tick.
  if (el.status.dataset.state !== state) el.status.dataset.state = state;
  if (el.statusText.textContent !== text) el.statusText.textContent = text;
}

function onClose({ code }) {
  joined = false;
  joinRequests.clear();
  // What the buffer held comes again: the next join asks since lastSeq.
  stopCatchup();
  clearTimeout(roomFullTimer);
  clearTypers();
  for (const item of outbox) if (item.state === 'sent' || item.state === 'queued') markQueued(item);
  if (code === CLOSE.POLICY) {
    showError('The server disconnected you for sending too many messages. Reconnecting shortly…');
  } else if (code === CLOSE.TOO_BIG) {
    // The frame that was too big is the last one we sent; sending it again
    // would only repeat this.
    const last = [...outbox].reverse().find((i) => i.state !== 'failed' && i.firstSentAt);
    if (last) markFailed(last, 'The server refused it as too big.');
    showError('A message was too big for the server, which closed the connection. Reconnecting…');
  }
}

// ---- events from the server -------------------------------------------------

function onEvent(ev) {
  if (!ev || typeof ev.type !== 'string') return;
  const p = ev.payload || {};
  switch (ev.type) {
    case 'welcome':
      onWelcome(p);
      break;
    case 'joined':
      onJoined(ev.id, p);
      break;
    case 'msg':
      if (p.roomID !== roomID) break;
      if (catchup) catchup.buffer.set(p.seq, p);
      else onMsg(p, true);
      break;
    case 'history':
      onHistory(ev.id, p);
      break;
    case 'ack':
      onAck(ev.id, p);
      break;
    case 'presence':
      if (p.roomID === roomID) onPresence(p);
      break;
    case 'typing':
      if (p.roomID === roomID) onTyping(p);
      break;
    case 'error':
      onError(ev.id, p);
      break;
    case 'kicked':
      if (p.roomID === roomID) onKicked(p);
      break;
    case 'muted':
      if (p.roomID === roomID) onMuted(p);
      break;
    case 'configured':
      if (p.roomID === roomID) onConfigured(p);
      break;
    case 'done':
      if (p.roomID === roomID) onDone(p);
      break;
    default:
      break; // pong, left, created, custom events: nothing to show
  }
}

function onWelcome(p) {
  if (p.limits && typeof p.limits === 'object') {
    for (const k of Object.keys(DEFAULT_LIMITS)) {
      if (Number.isInteger(p.limits[k]) && p.limits[k] > 0) limits[k] = p.limits[k];
    }
  }
  updateCharCount();
  if (p.userID) me.userID = p.userID;
  // welcome.name is the token's name claim or else a default name; only a
  // claim fixes it, so the page looks at its own token to know which.
  if (typeof p.name === 'string' && p.name && tokenHasName(conn.token())) takeFixedName(p.name);
  if (nameDecided && !removed) sendJoin();
}

// tokenHasName reports whether the JWT token carries a name claim. The
// page only reads its own token here; the server verifies it.
function tokenHasName(token) {
  const part = token.split('.')[1];
  if (!part) return false;
  try {
    const bytes = Uint8Array.from(atob(part.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims?.name === 'string' && claims.name !== '';
  } catch {
    return false;
  }
}

// takeFixedName uses the name of a signed identity (SPEC §10: a token's
// name claim fixes it, and the server ignores any other): the page does not
// ask for a name, nor offer to change it.
function takeFixedName(name) {
  const asking = el.nameDialog.open;
  if (asking) el.nameDialog.close();
  el.changeName.hidden = true;
  me.name = name;
  renderMyName();
  nameDecided = true;
  if (asking) el.input.focus();
}

// sendJoin joins (or re-joins) the room. fresh asks for recent history
// instead of everything after our last seq.
function sendJoin(fresh = false) {
  clearTimeout(roomFullTimer);
  const id = `join-${newID(10)}`;
  const payload = { roomID };
  if (me.name) payload.name = me.name;
  if (ownerKey) payload.key = ownerKey;
  // since: everything after the last message we rendered. Only meaningful
  // while we hold the same history (epoch); a first join gets recent history.
  const since = epoch !== null && !fresh ? lastSeq : null;
  if (since !== null) payload.since = since;
  if (conn.send({ type: 'join', id, payload })) {
    joinRequests.set(id, since);
    if (conn.state === 'open') setStatus('connecting', 'Joining the room…');
  }
}

function onJoined(id, p) {
  if (p.roomID !== roomID) return;
  const since = joinRequests.has(id) ? joinRequests.get(id) : null;
  joinRequests.delete(id);
  typingRefused = false; // a reload of the policy may have turned typing on

  if (p.you) {
    me.userID = p.you.userID || me.userID;
    me.name = p.you.name || me.name;
    renderMyName();
  }

  joinInFlightForEpoch = false;
  // Live messages held back by a catch-up on this connection are still good
  // (a re-join of a room one is in goes on from where the last one ended).
  const held = catchup ? catchup.buffer : new Map();
  stopCatchup();
  if (historyReset(p)) {
    // The room's stored history was lost or reset: our seqs mean nothing
    // now. Start the list over.
    clearMessages();
    held.clear();
    epoch = p.epoch;
    addNotice('The room’s history was reset on the server; showing it afresh.');
    if (since !== null) {
      // Our since referred to the old history; ask again for recent history.
      sendJoin(true);
      return;
    }
  }
  epoch = p.epoch ?? '';

  if (p.truncated) addNotice('Some messages are no longer available.');

  const history = Array.isArray(p.history) ? p.history : [];
  renderPage(history);
  settleAfterIdentityChange(history);

  members.clear();
  for (const u of Array.isArray(p.members) ? p.members : []) members.set(u.userID, u.name);
  if (me.userID) members.set(me.userID, me.name);
  memberCount = Number.isInteger(p.count) ? p.count : members.size;
  renderMembers();
  setPostRule(typeof p.post === 'string' ? p.post : '');

  joined = true;
  everJoined = true;
  conn.resetBackoff();
  el.reconnectNow.hidden = true;
  if (p.more === true && !(Number.isInteger(p.lastSeq) && lastSeq >= p.lastSeq)) {
    catchup = { target: Number.isInteger(p.lastSeq) ? p.lastSeq : Infinity, reqID: '', buffer: held, retryTimer: 0 };
    setStatus('connecting', 'Catching up on missed messages…');
    requestPage();
    return;
  }
  finishJoin(held);
}

// finishJoin shows the live messages held back while catching up, then
// says we are connected and sends what waits in the outbox.
function finishJoin(held) {
  if (held.size) {
    const stick = nearBottom();
    for (const seq of [...held.keys()].sort((a, b) => a - b)) {
      // A message under a seq we show with another id resets the list and
      // re-joins; the new joined takes over from there.
      if (!onMsg(held.get(seq), true, false)) return;
    }
    if (stick) scrollToBottom();
  }
  setStatus('connected', 'Connected');
  flushOutbox();
}

// requestPage asks for the page of stored messages after the last seq shown.
function requestPage() {
  if (!catchup) return;
  const id = `history-${newID(10)}`;
  const payload = { roomID, after: lastSeq, limit: limits.maxPage };
  if (!conn.send({ type: 'history', id, payload })) return; // onClose follows
  catchup.reqID = id;
}

function onHistory(id, p) {
  if (!catchup || !id || id !== catchup.reqID || p.roomID !== roomID) return;
  catchup.reqID = '';
  const before = lastSeq;
  const page = Array.isArray(p.messages) ? p.messages : [];
  renderPage(page);
  if (!catchup) return; // the page showed a history reset; a fresh join follows
  settleAfterIdentityChange(page);
  // Done when we reached the joined's last seq, when the server has no
  // more, or (defensively) when a page brought nothing new.
  if (lastSeq >= catchup.target || p.more !== true || lastSeq <= before) {
    const held = catchup.buffer;
    stopCatchup();
    finishJoin(held);
    return;
  }
  requestPage();
}

// onHistoryError handles an error answering our history request: passing
// trouble is retried, a lost membership re-joins (since lastSeq), anything
// else gives up on the rest of the gap with a notice.
function onHistoryError(p) {
  catchup.reqID = '';
  switch (p.code) {
    case 'rate_limited':
    case 'store_unavailable':
    case 'internal':
    case 'shutting_down':
      catchup.retryTimer = setTimeout(requestPage, HISTORY_RETRY_MS);
      return;
    case 'not_in_room':
      stopCatchup();
      joined = false;
      sendJoin();
      return;
    default: {
      const held = catchup.buffer;
      stopCatchup();
      addNotice('Some missed messages could not be loaded.');
      finishJoin(held);
    }
  }
}

function stopCatchup() {
  if (!catchup) return;
  clearTimeout(catchup.retryTimer);
  catchup = null;
}

// renderPage shows stored messages (joined.history or a history page),
// keeping the list scrolled to the bottom if it was there before.
function renderPage(msgs) {
  if (!msgs.length) return;
  const stick = nearBottom();
  for (const m of msgs) {
    if (!onMsg(m, false, false)) break; // a history reset cleared the list
  }
  if (stick) scrollToBottom();
}

// historyReset reports whether a joined reply shows that the history we
// render is not the room's any more: a different epoch; no epoch although we
// saw messages; or a last seq below ours. A room that had no history when we
// joined has the epoch "", and getting its first real epoch is no reset
// (onMsg asks for it as soon as the first message arrives).
function historyReset(p) {
  if (epoch === null) return false;
  const got = p.epoch ?? '';
  if (epoch !== '' && got !== epoch) return true;
  if (epoch === '' && got === '' && lastSeq > 0) return true;
  return Number.isInteger(p.lastSeq) && p.lastSeq < lastSeq;
}

// onMsg shows one message unless its seq is already shown. scroll false
// leaves scrolling to the caller (a page of messages scrolls once). It
// returns false when the message showed that the room's history was reset,
// which cleared the list.
function onMsg(m, live, scroll = true) {
  if (!m || !Number.isInteger(m.seq)) return true;
  if (renderTimer !== null) flushRender();
  const existing = rendered.get(m.seq);
  if (existing && m.id && existing.dataset.id && existing.dataset.id !== m.id) {
    // Another message under a seq we already show: the server's history was
    // reset while we were connected. Start over with recent history.
    clearMessages();
    addNotice('The room’s history was reset on the server; showing it afresh.');
    if (joined) sendJoin(true);
    return false;
  }
  if (live && joined && epoch === '' && !joinInFlightForEpoch) {
    // We joined an empty room, so we hold no epoch yet. Join again (a
    // member's re-join is silent) to learn it while it is certainly current.
    joinInFlightForEpoch = true;
    sendJoin();
  }
  if (existing) {
    // Already shown (from history, or confirmed by its ack first): fill in
    // the server's time and name, nothing else.
    if (existing.classList.contains('local')) {
      fillMessage(existing, m);
      existing.classList.remove('local');
    }
    return true;
  }
  const from = m.from || {};
  const node = document.createElement('div');
  node.className = 'message';
  fillMessage(node, m);
  if (from.userID && from.userID === me.userID) node.classList.add('mine');
  insertBySeq(node, m.seq, scroll);
  if (Number.isInteger(m.redacts)) {
    const target = rendered.get(m.redacts);
    if (target) markRemoved(target);
  }
  if (live && from.userID !== me.userID) {
    dropTyper(from.userID);
    if (document.visibilityState === 'hidden') {
      unread++;
      updateTitle();
    }
  }
  return true;
}

// fillMessage (re)writes a message element from a msg payload.
function fillMessage(node, m) {
  const from = m.from || {};
  node.dataset.seq = String(m.seq);
  if (m.id) node.dataset.id = m.id;
  node.replaceChildren();
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from.name || 'unknown';
  const time = document.createElement('time');
  time.className = 'time';
  const t = formatTime(m.ts);
  if (m.ts) time.dateTime = m.ts;
  time.textContent = t.short;
  time.title = t.long;
  meta.append(who, ' ', time);
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = typeof m.message === 'string' ? m.message : '';
  node.append(meta, text);
  if (Number.isInteger(m.redacts) && m.redacts > 0) {
    // A redaction (SPEC §11): a room event of its own, shown as a line.
    node.classList.add('redaction');
    node.dataset.redacts = String(m.redacts);
    text.textContent = `${from.name || 'A moderator'} removed a message.`;
    return;
  }
  if (m.redacted && typeof m.redacted === 'object') {
    markRemoved(node);
    return;
  }
  addRemoveButton(node);
}

// markRemoved shows a message whose text a redaction removed.
function markRemoved(node) {
  node.classList.add('removed');
  node.querySelector('.text').textContent = MOD_TEXT;
  node.querySelector('.mod-remove')?.remove();
}

// addRemoveButton gives a message its moderator action, for moderators.
function addRemoveButton(node) {
  if (!ownerKey || node.querySelector('.mod-remove') || node.classList.contains('removed')) return;
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'mod-remove small';
  b.textContent = 'Remove';
  const who = node.querySelector('.from')?.textContent || 'someone';
  b.setAttribute('aria-label', `Remove this message from ${who}`);
  b.addEventListener('click', () => {
    const seq = Number(node.dataset.seq);
    if (Number.isInteger(seq) && seq > 0) moderate('redact', { seq });
  });
  node.querySelector('.meta').append(b);
}

function insertBySeq(node, seq, scroll = true) {
  const stick = scroll && nearBottom();
  if (seq > lastSeq) {
    el.messages.insertBefore(node, outboxEl);
    lastSeq = seq;
  } else {
    let before = outboxEl;
    for (const [s, n] of rendered) {
      if (s > seq && n.isConnected && (before === outboxEl || s < Number(before.dataset.seq))) before = n;
    }
    el.messages.insertBefore(node, before);
  }
  rendered.set(seq, node);
  if (stick) scrollToBottom();
}

function clearMessages() {
  stopCatchup();
  for (const child of [...el.messages.children]) if (child !== outboxEl) child.remove();
  rendered.clear();
  lastSeq = 0;
}

function addNotice(text) {
  if (renderTimer !== null) flushRender();
  appendNotice(text);
}

function appendNotice(text) {
  const stick = nearBottom();
  const n = document.createElement('div');
  n.className = 'notice';
  n.textContent = text;
  el.messages.insertBefore(n, outboxEl);
  if (stick) scrollToBottom();
}

// A room under a flood of connections can bring hundreds of presence
// events a second. Each updates the page's state at once; the member list
// and the join/leave notices are redrawn at most every RENDER_MS, one
// notice per kind of change in the order the kinds first came ("Alice
// left the room." then "Alice, Bob and 3 others joined the room."). Any
// other notice or message flushes what is pending first, so notices keep
// their place. The typing line is cheap and redrawn at once.
const RENDER_MS = 100;
let renderTimer = null;
let pendingNotices = []; // {verb, names (the first two), n}, in order of first arrival

function scheduleRender() {
  if (renderTimer === null) renderTimer = setTimeout(flushRender, RENDER_MS);
}

function flushRender() {
  clearTimeout(renderTimer);
  renderTimer = null;
  const pending = pendingNotices;
  pendingNotices = [];
  for (const pn of pending) {
    const [a, b] = pn.names;
    let who = a;
    if (pn.n === 2) who = `${a} and ${b}`;
    else if (pn.n === 3) who = `${a}, ${b} and 1 other`;
    else if (pn.n > 3) who = `${a}, ${b} and ${pn.n - 2} others`;
    appendNotice(`${who} ${pn.verb} the room.`);
  }
  renderMembers();
}

function noticeLater(verb, name) {
  let pn = pendingNotices.find((p) => p.verb === verb);
  if (!pn) {
    pn = { verb, names: [], n: 0 };
    pendingNotices.push(pn);
  }
  if (pn.names.length < 2) pn.names.push(name || 'Someone');
  pn.n++;
}

function onPresence(p) {
  const u = p.user || {};
  if (p.event === 'join') {
    members.set(u.userID, u.name);
    noticeLater('joined', u.name);
  } else if (p.event === 'leave') {
    members.delete(u.userID);
    dropTyper(u.userID);
    noticeLater('left', u.name);
  }
  memberCount = Number.isInteger(p.count) ? p.count : members.size;
  scheduleRender();
}

function onTyping(p) {
  const u = p.user || {};
  if (!u.userID || u.userID === me.userID) return;
  const old = typers.get(u.userID);
  if (old) clearTimeout(old.timer);
  typers.set(u.userID, {
    name: u.name || 'Someone',
    timer: setTimeout(() => dropTyper(u.userID), TYPING_SHOW_MS),
  });
  renderTyping();
}

function dropTyper(userID) {
  const t = typers.get(userID);
  if (!t) return;
  clearTimeout(t.timer);
  typers.delete(userID);
  renderTyping();
}

function clearTypers() {
  for (const t of typers.values()) clearTimeout(t.timer);
  typers.clear();
  renderTyping();
}

function renderTyping() {
  const names = [...typers.values()].map((t) => t.name);
  let s = '';
  if (names.length === 1) s = `${names[0]} is typing…`;
  else if (names.length === 2) s = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) s = `${names.length} people are typing…`;
  el.typing.textContent = s;
}

function renderMembers() {
  const list = [...members.entries()].sort(([a, an], [b, bn]) => {
    if (a === me.userID) return -1;
    if (b === me.userID) return 1;
    return String(an).localeCompare(String(bn));
  });
  el.members.replaceChildren(
    ...list.map(([id, name]) => {
      const li = document.createElement('li');
      li.className = 'member';
      li.dataset.userId = id;
      li.textContent = name || 'unknown';
      if (id === me.userID) {
        li.classList.add('me');
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = ' (you)';
        li.append(you);
      } else if (ownerKey && id) {
        li.append(memberMenu(id, name || 'unknown'));
      }
      return li;
    }),
  );
  // joined.members lists at most 100 members (SPEC §4) while count is
  // exact; presence events keep both up to date, so the difference is
  // always the members we cannot name.
  const more = memberCount - list.length;
  if (more > 0) {
    const li = document.createElement('li');
    li.id = 'members-more';
    li.className = 'more';
    li.textContent = `and ${more} more`;
    el.members.append(li);
  }
  el.memberCount.textContent = String(memberCount);
}

function onError(id, p) {
  if (catchup && id && id === catchup.reqID) {
    onHistoryError(p);
    return;
  }
  if (id && id.startsWith(TYPING_ID)) {
    // A typing notice is a courtesy that the user did not ask for: never an
    // error sentence. Where the room turns them off, stop sending them.
    if (p.code === 'forbidden') typingRefused = true;
    return;
  }
  const sentence = errorSentence(p.code, p.message, p.field);
  const item = id && outbox.find((i) => i.cid === id);
  if (item) {
    if (p.code === 'not_in_room' || p.code === 'room_required') {
      // We lost our membership (the server forgot us): join again; the
      // message goes out once we are back in.
      markQueued(item);
      joined = false;
      if (joinRequests.size === 0) sendJoin();
      return;
    }
    markFailed(item, sentence);
    showError(sentence);
    return;
  }
  if (id && joinRequests.has(id)) {
    joinRequests.delete(id);
    if (p.code === 'banned') {
      // The server's sentence says until when (SPEC §11). Knocking again
      // would only be refused: stay out until the user reloads.
      removed = { banned: true };
      setStatus('offline', 'Banned from this room');
      setComposerEnabled();
      showError(`You are banned from this room: ${p.message || 'a moderator banned you'}.`);
      return;
    }
    if (p.code === 'forbidden' && ownerKey && /key/i.test(p.message || '')) {
      // The stored owner key is not (or no longer) this room's: forget it
      // and join as a member.
      setOwnerKey('');
      showError('The moderator key for this room was not accepted; you joined as a member.');
      sendJoin();
      return;
    }
    if (p.code === 'bad_payload' && (p.field === 'name' || /name/i.test(p.message || ''))) {
      // The remembered name is not acceptable to this server: forget it and
      // join with the server's default.
      storageSet('localStorage', NAME_KEY, null);
      me.name = '';
      renderMyName();
      showError(`Your name was not accepted (${p.message || 'invalid name'}); you joined with a guest name instead.`);
      sendJoin();
      return;
    }
    if (p.code === 'rate_limited' && p.field === 'roomID') {
      const wait = ROOM_BUSY_RETRY_MS + Math.random() * ROOM_BUSY_RETRY_MS;
      setStatus('reconnecting', 'Many people are joining this room; trying again shortly…');
      roomFullTimer = setTimeout(() => {
        if (conn.isOpen()) sendJoin();
      }, wait);
      return;
    }
    if (p.code === 'room_full') {
      showError(`${sentence} Trying again in ${ROOM_FULL_RETRY_MS / 1000} seconds.`);
      setStatus('reconnecting', 'Room is full. Trying again shortly…');
      roomFullTimer = setTimeout(() => {
        if (conn.isOpen()) sendJoin();
      }, ROOM_FULL_RETRY_MS);
      return;
    }
  }
  showError(sentence);
}

function errorSentence(code, message, field) {
  switch (code) {
    case 'rate_limited':
      // field roomID: the room as a whole is over its budget, not this
      // client.
      if (field === 'roomID') return 'This room is very busy right now, so that was not sent. Try again in a moment.';
      return 'You are sending messages too fast. Wait a moment, then try again.';
    case 'too_long':
      return `That message is too long: the limit is ${limits.maxMessage} characters.`;
    case 'room_full':
      return 'This room is full.';
    case 'store_unavailable':
      return 'The server cannot save messages right now, so your message was not sent. Try again shortly.';
    case 'bad_payload':
      return `The server did not accept that: ${message || 'invalid request'}.`;
    case 'not_in_room':
      return 'You are not in this room any more.';
    case 'forbidden':
      return `Not allowed: ${message || 'the room’s policy refused that'}.`;
    case 'unknown_namespace':
      return `This server has no such namespace: ${message || 'unknown namespace'}.`;
    case 'unauthorized':
      return `Your token was not accepted: ${message || 'unauthorized'}.`;
    case 'muted':
      return `You are muted in this room: ${message || 'a moderator muted you'}.`;
    case 'banned':
      return `You are banned from this room: ${message || 'a moderator banned you'}.`;
    case 'not_found':
      return `Not found: ${message || 'nothing to act on'}.`;
    case 'internal':
      return 'The server ran into a problem. Try again.';
    default:
      return `Something went wrong talking to the server (${code || 'unknown error'}${message ? `: ${message}` : ''}).`;
  }
}

function showError(sentence) {
  el.error.textContent = sentence;
  el.errorBar.hidden = false;
}

function clearError() {
  el.error.textContent = '';
  el.errorBar.hidden = true;
  el.input.focus();
}

// ---- sending ----------------------------------------------------------------

function onInputKey(ev) {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
    ev.preventDefault();
    sendFromInput();
  }
}

function onInput() {
  updateCharCount();
  const now = Date.now();
  if (joined && !typingRefused && el.input.value.trim() !== '' && now - lastTypingSent >= TYPING_SEND_MS) {
    // The id lets onError tell a refused typing notice from other errors.
    if (conn.send({ type: 'typing', id: `${TYPING_ID}${newID(10)}`, payload: { roomID } })) lastTypingSent = now;
  }
}

function updateCharCount() {
  const n = messageLength(el.input.value);
  const max = limits.maxMessage;
  el.charCount.classList.toggle('over', n > max);
  if (n > max) {
    el.charCount.textContent = `${n - max} characters over the ${max} limit`;
    el.input.setAttribute('aria-invalid', 'true');
  } else if (n >= max * 0.9) {
    el.charCount.textContent = `${n} / ${max}`;
    el.input.removeAttribute('aria-invalid');
  } else {
    el.charCount.textContent = '';
    el.input.removeAttribute('aria-invalid');
  }
}

function sendFromInput() {
  const text = el.input.value;
  const n = messageLength(text);
  if (n === 0) return;
  if (n > limits.maxMessage) {
    showError(`That message is ${n} characters long; the limit is ${limits.maxMessage}. Shorten it, then send.`);
    return;
  }
  const item = { cid: newID(), text, el: null, state: 'queued', firstSentAt: 0, userID: '' };
  item.el = pendingElement(item);
  outbox.push(item);
  outboxEl.append(item.el);
  scrollToBottom();
  el.input.value = '';
  updateCharCount();
  lastTypingSent = 0;
  trySend(item);
}

function pendingElement(item) {
  const node = document.createElement('div');
  node.className = 'message mine pending';
  node.dataset.clientId = item.cid;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = me.name || 'you';
  const time = document.createElement('time');
  time.className = 'time';
  const now = new Date();
  const t = formatTime(now);
  time.dateTime = now.toISOString();
  time.textContent = t.short;
  time.title = t.long;
  const state = document.createElement('span');
  state.className = 'state';
  meta.append(who, ' ', time, ' ', state);
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = item.text;
  node.append(meta, text);
  return node;
}

function setItemState(item, state, label) {
  item.state = state;
  item.el.classList.toggle('pending', state !== 'failed');
  item.el.classList.toggle('failed', state === 'failed');
  item.el.querySelector('.state').textContent = label;
  const actions = item.el.querySelector('.actions');
  if (actions) actions.remove();
}

function markQueued(item) {
  setItemState(item, 'queued', joined ? 'Waiting for missed messages to load…' : 'Waiting for connection…');
}

function markFailed(item, reason) {
  setItemState(item, 'failed', `Not sent. ${reason}`);
  const actions = document.createElement('div');
  actions.className = 'actions';
  const retry = document.createElement('button');
  retry.type = 'button';
  retry.className = 'retry small';
  retry.textContent = 'Retry';
  retry.addEventListener('click', () => {
    // A fresh id: the failed attempt was not stored (or is past the server's
    // de-duplication window), so this is a new message.
    item.cid = newID();
    item.el.dataset.clientId = item.cid;
    item.firstSentAt = 0;
    trySend(item);
    el.input.focus();
  });
  const discard = document.createElement('button');
  discard.type = 'button';
  discard.className = 'discard small';
  discard.textContent = 'Delete';
  discard.addEventListener('click', () => {
    removeItem(item);
    el.input.focus();
  });
  actions.append(retry, discard);
  item.el.append(actions);
}

function trySend(item) {
  if (joined && !catchup && conn.send({ type: 'msg', id: item.cid, payload: { roomID, message: item.text } })) {
    if (!item.firstSentAt) item.firstSentAt = Date.now();
    item.userID = me.userID;
    setItemState(item, 'sent', 'Sending…');
  } else {
    markQueued(item);
  }
}

function flushOutbox() {
  for (const item of [...outbox]) if (item.state !== 'failed') trySend(item);
}

function onAck(id, p) {
  const item = outbox.find((i) => i.cid === id);
  if (!item || !Number.isInteger(p.seq)) return;
  removeItem(item);
  const shown = rendered.get(p.seq);
  // Its msg event came first (same server message id): already on screen.
  if (shown && (!p.msgID || !shown.dataset.id || shown.dataset.id === p.msgID)) return;
  // The ack came first: the message is confirmed; show it in its place and
  // let the msg event fill in the server's timestamp.
  const node = item.el;
  node.classList.remove('pending', 'failed');
  node.classList.add('local');
  node.querySelector('.state')?.remove();
  delete node.dataset.clientId;
  node.dataset.seq = String(p.seq);
  if (p.msgID) node.dataset.id = p.msgID;
  insertBySeq(node, p.seq);
}

function removeItem(item) {
  const i = outbox.indexOf(item);
  if (i >= 0) outbox.splice(i, 1);
  item.el.remove();
}

// settleAfterIdentityChange handles messages sent, but not acknowledged, on a
// connection whose userID we no longer have (the resume token expired). The
// server's de-duplication is per user, so re-sending could store them twice:
// if the replayed history holds the same text from our old userID, the
// message did arrive.
function settleAfterIdentityChange(history) {
  for (const item of [...outbox]) {
    if (item.state !== 'sent' || !item.userID || item.userID === me.userID) continue;
    const hit = history.find((m) => m.from && m.from.userID === item.userID && m.message === item.text);
    if (hit) removeItem(item);
  }
}

function expireUnconfirmed() {
  const now = Date.now();
  for (const item of outbox) {
    if (item.state !== 'failed' && item.firstSentAt && now - item.firstSentAt > UNCONFIRMED_MS) {
      markFailed(item, 'The server never confirmed it.');
    }
  }
}

// ---- name -------------------------------------------------------------------

let changingName = false;

function openNameDialog(change) {
  changingName = change;
  el.nameInput.value = me.name || '';
  el.nameError.textContent = '';
  el.nameSkip.textContent = change ? 'Cancel' : 'Skip';
  if (!el.nameDialog.open) el.nameDialog.showModal();
  el.nameInput.focus();
  el.nameInput.select();
}

function onNameSubmit(ev) {
  ev.preventDefault();
  const r = cleanName(el.nameInput.value, limits.maxName);
  if (r.error) {
    el.nameError.textContent = r.error;
    el.nameInput.setAttribute('aria-invalid', 'true');
    el.nameInput.focus();
    return;
  }
  el.nameInput.removeAttribute('aria-invalid');
  storageSet('localStorage', NAME_KEY, r.name);
  el.nameDialog.close();
  const changed = r.name !== me.name;
  me.name = r.name;
  renderMyName();
  decideName(changed);
}

function onNameSkip() {
  el.nameDialog.close();
  if (!changingName) storageSet('localStorage', NAME_SKIPPED_KEY, '1');
  decideName(false);
}

function decideName(changed) {
  const wasDecided = nameDecided;
  nameDecided = true;
  el.input.focus();
  if (!conn.isOpen()) return; // the next welcome joins
  if (!wasDecided) {
    sendJoin();
  } else if (changed && (joined || joinRequests.size > 0)) {
    // A re-join of a room one is in keeps the old name, so leave and come
    // back under the new one; since keeps the history seamless.
    joined = false;
    // The leave ends this membership; the new join pages on from lastSeq.
    stopCatchup();
    conn.send({ type: 'leave', payload: { roomID } });
    sendJoin();
    addNotice(`You are now called ${me.name}.`);
  }
}

function renderMyName() {
  el.myName.textContent = me.name || 'a guest';
}

// ---- layout, title ----------------------------------------------------------

function toggleMembers() {
  const open = el.membersPanel.classList.toggle('open');
  el.membersToggle.setAttribute('aria-expanded', String(open));
  el.membersToggle.textContent = open ? 'Hide' : 'Show';
}

function onVisibility() {
  if (document.visibilityState === 'visible' && unread) {
    unread = 0;
    updateTitle();
  }
}

function updateTitle() {
  const base = `roomchat · ${roomID}`;
  document.title = unread ? `(${unread}) ${base}` : base;
}

function nearBottom() {
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToBottom() {
  el.messages.scrollTop = el.messages.scrollHeight;
}

init();

// ---- moderation (SPEC §11) ----------------------------------------------------

// takeOwnerKey reads this room's owner key: from a moderator link's
// fragment (#key=…, which never reaches the server), which it stores and
// then removes from the address bar, or from localStorage.
function takeOwnerKey() {
  const m = /^#key=([^&]+)$/.exec(location.hash);
  if (m) {
    let k = '';
    try {
      k = decodeURIComponent(m[1]);
    } catch {
      k = '';
    }
    if (k) storageSet('localStorage', ownerKeyStorageKey(roomID), k);
    history.replaceState(null, '', location.pathname + location.search);
  }
  setOwnerKey(storageGet('localStorage', ownerKeyStorageKey(roomID)) || '');
}

function setOwnerKey(k) {
  ownerKey = k;
  if (!k) storageSet('localStorage', ownerKeyStorageKey(roomID), null);
  el.modPanel.hidden = !k;
  el.modLink.value = k ? `${roomURL(roomID)}#key=${encodeURIComponent(k)}` : '';
  for (const n of el.messages.querySelectorAll('.message[data-seq]')) {
    if (k && !n.classList.contains('redaction')) addRemoveButton(n);
    else if (!k) n.querySelector('.mod-remove')?.remove();
  }
  renderMembers();
  setComposerEnabled();
}

// moderate sends a moderation frame; the reply is done or an error.
function moderate(type, payload) {
  if (!conn.send({ type, id: `mod-${newID(10)}`, payload: { roomID, ...payload } })) {
    showError('Not connected: try again when the connection is back.');
  }
}

const VERBS = { kick: 'Removed', ban: 'Banned', unban: 'Unbanned', mute: 'Muted', unmute: 'Unmuted' };

function onDone(p) {
  let text = '';
  if (p.action === 'redact') text = 'Message removed.';
  else if (p.action === 'configure') {
    el.postPolicy.value = p.post;
    text = p.post === 'moderators' ? 'Only moderators may post now.' : 'Every member may post now.';
  } else if (VERBS[p.action]) {
    const who = members.get(p.userID) || p.userID || 'the user';
    text = `${VERBS[p.action]} ${who}${p.until ? ` until ${formatTime(p.until).long}` : ''}.`;
  }
  if (text) el.modStatus.textContent = text;
}

// memberMenu is a member's moderation menu: a toggle button and the
// actions, closed by Escape (focus back on the toggle) or a click outside.
function memberMenu(userID, name) {
  const wrap = document.createElement('span');
  wrap.className = 'mod-wrap';
  const toggle = document.createElement('button');
  toggle.type = 'button';
  toggle.className = 'mod-toggle small';
  toggle.textContent = 'Moderate';
  toggle.setAttribute('aria-label', `Moderate ${name}`);
  toggle.setAttribute('aria-expanded', 'false');
  const menu = document.createElement('div');
  menu.className = 'mod-menu';
  menu.setAttribute('role', 'group');
  menu.setAttribute('aria-label', `Actions for ${name}`);
  menu.hidden = true;
  // The reason goes with the action and is shown to the member (SPEC §11
  // kick, ban, mute: reason?), so a banned guest learns why.
  const reason = document.createElement('input');
  reason.type = 'text';
  reason.className = 'mod-reason';
  reason.maxLength = MAX_REASON;
  reason.placeholder = 'Reason (optional)';
  reason.setAttribute('aria-label', `Reason, shown to ${name} (optional)`);
  menu.append(reason);
  const actions = [
    ['Kick', 'kick', ''],
    ['Ban for 10 min', 'ban', '10m'],
    ['Ban for 1 hour', 'ban', '1h'],
    ['Ban forever', 'ban', ''],
    ['Mute for 10 min', 'mute', '10m'],
    ['Unmute', 'unmute', ''],
  ];
  for (const [label, type, dur] of actions) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'small';
    b.dataset.action = type + (dur ? `-${dur}` : '');
    b.textContent = label;
    b.addEventListener('click', () => {
      const payload = { userID };
      if (dur) payload.for = dur;
      const why = reason.value.trim();
      if (why && type !== 'unmute') payload.reason = why;
      moderate(type, payload);
      reason.value = '';
      closeMenus(true);
    });
    menu.append(b);
  }
  toggle.addEventListener('click', () => {
    const open = menu.hidden;
    closeMenus(false);
    if (open) {
      menu.hidden = false;
      toggle.setAttribute('aria-expanded', 'true');
      reason.focus();
    }
  });
  wrap.append(toggle, menu);
  return wrap;
}

// closeMenus closes every member menu; focusToggle puts the focus back on
// the toggle of the menu that was open.
function closeMenus(focusToggle) {
  for (const menu of el.members.querySelectorAll('.mod-menu')) {
    if (menu.hidden) continue;
    menu.hidden = true;
    const toggle = menu.previousElementSibling;
    toggle.setAttribute('aria-expanded', 'false');
    if (focusToggle) toggle.focus();
  }
}

function onMenuKey(ev) {
  if (ev.key === 'Escape' && ev.target.closest('.mod-wrap')) {
    ev.preventDefault();
    closeMenus(true);
  }
}

// onKicked: a moderator put us out of the room. We say why and do not
// join again by ourselves (a ban would refuse it anyway).
function onKicked(p) {
  joined = false;
  removed = { banned: !!p.banned, until: p.until || '' };
  stopCatchup();
  const by = p.by && p.by.name ? ` by ${p.by.name}` : '';
  const why = p.reason ? ` Reason: ${p.reason}.` : '';
  let sentence;
  if (p.banned) {
    const until = p.until ? `until ${formatTime(p.until).long}` : 'until a moderator lifts the ban';
    sentence = `You were banned from this room${by}, ${until}.${why}`;
    setStatus('offline', 'Banned from this room');
  } else {
    sentence = `You were removed from this room${by}.${why} Reload the page to join again.`;
    setStatus('offline', 'Removed from this room');
  }
  members.clear();
  memberCount = 0;
  renderMembers();
  setComposerEnabled();
  showError(sentence);
}

// onMuted disables the composer until the mute ends (or is lifted).
function onMuted(p) {
  clearTimeout(muteTimer);
  if (p.lifted) {
    mutedUntil = null;
  } else if (p.until) {
    mutedUntil = new Date(p.until);
    const ms = mutedUntil.getTime() - Date.now();
    // The server enforces the end on read; re-enable the input then.
    if (ms > 0 && ms < 2 ** 31) {
      muteTimer = setTimeout(() => {
        mutedUntil = null;
        setComposerEnabled();
      }, ms);
    } else if (ms <= 0) mutedUntil = null;
  } else {
    mutedUntil = true;
  }
  setComposerEnabled();
}

// onConfigured: a moderator changed the room's post rule (SPEC §11).
function onConfigured(p) {
  setPostRule(p.post);
  if (ownerKey) {
    const by = p.by && p.by.name ? p.by.name : 'A moderator';
    el.modStatus.textContent = p.post === 'moderators' ? `${by} made posting moderators-only.` : `${by} let every member post.`;
  }
}

function setPostRule(post) {
  postRule = post === 'moderators' || post === 'members' || post === 'api' ? post : '';
  if (postRule === 'moderators' || postRule === 'members') el.postPolicy.value = postRule;
  setComposerEnabled();
}

// mayModerate: this page acts as a moderator or owner of the room, by its
// owner key or its token's rooms claim.
function mayModerate() {
  const role = tokenRole();
  return ownerKey !== '' || role === 'moderator' || role === 'owner';
}

// tokenRole is the role the stored token's rooms claim grants in this
// room (SPEC §10: the exact room, else the longest matching prefix
// ending in *), or '' without one. The server decides; this only says
// whether our input would be refused.
function tokenRole() {
  const tok = conn.token();
  if (!tok) return '';
  let rooms;
  try {
    const part = tok.split('.')[1] || '';
    rooms = JSON.parse(atob(part.replace(/-/g, '+').replace(/_/g, '/'))).rooms;
  } catch {
    return '';
  }
  if (!rooms || typeof rooms !== 'object') return '';
  if (typeof rooms[roomID] === 'string') return rooms[roomID];
  let best = '';
  let bestLen = -1;
  for (const [pattern, role] of Object.entries(rooms)) {
    if (!pattern.endsWith('*') || typeof role !== 'string') continue;
    const prefix = pattern.slice(0, -1);
    if (prefix.length > bestLen && roomID.startsWith(prefix)) {
      best = role;
      bestLen = prefix.length;
    }
  }
  return best;
}

function setComposerEnabled() {
  const apiOnly = postRule === 'api';
  const locked = apiOnly || (postRule === 'moderators' && !mayModerate());
  const off = !!removed || mutedUntil !== null || locked;
  el.input.disabled = off;
  el.send.disabled = off;
  let note = '';
  if (removed) note = removed.banned ? 'You are banned from this room.' : 'You were removed from this room.';
  else if (mutedUntil === true) note = 'A moderator muted you until further notice.';
  else if (mutedUntil) note = `A moderator muted you until ${formatTime(mutedUntil.toISOString()).long}.`;
  else if (apiOnly) note = 'This room is read-only: its messages come from an application.';
  else if (locked) note = 'Only moderators can post in this room right now.';
  el.mutedNote.textContent = note;
  el.mutedNote.hidden = note === '';
}
