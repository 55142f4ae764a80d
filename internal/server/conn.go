package server

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/roomchat/roomchat/internal/identity"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/wsconn"
)

// conn is one WebSocket connection.
//
// Goroutines: the read loop (serve, started by start) owns ws's reading
// side and ends when the connection does; each frame is handled on a
// short-lived goroutine that the read loop waits for before the next one;
// the writer (writeLoop) runs only while frames are queued and is the only
// one writing frames to ws; close handshakes and keepalive pings run on
// goroutines counted in wg, which serve waits for before it returns.
//
// Lock order: a room's and a user's locks (internal/room) come before
// c.mu, since the registry queues frames under them; srv.pings.mu and
// srv.mu are never held with c.mu; c.mu comes before wire's own locks.
// Nothing under c.mu blocks or does I/O.
//
// The concerns are split by file, as coder/websocket splits its own:
// read.go (the read loop and each frame's goroutine), dispatch.go (one
// frame's handling), write.go (the queue and its writer), close.go (the
// ways a connection is closed); the framing the library does not do for
// us is internal/wsconn's.
type conn struct {
	// Queue's fields come first, in the struct's first cache line (a conn
	// is 320 bytes, a multiple of 64): a message to a room of a thousand
	// touches one line of each member's conn. TestConnLayout keeps it so.
	srv *Server    // set by newConn, then read-only
	mu  sync.Mutex // guards queue, queued, writing, closing, byServer and the fields under "Also guarded by mu"
	// queue holds the frames waiting for the writer; queued is their bytes.
	queue   [][]byte
	queued  int
	writing bool // a writer goroutine runs, or is about to (see start)
	closing bool // no more frames are taken
	// byServer records that the server started closing, so a close frame
	// echoed by the client is not taken for a clean close by the client.
	byServer bool

	wg sync.WaitGroup // the writer, close and keepalive goroutines
	// writer is c.writeLoop as a func value, made once: a go statement
	// with a fresh method value allocates a closure, and the writer starts
	// each time frames arrive for an idle connection.
	writer func()

	// Set by newConn before any goroutine of the connection starts, then
	// read-only, except user (see below).
	ws       *websocket.Conn
	wire     *wsconn.Conn // the socket under ws, for what ws does not do
	addr     netip.Prefix // the client address's key (addrKey), for srv.gate
	batch    bool
	linkBase string // where share links start (scheme and host), from the upgrade request

	// user is set by start under mu once Registry.Connect returns it;
	// read-only after that. Code that may run before (startClose) reads it
	// under mu.
	user *room.User

	// Set by newConn before the read loop starts; used (allow) by the
	// frame handlers, which run one at a time, and by the library's ping
	// and pong callbacks and the read loop: rate.Limiter is safe for that.
	limiter *rate.Limiter // nil when the rate limit is off
	abuse   *rate.Limiter // rejected frames; empty means close with 1008
	// readLoopWaits is the read loop, waiting to be handed the socket back
	// (handBack); nil once it has been.
	readLoopWaits chan<- frameEnd
	// handling is set while a frame's handler holds the socket: bytes the
	// client sent since wait unread, so the keepalive does not count their
	// absence against it.
	handling atomic.Bool

	// Also guarded by mu.
	//
	// idle, when set, is closed by the writer when it exits: Shutdown
	// waits on it to close the connection after what is queued is written.
	idle chan struct{}
	// cancelRead ends the store read a frame's handler is making, so that
	// a closing connection does not wait for it.
	cancelRead context.CancelFunc
	// ended is set when the read loop saw the connection end: a store
	// read started after it is cancelled at once.
	ended bool
	spare [][]byte // the writer's last queue, emptied, for reuse
	// The signed identity's clock (armExpiry): nil timer for an anonymous
	// connection.
	authTimer   *time.Timer
	authGen     uint64
	authExpired bool

	// The keepalive wheel's list links and ping state. Guarded by
	// srv.pings.mu.
	kaPrev, kaNext *conn
	kaSlot         int
	kaIn           bool
	kaPinged       bool   // a ping went out and has not been checked yet
	kaReads        uint64 // wire.Reads() when it went out
	// kaIssued is when the resume token the client holds was issued
	// (Unix ns, at most): set by start before the wheel has c, then
	// by the wheel when it renews the token (renewToken).
	kaIssued int64
}

