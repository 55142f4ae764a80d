package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
)

// conn is one WebSocket connection.
//
// Goroutines: the read loop (serve, started by handleWS) owns ws's reading
// side and ends when the connection does; each frame is handled on a
// short-lived goroutine that the read loop waits for before the next one;
// the writer (writeLoop) runs only while frames are queued and is the only
// one writing frames to ws; close handshakes and keepalive pings run on
// goroutines counted in wg, which serve waits for before it returns.
//
// Lock order: a room's and a user's locks (internal/room) come before
// c.mu, since the registry queues frames under them; srv.keep.mu and
// srv.mu are never held with c.mu. Nothing under c.mu blocks or does I/O.
type conn struct {
	// Set by handleWS before any goroutine of the connection starts, then
	// read-only, except user (see below).
	srv      *Server
	ws       *websocket.Conn
	nw       *netWriter
	peek     *peekConn     // the socket under the library's reader
	br       *bufio.Reader // the library's read buffer; see waitIdle
	addr     netip.Prefix  // the client address's key (addrKey), for srv.gate
	batch    bool
	linkBase string // where share links start (scheme and host), from the upgrade request

	// user is set by handleWS under mu once Registry.Connect returns it;
	// read-only after that. Code that may run before (startClose) reads it
	// under mu.
	user *room.User

	// Set by handleWS before the read loop starts; used (allow) by the
	// frame handlers, which run one at a time, and by the library's ping
	// and pong callbacks and skipPongs: rate.Limiter is safe for that.
	limiter *rate.Limiter // nil when the rate limit is off
	abuse   *rate.Limiter // rejected frames; empty means close with 1008
	// readLoopWaits is the read loop, waiting to be handed the socket back
	// (handBack); nil once it has been.
	readLoopWaits chan<- frameEnd
	// handling is set while a frame's handler holds the socket: bytes the
	// client sent since wait unread, so the keepalive does not count their
	// absence against it.
	handling atomic.Bool

	mu    sync.Mutex // guards the fields below
	queue [][]byte   // frames waiting for the writer
	// idle, when set, is closed by the writer when it exits: Shutdown
	// waits on it to close the connection after what is queued is written.
	idle chan struct{}
	// cancelRead ends the store read a frame's handler is making, so that
	// a closing connection does not wait for it.
	cancelRead context.CancelFunc
	// ended is set when the read loop saw the connection end: a store
	// read started after it is cancelled at once.
	ended   bool
	spare   [][]byte // the writer's last queue, emptied, for reuse
	queued  int      // bytes in queue
	writing bool     // a writer goroutine runs, or is about to (see handleWS)
	closing bool     // no more frames are taken
	// byServer records that the server started closing, so a close frame
	// echoed by the client is not taken for a clean close by the client.
	byServer bool

	// The keepalive wheel's list links and ping state. Guarded by
	// srv.keep.mu.
	kaPrev, kaNext *conn
	kaSlot         int
	kaIn           bool
	kaPinged       bool   // a ping went out and has not been checked yet
	kaReads        uint64 // peek.reads when it went out
	// kaIssued is when the resume token the client holds was issued
	// (Unix ns, at most): set by handleWS before the wheel has c, then
	// by the wheel when it renews the token (renewToken).
	kaIssued int64

	wg sync.WaitGroup // the writer, close and keepalive goroutines

	// writer is c.writeLoop as a func value, made once: a go statement
	// with a fresh method value allocates a closure, and the writer starts
	// each time frames arrive for an idle connection.
	writer func()
}

// Queue implements room.Conn: it appends frame for the writer, starting
// one if none runs. A connection already holding more than MaxQueue bytes
// is too slow: it is closed with 1013 and frame is dropped, as is any
// frame queued once the connection is closing.
func (c *conn) Queue(frame []byte) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.queued > c.srv.cfg.MaxQueue {
		c.mu.Unlock()
		c.srv.metrics.slow.Inc()
		c.closeWith(protocol.CloseSlow, "slow consumer")
		return
	}
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	if !c.writing {
		c.writing = true
		c.wg.Add(1)
		go c.writer()
	}
	c.mu.Unlock()
}

