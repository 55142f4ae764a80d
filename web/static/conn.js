// Connection keeps one WebSocket to /ws open: it dials with batch=1 and the
// newest resume token (from the last welcome, or a later resume event), so
// the server keeps our userID across a reconnect (SPEC §4). The token goes
// in the subprotocol roomchat.resume.<token>, offered beside roomchat,
// which the server selects: unlike ?resume=, a subprotocol stays out of
// the request lines that proxies log. It splits batched frames into
// events, notices dead
// connections with an application ping, and redials with exponential
// backoff and jitter. It knows nothing about rooms; room.js does.
//
// Signed identity (SPEC §10): a token stored in sessionStorage (see
// takeToken) goes in the subprotocol roomchat.bearer.<token>. With a
// refresh URL it fetches a new token before the welcome's exp and sends it
// in an auth frame. A 4001 close (the token expired) or a refused upgrade
// with a token (401) stops the reconnects: the same token cannot succeed.
// The server keeps one connection per signed identity: another tab or
// window of it (or a roomchat CLI with the same token) takes this one
// over, and the server closes it with 1000 "resumed on another
// connection". Reconnecting would take that one over in turn, which would
// do the same: the tabs would fight for ever. So the connection stops in
// the state 'replaced' until the page calls takeOver (a "Use here"
// button).
//
// Events (all CustomEvent, details in brackets):
//   state   {state: 'connecting'|'open'|'waiting'|'offline'|'replaced', retryAt?}
//   message {event}            one server event (welcome, joined, msg, …)
//   close   {code, reason, wasOpen}
//   auth    {what: 'expired'|'refused'|'renewed'}   token_expired without a
//           refresh URL; upgrade refused (401) or closed with 4001; renewed

import { backoffDelay, splitFrame, storageGet, storageSet } from './common.js';

const RESUME_KEY = 'roomchat.resume';
const TOKEN_KEY = 'roomchat.token';
const REFRESH_KEY = 'roomchat.refreshURL';
const SUBPROTOCOL = 'roomchat';
const RESUME_SUBPROTOCOL = 'roomchat.resume.';
const BEARER_SUBPROTOCOL = 'roomchat.bearer.';
// The reason of the server's close when another connection took our user
// over (SPEC §4 resume, §10 one connection per identity).
const REPLACED_REASON = 'resumed on another connection';
// A token renews this long before its exp, or at a third of its remaining
// life when that is shorter.
const REFRESH_LEAD_MS = 30000;

/**
 * takeToken moves a token given on the page's first load out of the
 * address bar into sessionStorage: ?token=JWT (and ?refresh=URL, a
 * same-origin URL that answers GET with {"token": "…"} or the raw token).
 * An embedding page may instead post {type: 'roomchat:token', token,
 * refreshURL?} to the room page's window (an iframe's parent); see
 * web/README.md.
 */
export function takeToken() {
  const url = new URL(location.href);
  const token = url.searchParams.get('token');
  const refresh = url.searchParams.get('refresh');
  if (token === null && refresh === null) return;
  if (token !== null) storageSet('sessionStorage', TOKEN_KEY, token || null);
  if (refresh !== null) storageSet('sessionStorage', REFRESH_KEY, refresh || null);
  url.searchParams.delete('token');
  url.searchParams.delete('refresh');
  history.replaceState(history.state, '', url.pathname + url.search + url.hash);
}

// The server pings every 25 s at the WebSocket level, but browsers answer
// those pings without telling the page, so the page cannot see a half-open
// connection. After IDLE_MS without any frame we send an application ping;
// if nothing at all arrives within PONG_MS we give up on the socket.
const IDLE_MS = 25000;
const PONG_MS = 10000;

// Close codes the server uses (SPEC §4).
export const CLOSE = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001, // server shutting down
  UNSUPPORTED: 1003,
  ABNORMAL: 1006, // no close frame (network drop, server killed)
  INVALID: 1007,
  POLICY: 1008, // sustained rate abuse
  TOO_BIG: 1009,
  INTERNAL: 1011,
  TRY_AGAIN: 1013, // too slow to keep up
  TOKEN_EXPIRED: 4001, // signed identity expired, no auth frame in time (§10)
});

