// Landing page (GET /): create a room through POST /api/rooms, show its
// share link and copy it to the clipboard, or join a room by ID or link.

import { checkRoomID, copyText, ownerKeyStorageKey, roomIDFromInput, roomURL, storageSet } from './common.js';

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
    if (!res.ok || !body || typeof body.roomID !== 'string') {
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