// writeLoop drains the queue until it is empty, then exits. Each drain is
// one write to the socket: with batching one frame holding every queued
// event, without it one frame per event.
func (c *conn) writeLoop() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.closing && !c.byServer {
			c.stopWriting()
			c.mu.Unlock()
			return
		}
		q := c.queue
		// Swap in the emptied slice of the last drain: queueing a frame
		// allocates nothing once a connection has had traffic. Both
		// slices stay with the connection between wakes.
		c.queue, c.spare, c.queued = c.spare, nil, 0
		c.mu.Unlock()
		if err := c.write(q); err != nil {
			c.mu.Lock()
			c.stopWriting()
			c.mu.Unlock()
			if errors.Is(err, errTimeout) {
				c.srv.metrics.slow.Inc()
				c.closeWith(protocol.CloseSlow, "write timeout")
			} else {
				c.ws.CloseNow()
			}
			return
		}
		events := len(q)
		for _, f := range q {
			if isPing(f) {
				events--
			}
		}
		c.srv.metrics.framesOut.Add(float64(events))
		c.srv.metrics.writes.Inc()
		clear(q)
		c.mu.Lock()
		c.spare = q[:0]
		c.mu.Unlock()
	}
}

// stopWriting marks the writer gone and wakes a Shutdown waiting for it.
// Guarded by c.mu.
func (c *conn) stopWriting() {
	c.writing = false
	if c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

var errTimeout = errors.New("write timed out")

// write sends one drain of the queue in one write to the socket. The
// writer frames its events itself (netWriter.text): with batching one
// frame holds every event between two keepalive pings, a line each;
// without it each event is a frame of its own.
func (c *conn) write(q [][]byte) error {
	c.nw.hold()
	var err error
	if c.batch && len(q) > 1 {
		start := 0
		for i, f := range q {
			if isPing(f) {
				if err == nil && i > start {
					err = c.nw.text(q[start:i], true)
				}
				c.nw.ping()
				start = i + 1
			}
		}
		if err == nil && start < len(q) {
			err = c.nw.text(q[start:], true)
		}
	} else {
		for i, f := range q {
			if isPing(f) {
				c.nw.ping()
				continue
			}
			if err = c.nw.text(q[i:i+1], false); err != nil {
				break
			}
		}
	}
	if rerr := c.nw.release(c.srv.cfg.WriteTimeout); err == nil && rerr != nil {
		err = rerr
		var ne interface{ Timeout() bool }
		if errors.As(rerr, &ne) && ne.Timeout() {
			err = errTimeout
		}
	}
	return err
}

// closeWith closes the connection with code, once, without blocking the
// caller: the close handshake can take seconds.
func (c *conn) closeWith(cl protocol.Close, why string) {
	if !c.startClose(why, cl.Code, true) {
		return
	}
	go func() {
		defer c.wg.Done()
		c.ws.Close(websocket.StatusCode(cl.Code), cl.Reason)
	}()
}

// Replaced implements room.Replaceable: the user resumed on another node
// of the cluster, and this connection ends with 1000 (SPEC §8).
func (c *conn) Replaced() { c.closeWith(protocol.CloseReplaced, "resumed on another node") }

// closeSync is closeWith for a caller that bounds its own concurrency
// (Shutdown): it returns when the close handshake is over.
func (c *conn) closeSync(cl protocol.Close, why string) {
	if c.startClose(why, cl.Code, false) {
		c.ws.Close(websocket.StatusCode(cl.Code), cl.Reason)
	}
}

// startClose marks the connection closing by the server and drops what is
// queued; with async it adds the closing goroutine to wg, under mu so that
// serve cannot have waited yet. It reports false if the connection was
// already closing.
func (c *conn) startClose(why string, code int, async bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.closing, c.byServer = true, true
	c.queue, c.queued = nil, 0
	c.stopReading()
	if async {
		c.wg.Add(1)
	}
	c.srv.log.Info("closing", "user", c.userID(), "code", code, "why", why)
	return true
}

// userID is the connection's user's ID, or "" before Connect has returned
// it. Guarded by c.mu: a resume elsewhere can close c that early.
func (c *conn) userID() string {
	if c.user == nil {
		return ""
	}
	return c.user.ID()
}

// closeDrained closes the connection with 1001 once the writer has
// written what is already queued (acks, deliveries), or when ctx ends,
// whichever comes first. No frame is queued after it starts. For
// Shutdown, which bounds its concurrency.
func (c *conn) closeDrained(ctx context.Context) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing, c.byServer = true, true
	c.stopReading()
	var idle chan struct{}
	if c.writing {
		idle = make(chan struct{})
		c.idle = idle
	}
	c.srv.log.Info("closing", "user", c.userID(), "code", protocol.CloseShutdown.Code, "why", "shutdown", "queued", c.queued)
	c.mu.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
		}
	}
	c.ws.Close(websocket.StatusCode(protocol.CloseShutdown.Code), protocol.CloseShutdown.Reason)
}

