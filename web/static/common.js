// Helpers shared by the landing page and the room page: validation rules of
// SPEC §4, storage that tolerates being disabled, clipboard with a fallback,
// and client-side IDs. No DOM globals are touched at import time, so this
// module also loads under node for unit tests.

/** Defaults of SPEC §4; the room page replaces them with welcome.limits. */
export const DEFAULT_LIMITS = Object.freeze({
  maxRoomID: 64,
  maxName: 32,
  maxMessage: 4000,
  maxPage: 200, // most messages a history page holds
});

const ROOM_ID_RE = /^[A-Za-z0-9_-]+$/;
const NAMESPACE_RE = /^[A-Za-z0-9_-]{2,32}$/;

/**
 * checkRoomID returns null when id is a valid room ID (1–64 characters of
 * A–Z a–z 0–9 _ -, optionally after a namespace and a colon, ns:id, SPEC
 * §9), otherwise a sentence saying what is wrong.
 */
export function checkRoomID(id, max = DEFAULT_LIMITS.maxRoomID) {
  if (id === '') return 'Enter a room ID.';
  const colon = id.indexOf(':');
  let rest = id;
  if (colon >= 0) {
    if (!NAMESPACE_RE.test(id.slice(0, colon))) {
      return 'A namespace (before “:”) has 2 to 32 letters, digits, “_” or “-”.';
    }
    rest = id.slice(colon + 1);
    if (rest === '') return 'Enter a room ID after the namespace.';
  }
  if (rest.length > max) return `A room ID has at most ${max} characters.`;
  if (!ROOM_ID_RE.test(rest)) {
    return 'A room ID may only contain letters A–Z and a–z, digits, “_” and “-” (and one “:” after a namespace).';
  }
  return null;
}

/**
 * roomIDFromInput accepts what people paste into "Join by ID": a bare ID or a
 * whole share link (…/r/<id>), and returns the trimmed ID part.
 */
export function roomIDFromInput(text) {
  const t = text.trim();
  const m = /\/r\/([^/?#]+)\/?(?:[?#].*)?$/.exec(t);
  if (m) {
    try {
      return decodeURIComponent(m[1]);
    } catch {
      return m[1];
    }
  }
  return t;
}

/** runeCount counts Unicode code points, as the server does (Go runes). */
export function runeCount(s) {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

// Go's unicode.IsControl: C0, DEL and C1.
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * cleanName trims name and checks it like the server (1–maxName characters,
 * no control characters). It returns {name} or {error}.
 */
export function cleanName(name, max = DEFAULT_LIMITS.maxName) {
  const t = name.trim();
  if (t === '') return { error: 'Enter a name, or choose “Skip”.' };
  const n = runeCount(t);
  if (n > max) return { error: `A name has at most ${max} characters (this one has ${n}).` };
  if (CONTROL_RE.test(t)) return { error: 'A name cannot contain control characters.' };
  return { name: t };
}

/**
 * messageLength is the length the server checks: code points after trimming
 * white space.
 */
export function messageLength(text) {
  return runeCount(text.trim());
}

/**
 * newID returns a random 21-character ID from the nanoid alphabet. It uses
 * crypto.getRandomValues, which (unlike crypto.randomUUID) also works on
 * plain-http origins that are not "secure contexts".
 */
export function newID(size = 21) {
  const alphabet = '_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const bytes = new Uint8Array(size);
  globalThis.crypto.getRandomValues(bytes);
  let id = '';
  for (const b of bytes) id += alphabet[b & 63];
  return id;
}

/**
 * Storage wrappers: localStorage and sessionStorage throw in some privacy
 * modes and when cookies are blocked; the client then simply forgets.
 */
export function storageGet(kind, key) {
  try {
    return globalThis[kind].getItem(key);
  } catch {
    return null;
  }
}

export function storageSet(kind, key, value) {
  try {
    if (value === null || value === undefined) globalThis[kind].removeItem(key);
    else globalThis[kind].setItem(key, value);
  } catch {
    // Storage unavailable: nothing to remember it in.
  }
}

/** roomURL is the share link of a room on this server. */
export function roomURL(id) {
  return `${location.origin}/r/${encodeURIComponent(id)}`;
}

/**
 * copyText copies input.value to the clipboard. When the Clipboard API is
 * missing (plain http) or refused (permissions), it selects the text in the
 * read-only input so that the user can press Ctrl+C, and says so in status.
 * It resolves to true when the text was copied.
 */
export async function copyText(input, status) {
  const text = input.value;
  status.classList.remove('ok', 'warn');
  try {
    if (!navigator.clipboard || !navigator.clipboard.writeText) throw new Error('no clipboard');
    await navigator.clipboard.writeText(text);
    status.textContent = 'Link copied.';
    status.classList.add('ok');
    return true;
  } catch {
    input.focus();
    input.select();
    input.setSelectionRange(0, text.length);
    const key = /Mac|iPhone|iPad/.test(navigator.platform || '') ? '⌘C' : 'Ctrl+C';
    status.textContent = `Couldn’t copy automatically: the link is selected, press ${key} to copy it.`;
    status.classList.add('warn');
    return false;
  }
}

/** formatTime gives local HH:MM and a long local date for a title. */
export function formatTime(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return { short: '', long: '' };
  const pad = (n) => String(n).padStart(2, '0');
  return {
    short: `${pad(d.getHours())}:${pad(d.getMinutes())}`,
    long: d.toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'medium' }),
  };
}

/**
 * backoffDelay returns the wait before reconnect attempt n (0-based):
 * exponential from base to cap, with "equal jitter" (half fixed, half random)
 * so that a server restart does not bring every client back in the same
 * millisecond, while still growing reliably.
 */
export function backoffDelay(n, base = 500, cap = 10000, rand = Math.random) {
  const exp = Math.min(cap, base * 2 ** Math.min(n, 20));
  return Math.round(exp / 2 + rand() * (exp / 2));
}

/**
 * splitFrame parses one text frame of a batch=1 connection: one or more JSON
 * objects separated by '\n', a trailing '\n' allowed. Lines that do not parse
 * are reported through onBad and skipped.
 */
export function splitFrame(data, onBad = () => {}) {
  const out = [];
  for (const line of data.split('\n')) {
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line));
    } catch (err) {
      onBad(line, err);
    }
  }
  return out;
}

/**
 * ownerKeyStorageKey is the localStorage key under which this browser keeps
 * a room's owner key (SPEC §11): the key of every room it created, or
 * opened with a moderator link.
 */
export function ownerKeyStorageKey(roomID) {
  return `roomchat.key.${roomID}`;
}