export class Connection extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.state = 'idle';
    this.attempt = 0; // failed dials since the last resetBackoff
    this.minDelay = 0; // floor for the next wait, set by close codes
    this.retryTimer = 0;
    this.watchTimer = 0;
    this.lastFrame = 0;
    this.pingSent = 0;
    this.stopped = false;
    this.refreshTimer = 0;
    this.authEnded = false; // stopped for the token's sake (401 or 4001)
    this.replaced = false; // stopped: another connection of our identity took over

    globalThis.addEventListener('online', () => this.reconnectNow());
    globalThis.addEventListener('message', (ev) => this._onPost(ev));
    globalThis.addEventListener('offline', () => {
      if (!this.isOpen() && !this.replaced) this._setState('offline');
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && this.state === 'waiting') this.reconnectNow();
    });
  }

  /** start dials the first connection. */
  start() {
    this.stopped = false;
    this._dial();
  }

  /** stop closes the socket cleanly and stops reconnecting. */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this._stopWatch();
    if (this.ws) {
      const ws = this.ws;
      this._detach();
      ws.close(CLOSE.NORMAL, 'bye');
    }
    this._setState('offline');
  }

  isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** send writes one frame; it returns false when there is no open socket. */
  send(frame) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** resetBackoff is called once the connection proved useful (joined). */
  resetBackoff() {
    this.attempt = 0;
  }

  /** forgetResume drops the resume token so the next dial gets a new user. */
  forgetResume() {
    storageSet('sessionStorage', RESUME_KEY, null);
  }

  /** token is the stored signed identity, or '' without one. */
  token() {
    return storageGet('sessionStorage', TOKEN_KEY) || '';
  }

  /**
   * takeOver connects again after another connection of our signed
   * identity took over (state 'replaced'): ours then takes over, and the
   * other is closed as ours was.
   */
  takeOver() {
    if (!this.replaced) return;
    this.replaced = false;
    this.attempt = 0;
    this.reconnectNow();
  }

  /** reconnectNow skips the remaining wait (or replaces a dead socket). */
  reconnectNow() {
    if (this.authEnded) return; // only a new token helps
    if (this.replaced) return; // only takeOver, the user's choice
    if (this.stopped || this.isOpen()) return;
    if (this.ws && this.ws.readyState === WebSocket.CONNECTING) return;
    clearTimeout(this.retryTimer);
    this._dial();
  }

  _url() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    return `${proto}://${location.host}/ws?batch=1`;
  }

  // _protocols offers the resume token as a subprotocol, beside roomchat,
  // which the server selects. A stored value that cannot be a subprotocol
  // name (tokens are base64url) is not sent: the server would refuse it
  // anyway, and the browser would refuse to dial.
  _protocols() {
    const list = [SUBPROTOCOL];
    const token = this.token();
    if (token && /^[A-Za-z0-9_.-]+$/.test(token)) list.push(BEARER_SUBPROTOCOL + token);
    const resume = storageGet('sessionStorage', RESUME_KEY);
    if (resume && /^[A-Za-z0-9_-]+$/.test(resume)) list.push(RESUME_SUBPROTOCOL + resume);
    return list;
  }

  // _onPost takes a token posted by the embedding page (the parent of an
  // iframe): {type: 'roomchat:token', token, refreshURL?}. On an open
  // connection it is sent in an auth frame; otherwise the next dial uses it.
  _onPost(ev) {
    if (ev.source !== globalThis.parent || ev.source === globalThis) return;
    const d = ev.data;
    if (!d || d.type !== 'roomchat:token' || typeof d.token !== 'string' || !d.token) return;
    storageSet('sessionStorage', TOKEN_KEY, d.token);
    if (typeof d.refreshURL === 'string') storageSet('sessionStorage', REFRESH_KEY, d.refreshURL || null);
    if (this.isOpen()) {
      this.send({ type: 'auth', payload: { token: d.token } });
    } else if (this.authEnded && !this.replaced) {
      this.authEnded = false;
      this.attempt = 0;
      this.reconnectNow();
    }
  }

  // _armRefresh schedules fetching a new token before exp (Unix seconds),
  // when there is a refresh URL.
  _armRefresh(exp) {
    clearTimeout(this.refreshTimer);
    if (!exp || !storageGet('sessionStorage', REFRESH_KEY)) return;
    const left = exp * 1000 - Date.now();
    const lead = Math.min(REFRESH_LEAD_MS, left / 3);
    this.refreshTimer = setTimeout(() => this._refresh(), Math.max(0, left - lead));
  }

  // _refresh fetches a new token from the refresh URL and sends it in an
  // auth frame. It reports whether it did.
  async _refresh() {
    const url = storageGet('sessionStorage', REFRESH_KEY);
    if (!url) return false;
    let token = '';
    try {
      const res = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
      if (!res.ok) return false;
      const text = (await res.text()).trim();
      try {
        const v = JSON.parse(text);
        token = typeof v === 'string' ? v : (v && v.token) || '';
      } catch {
        token = text;
      }
    } catch {
      return false;
    }
    if (!token) return false;
    storageSet('sessionStorage', TOKEN_KEY, token);
    return this.send({ type: 'auth', payload: { token } });
  }

  // _tokenEvent handles the identity's events: welcome and authed (exp),
  // and the token_expired error.
  async _tokenEvent(event) {
    const p = event.payload || {};
    if (event.type === 'welcome' || event.type === 'authed') {
      this._armRefresh(p.exp);
      if (event.type === 'authed') this.dispatchEvent(new CustomEvent('auth', { detail: { what: 'renewed' } }));
    } else if (event.type === 'error' && p.code === 'token_expired') {
      if (!(await this._refresh())) this.dispatchEvent(new CustomEvent('auth', { detail: { what: 'expired' } }));
    }
  }

  // _endForToken stops reconnecting: the server will not take this token.
  _endForToken() {
    this.authEnded = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    this._setState('offline');
    this.dispatchEvent(new CustomEvent('auth', { detail: { what: 'refused' } }));
  }

  // _endReplaced stops reconnecting after another connection of our
  // signed identity took over, until takeOver.
  _endReplaced(code, reason, wasOpen) {
    this.replaced = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    this.dispatchEvent(new CustomEvent('close', { detail: { code, reason, wasOpen } }));
    this._setState('replaced');
  }

  // _checkToken asks the server, without an upgrade, whether it takes the
  // token (a browser does not see an upgrade's 401): a GET /ws carrying
  // it is refused with 401 for a bad token before anything else.
  async _checkToken(token) {
    try {
      const res = await fetch('/ws', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
      return res.status !== 401;
    } catch {
      return true; // the network, not the token
    }
  }

  _dial() {
    if (this.stopped) return;
    if (navigator.onLine === false) {
      this._setState('offline');
      return;
    }
    this._setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this._url(), this._protocols());
    } catch {
      this._scheduleRetry();
      return;
    }
    this.ws = ws;
    let wasOpen = false;
    ws.onopen = () => {
      wasOpen = true;
      this.lastFrame = Date.now();
      this._setState('open');
      this._startWatch();
    };
    ws.onmessage = (ev) => {
      this.lastFrame = Date.now();
      this.pingSent = 0;
      if (typeof ev.data !== 'string') return;
      for (const event of splitFrame(ev.data, (line) => console.warn('roomchat: bad frame line', line))) {
        if (event && (event.type === 'welcome' || event.type === 'authed' || event.type === 'error')) this._tokenEvent(event);
        // welcome carries a token, and so does a resume event, which
        // renews it on a connection open for long (SPEC §4).
        if (event && (event.type === 'welcome' || event.type === 'resume') && event.payload && typeof event.payload.resume === 'string' && event.payload.resume) {
          storageSet('sessionStorage', RESUME_KEY, event.payload.resume);
        }
        this.dispatchEvent(new CustomEvent('message', { detail: { event } }));
      }
    };
    ws.onerror = () => {
      // Always followed by close; nothing to add.
    };
    const token = this.token();
    ws.onclose = async (ev) => {
      if (this.ws !== ws) return;
      this._detach();
      if (!wasOpen && token && !this.stopped && !(await this._checkToken(token))) {
        this._endForToken();
        return;
      }
      this._closed(ev.code, ev.reason, wasOpen);
    };
  }

  _closed(code, reason, wasOpen) {
    this._stopWatch();
    if (code === CLOSE.NORMAL && reason === REPLACED_REASON) {
      if (this.token()) {
        // Another connection of our signed identity took over (see the
        // top of this file): stop, and let the user choose.
        this._endReplaced(code, reason, wasOpen);
        return;
      }
      // Anonymous: another connection resumed with our token, most likely
      // a duplicated tab (which copies sessionStorage, resume token
      // included). Start over as a new user instead of fighting over it.
      // This cannot ping-pong: sessionStorage is copied when the tab is
      // duplicated, not shared after, so the other tab's newer token is
      // its own, and once we forget ours we hold no token of that user;
      // we come back with a userID of our own, and the other tab is left
      // alone.
      this.forgetResume();
    }
    switch (code) {
      case CLOSE.TOKEN_EXPIRED:
        // The server waited for a fresh token and got none: the same
        // token would be refused (SPEC §10).
        this.dispatchEvent(new CustomEvent('close', { detail: { code, reason, wasOpen } }));
        this._endForToken();
        return;
      case CLOSE.POLICY:
        this.minDelay = 5000;
        break;
      case CLOSE.TRY_AGAIN:
        // We were too slow; come back quickly and resume with since.
        this.attempt = 0;
        break;
      default:
        break;
    }
    this.dispatchEvent(new CustomEvent('close', { detail: { code, reason, wasOpen } }));
    if (!this.stopped) this._scheduleRetry();
  }

  _scheduleRetry() {
    clearTimeout(this.retryTimer);
    if (navigator.onLine === false) {
      this._setState('offline');
      return;
    }
    const delay = Math.max(this.minDelay, backoffDelay(this.attempt));
    this.minDelay = 0;
    this.attempt++;
    const retryAt = Date.now() + delay;
    this._setState('waiting', retryAt);
    this.retryTimer = setTimeout(() => this._dial(), delay);
  }

  _detach() {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    this.ws = null;
  }

  _startWatch() {
    this._stopWatch();
    this.watchTimer = setInterval(() => this._watch(), 1000);
  }

  _stopWatch() {
    clearInterval(this.watchTimer);
    this.watchTimer = 0;
    this.pingSent = 0;
  }

  _watch() {
    const now = Date.now();
    if (this.pingSent && now - this.pingSent > PONG_MS) {
      // Half-open: drop the socket without waiting for a closing handshake
      // that will never complete.
      const ws = this.ws;
      this._detach();
      try {
        ws.close(4000, 'keepalive timeout');
      } catch {
        // already closing
      }
      this._closed(CLOSE.ABNORMAL, 'keepalive timeout', true);
      return;
    }
    if (!this.pingSent && now - this.lastFrame > IDLE_MS) {
      if (this.send({ type: 'ping' })) this.pingSent = now;
    }
  }

  _setState(state, retryAt) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, retryAt } }));
  }
}