// readContext returns the context of a store read made for this
// connection: it ends when the connection starts closing or the server
// stops. Call done when the read is over. Called from a frame's handler,
// it first hands the socket back to the read loop, which then watches for
// the connection's end.
func (c *conn) readContext() (ctx context.Context, done func()) {
	c.handBack()
	ctx, cancel := context.WithCancel(c.srv.reads)
	c.mu.Lock()
	if c.closing || c.ended {
		cancel()
	} else {
		c.cancelRead = cancel
	}
	c.mu.Unlock()
	return ctx, func() {
		c.mu.Lock()
		c.cancelRead = nil
		c.mu.Unlock()
		cancel()
	}
}

// stopReading ends a store read in progress. Guarded by c.mu.
func (c *conn) stopReading() {
	if c.cancelRead != nil {
		c.cancelRead()
		c.cancelRead = nil
	}
}

// serve runs the connection: welcome, then the read loop until the
// connection ends; then it leaves the registry and waits for its
// goroutines. Its goroutine lives as long as the connection and is parked
// in waitIdle while the connection is idle, so serve and readLoop keep
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
	c.mu.Unlock()
	c.srv.keep.remove(c)
	c.srv.reg.Disconnect(c.user, c, clean)
	c.ws.CloseNow()
	c.wg.Wait()
	c.srv.untrack(c)
	c.srv.gate.leave(c.addr)
	c.srv.metrics.conns.Dec()
	c.srv.log.Info("disconnect", "user", c.user.ID(), "why", why, "clean", clean, "duration", time.Since(start).Round(time.Millisecond))
}

// readLoop waits for frames until the connection ends; clean reports a
// close frame from the client, and why says how it ended, for the log.
//
// It reads no frame itself. Each frame is read and handled on a
// goroutine of its own (frame): the read loop's goroutine lives as long
// as the connection, and a goroutine keeps the stack it grew to unless it
// later uses less than a quarter of it. Waiting for bytes (waitIdle) and
// taking pongs (skipPongs) fit in the 2 KiB a goroutine starts with;
// reading a frame through the library, and handling it (encoding a
// joined, reading history through the SQLite driver), need far more. So
// an idle connection holds a 2 KiB stack, where one that had read its
// frames itself would hold 4 KiB, or the 8 KiB the runtime may start
// goroutines with.
//
// The frame's goroutine hands the socket back (handBack) when its handler
// is done or starts a store read, whichever comes first; during a store
// read the loop already waits for the next frame, so that it sees the
// connection end and cancels the read (a client that joins a large room
// and leaves at once costs no read). The next frame is handled only after
// this one: in order, one at a time.
func (c *conn) readLoop() (clean bool, why string) {
	var busy chan struct{} // closed when the last frame's goroutine is done
	defer func() {
		if busy != nil {
			<-busy
		}
	}()
	for {
		c.waitIdle()
		n, all := c.skipPongs()
		for range n {
			c.allow("") // pongs count against the rate limit too
		}
		if all {
			continue
		}
		prev := busy
		busy = make(chan struct{})
		ended := make(chan frameEnd, 1)
		go c.frame(prev, busy, ended)
		if e := <-ended; e.ended {
			return e.clean, e.why
		}
	}
}