// newConn accepts the upgrade (answering it on failure, and giving the
// gate back key's place) and returns the connection, not started yet.
func (s *Server) newConn(w http.ResponseWriter, r *http.Request, key netip.Prefix) (*conn, bool) {
	c := &conn{srv: s, addr: key}
	opts := &websocket.AcceptOptions{OriginPatterns: s.cfg.Origins, Subprotocols: subprotocols}
	if s.limits.Rate > 0 {
		// Pings and pongs count against the rate limit (conn.allow).
		opts.OnPingReceived, opts.OnPongReceived = c.onPing, c.onPong
	}
	ws, wire, err := wsconn.Accept(w, r, opts, s.cfg.FrameTimeout)
	if err != nil {
		// Accept has answered (403 for a foreign Origin, 426 for a bad upgrade).
		s.gate.leave(key)
		s.log.Info("refused websocket", "remote", r.RemoteAddr, "why", "handshake", "origin", r.Header.Get("Origin"), "err", err)
		s.metrics.refused.Inc()
		return nil, false
	}
	ws.SetReadLimit(s.limits.MaxFrame)
	c.ws, c.wire = ws, wire
	c.batch = r.URL.Query().Get("batch") == "1"
	c.linkBase = s.baseURL(r)
	c.writer = c.writeLoop
	if s.limits.Rate > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(s.limits.Rate), s.limits.Burst)
		c.abuse = rate.NewLimiter(rate.Limit(s.limits.Rate), 2*s.limits.Burst)
	}
	return c, true
}

// start attaches c to its user (a new one, or the one r's resume token
// names), queues welcome, puts c on the keepalive wheel and starts its
// read loop. addr is the client's address, for the log.
func (c *conn) start(r *http.Request, addr netip.Addr, id *identity.Identity) {
	s := c.srv
	// welcome must be the first frame (SPEC §4), but once Connect attaches
	// c to a resumed user, the ack (or error) of a msg that the user's
	// previous connection sent may be queued to c at any moment. So c
	// starts out marked as writing, which makes Queue only append, and
	// welcome goes in front of whatever came meanwhile. c.mu is not held
	// across Connect: the registry's locks come before a connection's.
	c.writing = true
	// The token Connect issues is no older than this: the keepalive
	// wheel sends a new one once it is half ResumeMaxAge old.
	c.kaIssued = time.Now().UnixNano()
	var u *room.User
	var resumed bool
	var replaced room.Conn
	w := protocol.Welcome{Limits: s.limits}
	if id != nil {
		// A signed identity is its sub, whatever resume token comes
		// with it (SPEC §10: a resume token works for the same sub only).
		u, resumed, replaced = s.reg.ConnectAs(c, id.UserID, id.Name, id)
		w.Name, w.Exp = u.Name(), id.Expires.Unix()
	} else {
		u, resumed, replaced = s.reg.Connect(c, resumeToken(r))
	}
	w.UserID, w.Resume, w.Online = u.ID(), u.Token(), s.track(c)
	welcome := protocol.Encode(protocol.TypeWelcome, "", w)
	c.mu.Lock()
	c.user = u
	if id != nil && !c.closing {
		c.armExpiry(id.Expires)
	}
	if c.closing {
		// Replaced by a resume on another connection already.
		c.writing = false
	} else {
		c.queue = append([][]byte{welcome}, c.queue...)
		c.queued += len(welcome)
		c.wg.Add(1)
		go c.writer()
	}
	c.mu.Unlock()
	if old, ok := replaced.(*conn); ok {
		old.closeWith(protocol.CloseReplaced, "resumed elsewhere")
	}
	s.pings.add(c)
	s.log.Info("connect", "user", u.ID(), "remote", r.RemoteAddr, "client", addr, "resumed", resumed, "batch", c.batch)
	if s.shutting.Load() {
		c.closeWith(protocol.CloseShutdown, "shutdown")
	}
	s.metrics.conns.Inc()
	s.metrics.connsTotal.Inc()
	// The read loop gets a goroutine of its own, so that net/http's
	// connection goroutine, with its deeper stack, ends here.
	go c.serve()
}

// serve runs the connection: welcome, then the read loop until the
// connection ends; then it leaves the registry and waits for its
// goroutines. Its goroutine lives as long as the connection and is parked
// in wire.WaitReadable while the connection is idle, so serve and readLoop keep
// their frames small (see readLoop).
func (c *conn) serve() {
	start := time.Now()
	clean, why := c.readLoop()
	c.finish(start, clean, why)
}

// finish is what serve does once the read loop has ended.
func (c *conn) finish(start time.Time, clean bool, why string) {
	defer c.srv.conns.Done()
	c.mu.Lock()
	if c.byServer {
		clean = false
	}
	c.closing = true
	if c.authTimer != nil {
		c.authTimer.Stop()
	}
	c.mu.Unlock()
	c.srv.pings.remove(c)
	c.srv.reg.Disconnect(c.user, c, clean)
	c.ws.CloseNow()
	c.wg.Wait()
	c.srv.untrack(c)
	c.srv.gate.leave(c.addr)
	c.srv.metrics.conns.Dec()
	c.srv.log.Info("disconnect", "user", c.user.ID(), "why", why, "clean", clean, "duration", time.Since(start).Round(time.Millisecond))
}

// userID is the connection's user's ID, or "" before Connect has returned
// it. Guarded by c.mu: a resume elsewhere can close c that early.
func (c *conn) userID() string {
	if c.user == nil {
		return ""
	}
	return c.user.ID()
}
