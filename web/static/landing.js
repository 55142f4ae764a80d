// Landing page (GET /): create a room through POST /api/rooms, show its
// share link and copy it to the clipboard, or join a room by ID or link.
// With signed identity on (SPEC §10) the HTTP API wants credentials this
// page does not have, while an anonymous WebSocket may still create a room
// (mode "optional"): on 401 the page asks over a WebSocket instead.

import { checkRoomID, copyText, newID, ownerKeyStorageKey, roomIDFromInput, roomURL, storageSet } from './common.js';

const $ = (id) => document.getElementById(id);

const createBtn = $('create-room');
const createStatus = $('create-status');
const created = $('created');
const shareLink = $('share-link');
const copyBtn = $('copy-link');
const copyStatus = $('copy-status');
const openRoom = $('open-room');
const joinForm = $('join-form');
const joinID = $('join-id');
const joinError = $('join-error');

async function createRoom() {
  createBtn.disabled = true;
  createBtn.setAttribute('aria-busy', 'true');
  createStatus.textContent = 'Creating a room…';
  createStatus.classList.remove('warn');
  try {
    const res = await fetch('/api/rooms', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: '{}',
    });
    let body = null;
    try {
      body = await res.json();
    } catch {
      // Not JSON; handled below.
    }
    if (res.status === 401) {
      body = await createOverSocket(body && body.message ? body.message : 'the server wants a signed identity');
    }
    if ((!res.ok && res.status !== 401) || !body || typeof body.roomID !== 'string') {
      const why = body && body.message ? body.message : `the server answered ${res.status}`;
      throw new Error(why);
    }
    // The owner key (SPEC §11) makes this browser the room's owner: the
    // room page joins with it and shows the moderation tools.
    if (typeof body.ownerKey === 'string' && body.ownerKey) {
      storageSet('localStorage', ownerKeyStorageKey(body.roomID), body.ownerKey);
    }
    // The link is built from the address this page was loaded from, exactly
    // as the room page builds it, so both pages show the same link.
    const url = roomURL(body.roomID);
    shareLink.value = url;
    openRoom.href = `/r/${encodeURIComponent(body.roomID)}`;
    created.hidden = false;
    created.dataset.roomId = body.roomID;
    createStatus.textContent = 'Room created. Share the link, then open the room.';
    shareLink.focus();
    shareLink.select();
    // Copy it straight away (SPEC §6), still within the click's user
    // activation; without a usable clipboard copyText selects the link and
    // says how to copy it, as the Copy button does.
    await copyText(shareLink, copyStatus);
  } catch (err) {
    createStatus.textContent = `Couldn’t create a room: ${err.message}. Check your connection and try again.`;
    createStatus.classList.add('warn');
  } finally {
    createBtn.disabled = false;
    createBtn.removeAttribute('aria-busy');
  }
}

// SOCKET_CREATE_MS bounds the WebSocket create: a welcome and one reply.
const SOCKET_CREATE_MS = 10000;

// createOverSocket sends a create frame (SPEC §4) on a WebSocket of its own
// and resolves with the created payload ({roomID, url, ownerKey}); it
// rejects with refused (the HTTP API's reason) when the server will not
// have an anonymous WebSocket either.
function createOverSocket(refused) {
  return new Promise((resolve, reject) => {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/ws`, ['roomchat']);
    const id = `create-${newID(10)}`;
    let settled = false;
    const finish = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.close(1000);
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new Error('the server did not answer')), SOCKET_CREATE_MS);
    ws.onopen = () => ws.send(JSON.stringify({ type: 'create', id, payload: {} }));
    ws.onmessage = (ev) => {
      let e = null;
      try {
        e = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!e || e.id !== id) return;
      if (e.type === 'created') finish(null, e.payload);
      else finish(new Error((e.payload && e.payload.message) || refused));
    };
    ws.onclose = () => finish(new Error(refused));
  });
}

createBtn.addEventListener('click', createRoom);
copyBtn.addEventListener('click', () => copyText(shareLink, copyStatus));

joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = roomIDFromInput(joinID.value);
  const problem = checkRoomID(id);
  if (problem) {
    joinError.textContent = problem;
    joinID.setAttribute('aria-invalid', 'true');
    joinID.focus();
    return;
  }
  joinError.textContent = '';
  joinID.removeAttribute('aria-invalid');
  location.assign(`/r/${encodeURIComponent(id)}`);
});

joinID.addEventListener('input', () => {
  if (joinID.getAttribute('aria-invalid')) {
    joinError.textContent = '';
    joinID.removeAttribute('aria-invalid');
  }
});