// frameEnd is what frame tells the read loop when it gives the socket
// back: whether the connection ended, and how.
type frameEnd struct {
	ended, clean bool
	why          string
}

// frame reads the next frame and waits until prev (the last frame's
// goroutine) is done. If the connection ended, it tells the read loop so
// through ended; else it handles the frame and hands the socket back
// through ended (handBack). It closes done when it is finished. No context
// for the read: a cancellable one costs an AfterFunc per read, and
// Shutdown ends read loops by closing their connections.
func (c *conn) frame(prev <-chan struct{}, done chan<- struct{}, ended chan<- frameEnd) {
	defer close(done)
	wait := func() {
		if prev != nil {
			<-prev
		}
	}
	end := func(clean bool, why string) {
		wait()
		ended <- frameEnd{ended: true, clean: clean, why: why}
	}
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		c.mu.Lock()
		c.ended = true
		c.stopReading()
		c.mu.Unlock()
		switch st := websocket.CloseStatus(err); {
		case c.peek.timedOut():
			wait()
			c.closeSync(protocol.CloseFrameTimeout, "frame not finished in time")
			end(false, "frame not finished in time")
		case st != -1:
			end(true, fmt.Sprintf("client closed (%d)", st))
		case errors.Is(err, io.EOF) || errors.Is(err, context.Canceled):
			end(false, "connection lost")
		default:
			end(false, err.Error())
		}
		return
	}
	if typ == websocket.MessageBinary {
		// Read past it (bounded by the read limit), then close; the
		// handshake reads the client's close frame itself.
		io.Copy(io.Discard, r)
		wait()
		c.closeSync(protocol.CloseBinary, "binary frame")
		end(false, "binary frame")
		return
	}
	// Frames are read into a pooled buffer: an idle connection keeps none.
	buf := frameBufs.Get().(*bytes.Buffer)
	defer putFrameBuf(buf)
	if _, err := buf.ReadFrom(r); err != nil {
		if c.peek.timedOut() {
			// The socket's read deadline is past, so the close
			// handshake's read of the client's close frame fails at once.
			wait()
			c.closeSync(protocol.CloseFrameTimeout, "frame not finished in time")
			end(false, "frame not finished in time")
			return
		}
		// Over the read limit, the library has already sent 1009.
		end(false, err.Error())
		return
	}
	wait()
	if !utf8.Valid(buf.Bytes()) {
		c.closeSync(protocol.CloseNotUTF8, "invalid UTF-8")
		end(false, "invalid UTF-8")
		return
	}
	c.readLoopWaits = ended
	c.handling.Store(true)
	c.srv.metrics.framesIn.Inc()
	c.handle(buf.Bytes()) // recovers its own panics
	c.handBack()
}

// handBack gives the socket back to the read loop, once per frame: when
// the frame's handler starts a store read (readContext), so that the
// read loop sees the connection end and cancels the read, or else when
// the handler is done.
//
// Not before: a frame's fan-out wakes the writer of every member, and the
// read loop, readied after that (into the scheduler's next slot), reads
// the sender's next frame before those writers run. On a busy server each
// writer then finds several events queued and sends them in one write.
// Handing the socket back before the fan-out put the read loop behind
// every writer it woke, so each event took a write per member: 1×1000
// fan-out fell to a third (docs/benchmarks.md, "The 1×1000 regression").
//
// Called only from the frame's own goroutine.
func (c *conn) handBack() {
	if w := c.readLoopWaits; w != nil {
		c.readLoopWaits = nil
		c.handling.Store(false)
		w <- frameEnd{}
	}
}

