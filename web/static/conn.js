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
// Events (all CustomEvent, details in brackets):
//   state   {state: 'connecting'|'open'|'waiting'|'offline', retryAt?}
//   message {event}            one server event (welcome, joined, msg, …)
//   close   {code, reason, wasOpen}

import { backoffDelay, splitFrame, storageGet, storageSet } from './common.js';

const RESUME_KEY = 'roomchat.resume';
const SUBPROTOCOL = 'roomchat';
const RESUME_SUBPROTOCOL = 'roomchat.resume.';

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

    globalThis.addEventListener('online', () => this.reconnectNow());
    globalThis.addEventListener('offline', () => {
      if (!this.isOpen()) this._setState('offline');
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

  /** reconnectNow skips the remaining wait (or replaces a dead socket). */
  reconnectNow() {
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
    const resume = storageGet('sessionStorage', RESUME_KEY);
    if (!resume || !/^[A-Za-z0-9_-]+$/.test(resume)) return [SUBPROTOCOL];
    return [SUBPROTOCOL, RESUME_SUBPROTOCOL + resume];
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
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this._detach();
      this._closed(ev.code, ev.reason, wasOpen);
    };
  }

  _closed(code, reason, wasOpen) {
    this._stopWatch();
    if (reason === 'resumed on another connection') {
      // Another tab (a duplicated tab copies sessionStorage) took over our
      // resume token. Start over as a new user instead of fighting over it.
      this.forgetResume();
    }
    switch (code) {
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
