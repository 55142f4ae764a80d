package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/protocol"
)

// readLoop waits for frames until the connection ends; clean reports a
// close frame from the client, and why says how it ended, for the log.
//
// It reads no frame itself. Each frame is read and handled on a
// goroutine of its own (frame): the read loop's goroutine lives as long
// as the connection, and a goroutine keeps the stack it grew to unless it
// later uses less than a quarter of it. Waiting for bytes
// (wire.WaitReadable) and taking pongs (wire.TakePongs) fit in the 2 KiB
// a goroutine starts with;
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
		c.wire.WaitReadable()
		n, all := c.wire.TakePongs()
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
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		c.readFailed(err, prev, ended)
		return
	}
	if typ == websocket.MessageBinary {
		// Read past it (bounded by the read limit), then close; the
		// handshake reads the client's close frame itself.
		io.Copy(io.Discard, r)
		c.endFrame(prev, ended, protocol.CloseBinary, "binary frame")
		return
	}
	// Frames are read into a pooled buffer: an idle connection keeps none.
	buf := frameBufs.Get().(*bytes.Buffer)
	defer putFrameBuf(buf)
	if _, err := buf.ReadFrom(r); err != nil {
		if c.wire.TimedOut() {
			// The socket's read deadline is past, so the close
			// handshake's read of the client's close frame fails at once.
			c.endFrame(prev, ended, protocol.CloseFrameTimeout, "frame not finished in time")
			return
		}
		// Over the read limit, the library has already sent 1009.
		waitFor(prev)
		ended <- frameEnd{ended: true, why: err.Error()}
		return
	}
	waitFor(prev)
	if !utf8.Valid(buf.Bytes()) {
		c.closeSync(protocol.CloseNotUTF8, "invalid UTF-8")
		ended <- frameEnd{ended: true, why: "invalid UTF-8"}
		return
	}
	c.readLoopWaits = ended
	c.handling.Store(true)
	c.srv.metrics.framesIn.Inc()
	c.handle(buf.Bytes()) // recovers its own panics
	c.handBack()
}

// waitFor waits until the last frame's goroutine is done (prev closed);
// nil means there was none.
func waitFor(prev <-chan struct{}) {
	if prev != nil {
		<-prev
	}
}

// endFrame closes the connection with cl once the last frame's goroutine
// is done, and tells the read loop that the connection ended, not clean,
// as why says.
func (c *conn) endFrame(prev <-chan struct{}, ended chan<- frameEnd, cl protocol.Close, why string) {
	waitFor(prev)
	c.closeSync(cl, why)
	ended <- frameEnd{ended: true, why: why}
}

// readFailed is frame's answer to a read that found no next message:
// the connection ended (the client closed, it was lost, or the server
// closed it), or the client's message took longer than FrameTimeout. It
// stops a store read in progress and tells the read loop how the
// connection ended once the last frame's goroutine is done.
func (c *conn) readFailed(err error, prev <-chan struct{}, ended chan<- frameEnd) {
	c.mu.Lock()
	c.ended = true
	c.stopReading()
	c.mu.Unlock()
	if c.wire.TimedOut() {
		c.endFrame(prev, ended, protocol.CloseFrameTimeout, "frame not finished in time")
		return
	}
	e := frameEnd{ended: true}
	switch st := websocket.CloseStatus(err); {
	case st != -1:
		e.clean, e.why = true, fmt.Sprintf("client closed (%d)", st)
	case errors.Is(err, io.EOF) || errors.Is(err, context.Canceled):
		e.why = "connection lost"
	default:
		e.why = err.Error()
	}
	waitFor(prev)
	ended <- e
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

var frameBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putFrameBuf(b *bytes.Buffer) {
	b.Reset()
	frameBufs.Put(b)
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
// the client (the pongs that wire.TakePongs takes are charged by readLoop):
// each counts against the rate limit as a frame does. A ping past the
// limit gets no pong. The library calls them while it reads, on a frame's
// goroutine or the close handshake's, with no lock of ours held.
func (c *conn) onPing(context.Context, []byte) bool { return c.allow("") }
func (c *conn) onPong(context.Context, []byte)      { c.allow("") }