// waitIdle parks the read loop, between frames, until the client sends
// something (see peekConn). It does not wait when the library's buffer
// already holds the start of a frame, or when the connection is closing:
// then the library's close handshake may be reading that buffer, and the
// read loop leaves the waiting to the library.
func (c *conn) waitIdle() {
	c.mu.Lock()
	idle := !c.closing && c.br.Buffered() == 0
	c.mu.Unlock()
	if idle {
		c.peek.wait()
	}
}

// skipPongs takes the pong frames at the head of the library's buffer out
// of it, if they are whole there, and reports how many it took, and
// whether it took some and nothing else is buffered: the answers to the
// keepalive's pings, which
// the library would read and then wait inside its reader for the next
// frame, deep in the stack that waitIdle keeps shallow. (Any byte from
// the client counts as the answer: see wheel.) Like waitIdle, it leaves
// the buffer alone while the connection closes.
func (c *conn) skipPongs() (took int, all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return 0, false
	}
	// The bytes wait read are in peekConn; Peek of at most what it holds
	// moves them into the buffer without blocking.
	if c.br.Buffered() == 0 {
		c.peek.mu.Lock()
		n := int(c.peek.w - c.peek.r)
		c.peek.mu.Unlock()
		if n == 0 {
			return 0, false
		}
		c.br.Peek(min(n, c.br.Size()))
	}
	for {
		b := c.br.Buffered()
		hdr, _ := c.br.Peek(min(b, 2))
		// A pong from a client: FIN and opcode 0xA, masked, payload under 126.
		if len(hdr) < 2 || hdr[0] != 0x8a || hdr[1]&0x80 == 0 || hdr[1]&0x7f > 125 {
			return took, took > 0 && b == 0
		}
		size := 2 + 4 + int(hdr[1]&0x7f)
		if b < size {
			return took, false
		}
		c.br.Discard(size)
		took++
	}
}

var frameBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putFrameBuf(b *bytes.Buffer) {
	b.Reset()
	frameBufs.Put(b)
}

// handle decodes and runs one frame. A panic here is logged and answered
// with an internal error: it ends neither the connection nor the process.
func (c *conn) handle(frame []byte) {
	var reqID string
	defer func() {
		if p := recover(); p != nil {
			c.srv.log.Error("panic handling frame", "user", c.user.ID(), "panic", p, "stack", string(debug.Stack()))
			c.reply(reqID, errInternal)
		}
	}()
	// Shutdown waits for frames being handled, so that a msg accepted here
	// is in the store's queue before Shutdown flushes it.
	c.srv.frames.RLock()
	if c.srv.shutting.Load() {
		c.srv.frames.RUnlock()
		c.reply("", errShuttingDown)
		return
	}
	defer c.srv.frames.RUnlock()
	// Decode first so that a rate_limited error can carry the request id;
	// every frame counts against the limit, valid or not.
	env, perr := protocol.DecodeEnvelope(frame)
	if perr == nil {
		if perr = c.srv.limits.CheckID(env.ID); perr != nil {
			env.ID = "" // not echoed: it is too long to be anyone's id
		}
	}
	reqID = env.ID
	// The connection's limit, then its user's over all its connections
	// (a resume gives each new connection a fresh limit).
	if !c.allow(reqID) {
		return
	}
	if !c.user.TakeFrame() {
		c.refuseFrame(reqID, protocol.Errorf(protocol.CodeRateLimited, "too many messages from your user over all its connections; the limit is %g per second", c.srv.limits.Rate))
		return
	}
	if perr != nil {
		c.reply("", perr)
		return
	}
	if err := c.dispatch(env); err != nil {
		c.reply(reqID, err)
	}
}

// allow takes one frame's worth from the connection's rate limit, and
// reports whether there was one (always, with the limit off). When there
// was none, the frame is refused: rejected frames draw from a second
// bucket (abuse), and the one that finds it empty closes the connection
// with 1008; the others are answered with rate_limited (carrying reqID).
// Text frames call it from their handler; pings and pongs from the client
// call it too (control), so a flood of them is treated as one of messages
// (SPEC §4 "Rules and limits").
func (c *conn) allow(reqID string) bool {
	if c.limiter == nil || c.limiter.Allow() {
		return true
	}
	c.refuseFrame(reqID, protocol.Errorf(protocol.CodeRateLimited, "too many frames; the limit is %g per second, pings and pongs included", c.srv.limits.Rate))
	return false
}

// refuseFrame answers a frame that a rate limit refused with err, or,
// once rejected frames have used up the abuse budget, closes the
// connection with 1008.
func (c *conn) refuseFrame(reqID string, err error) {
	if !c.abuse.Allow() {
		c.srv.metrics.errors.WithLabelValues(protocol.CodeRateLimited).Inc()
		c.closeWith(protocol.CloseRateAbuse, "rate abuse")
		return
	}
	c.reply(reqID, err)
}

// onPing and onPong are the library's callbacks for a ping or pong from
// the client (the pongs that skipPongs takes are charged by readLoop):
// each counts against the rate limit as a frame does. A ping past the
// limit gets no pong. The library calls them while it reads, on a frame's
// goroutine or the close handshake's, with no lock of ours held.
func (c *conn) onPing(context.Context, []byte) bool { return c.allow("") }
func (c *conn) onPong(context.Context, []byte)      { c.allow("") }

var (
	errInternal     = protocol.Errorf(protocol.CodeInternal, "the server failed to handle this frame")
	errShuttingDown = protocol.Errorf(protocol.CodeShuttingDown, "the server is shutting down; reconnect in a moment")
)

// dispatch runs one decoded frame and returns the error to answer with.
func (c *conn) dispatch(env protocol.Envelope) error {
	lim := c.srv.limits
	reg := c.srv.reg
	switch env.Type {
	case protocol.TypeJoin:
		var p protocol.Join
		if err := protocol.DecodePayload(env, &p); err != nil {
			return err
		}
		if err := lim.CheckRoomID("roomID", p.RoomID); err != nil {
			return err
		}
		name := ""
		if p.Name != "" {
			n, err := lim.CleanName("name", p.Name)
			if err != nil {
				return err
			}
			name = n
		}
		if p.Since != nil && *p.Since < 0 {
			return protocol.FieldErrorf(protocol.CodeBadPayload, "since", `"since" must be a whole number ≥ 0`)
		}
		ctx, done := c.readContext()
		defer done()
		return reg.Join(ctx, c.user, c, p.RoomID, name, p.Since, env.ID)

	case protocol.TypeHistory:
		var p protocol.HistoryRequest
		if err := protocol.DecodePayload(env, &p); err != nil {
			return err
		}
		if err := c.checkOptionalRoom(p.RoomID); err != nil {
			return err
		}
		if p.After == nil || *p.After < 0 {
			return protocol.FieldErrorf(protocol.CodeBadPayload, "after", `"after" is required: a whole number ≥ 0, the last seq the client has`)
		}
		if err := lim.CheckPageLimit("limit", p.Limit); err != nil {
			return err
		}
		ctx, done := c.readContext()
		defer done()
		h, err := reg.History(ctx, c.user, p.RoomID, *p.After, p.Limit)
		if err != nil {
			return err
		}
		c.Queue(protocol.Encode(protocol.TypeHistory, env.ID, h))
		return nil

	case protocol.TypeEvent:
		var p protocol.SendEvent
		if err := protocol.DecodePayload(env, &p); err != nil {
			return err
		}
		if err := c.checkOptionalRoom(p.RoomID); err != nil {
			return err
		}
		if err := lim.CheckEventName("name", p.Name); err != nil {
			return err
		}
		if err := lim.CheckEventData("data", p.Data); err != nil {
			return err
		}
		return reg.Event(c.user, p.RoomID, p.Name, p.Data)

	case protocol.TypeMsg:
		var p protocol.Send
		if err := protocol.DecodePayload(env, &p); err != nil {
			return err
		}
		if err := c.checkOptionalRoom(p.RoomID); err != nil {
			return err
		}
		if err := lim.CheckMessage("message", p.Message); err != nil {
			return err
		}
		c.srv.metrics.msgsIn.Inc()
		return reg.Send(c.user, p.RoomID, p.Message, env.ID)

	case protocol.TypeLeave:
		var p protocol.RoomRef
		if err := protocol.DecodePayload(env, &p); err != nil {
			return err
		}
		if err := c.checkOptionalRoom(p.RoomID); err != nil {
			return err
		}
		return reg.Leave(c.user, c, p.RoomID, env.ID)

	case protocol.TypeCreate:
		id := room.NewRoomID()
		c.Queue(protocol.Encode(protocol.TypeCreated, env.ID, protocol.Created{RoomID: id, URL: c.linkBase + "/r/" + id}))
		return nil

	case protocol.TypeTyping:
		var p protocol.RoomRef
		if err := protocol.DecodePayload(env, &p); err != nil {
			return err
		}
		if err := c.checkOptionalRoom(p.RoomID); err != nil {
			return err
		}
		return reg.Typing(c.user, p.RoomID)

	case protocol.TypePing:
		c.Queue(protocol.Encode(protocol.TypePong, env.ID, nil))
		return nil
	}
	return protocol.FieldErrorf(protocol.CodeUnknownType, "type", "unknown frame type %q; known types: join, msg, leave, create, typing, ping, history, event", truncate(env.Type, 32))
}

func (c *conn) checkOptionalRoom(id string) error {
	if id == "" {
		return nil
	}
	if err := c.srv.limits.CheckRoomID("roomID", id); err != nil {
		return err
	}
	return nil
}

// reply queues an error frame. A *protocol.Error goes to the client as it
// is; anything else is logged and the client sees only "internal".
func (c *conn) reply(reqID string, err error) {
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		c.srv.log.Error("handling frame", "user", c.user.ID(), "err", err)
		pe = errInternal
	}
	c.srv.metrics.errors.WithLabelValues(pe.Code).Inc()
	c.Queue(protocol.EncodeError(reqID, pe))
}

// pingMarker, queued like a frame, makes the writer send a WebSocket
// ping (netWriter.ping) in its place: the keepalive wheel pings each
// connection through its own writer, so a ping never blocks the wheel and
// never goes into the middle of another frame.
var pingMarker = []byte{0}

func isPing(f []byte) bool { return len(f) == 1 && &f[0] == &pingMarker[0] }

// renewToken gives the connection's user a new resume token and sends it
// in a resume event (SPEC §4 "Identity across reconnects"): the keepalive
// wheel calls it for a connection whose token is half ResumeMaxAge old, so
// that the client holds a token that resumes when the connection drops,
// however long it was open. Nothing is sent if the user has moved to
// another connection.
func (c *conn) renewToken() {
	if tok := c.srv.reg.Reissue(c.user, c); tok != "" {
		c.Queue(protocol.Encode(protocol.TypeResume, "", protocol.Resume{Resume: tok}))
	}
}

// keepaliveTimeout drops a connection whose peer sent nothing within
// PingTimeout of a ping, unless it is closing anyway.
func (c *conn) keepaliveTimeout() {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if !closing {
		c.srv.log.Info("keepalive timeout", "user", c.user.ID())
		c.ws.CloseNow()
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// baseURL is the scheme and host a share link starts with.
func (s *Server) baseURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
