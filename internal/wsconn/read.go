package wsconn

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// WaitReadable blocks until the client has sent bytes the library has not
// read yet (or the socket fails), keeping them for the library. It does
// not wait when the library's buffer already holds the start of a frame,
// or after Closing: then the library's close handshake may be reading
// that buffer, and the waiting is left to it.
//
// Waiting here, a few frames above the runtime's netpoll, rather than
// inside the library's reader keeps the waiting goroutine's stack shallow
// (see peekConn).
func (c *Conn) WaitReadable() {
	c.mu.Lock()
	idle := !c.closing && c.br.Buffered() == 0
	c.mu.Unlock()
	if idle {
		c.rd.wait()
	}
}

// TakePongs takes the pong frames at the head of the library's buffer out
// of it, if they are whole there, and reports how many it took, and
// whether it took some and nothing else is buffered: the answers to the
// keepalive's pings, which the library would read and then wait inside
// its reader for the next frame, deep in the stack that WaitReadable
// keeps shallow. Call it between messages, when no library read is in
// progress. Like WaitReadable, it leaves the buffer alone after Closing.
func (c *Conn) TakePongs() (took int, all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return 0, false
	}
	// The bytes wait read are in peekConn; Peek of at most what it holds
	// moves them into the buffer without blocking.
	if c.br.Buffered() == 0 {
		c.rd.mu.Lock()
		n := int(c.rd.w - c.rd.r)
		c.rd.mu.Unlock()
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

// Reads counts the reads from the socket that returned bytes: a keepalive
// can take any byte from the client after a ping as a sign of life.
func (c *Conn) Reads() uint64 { return c.rd.reads.Load() }

// TimedOut reports whether a read failed because a client's message took
// longer than the frame timeout given to Accept.
func (c *Conn) TimedOut() bool { return c.rd.timedOut() }

// peekConn is the socket as the library reads it. Between frames the
// caller of WaitReadable waits for the next bytes (wait), a few frames
// above the runtime's netpoll; the library's next Read gets them first,
// unless TakePongs finds they are a pong and takes it. An idle
// connection's read-loop goroutine is then parked with a shallow stack,
// where waiting inside the library's reader would keep some 3 KiB in use.
// Reads are serialized: the library's close handshake, and each frame's
// goroutine, read from other goroutines.
//
// It also bounds how long a client's data message may take to arrive
// (timeout, the frame timeout given to Accept): a message started and
// never finished would hold a goroutine and a buffer of up to the read
// limit, and one byte per keepalive interval is enough to keep the
// connection alive. It follows the client's frames in what it reads from
// the socket (msgTracker). A read from the socket that brings the first
// byte of a message that it does not finish makes sure of a read deadline
// between timeout and timeout + timeout/10 from then (took); past it, a
// read fails with os.ErrDeadlineExceeded (timedOut reports it), and the
// caller closes the connection. The deadline is left in place after the
// message, so that a client that talks steadily needs a new one at most
// every timeout/10; one left over that expires between messages is
// cleared and the read made again, unseen by the library. A message that
// arrives in one read costs nothing.
type peekConn struct {
	net.Conn
	timeout time.Duration // set at Hijack, then read-only; 0: no bound

	// reads counts reads that returned bytes: the keepalive takes any
	// byte from the client after a ping as a sign of life.
	reads atomic.Uint64

	mu   sync.Mutex // serializes reads; guards the fields below
	buf  [16]byte   // what wait read, for the library; a pong fits
	r, w uint8      // buf[r:w] is not yet given to the library
	// armed is set once the message the socket's bytes stop in has its
	// deadline; expired, once a read failed on it.
	armed, expired bool
	err            error // what wait's read failed with, for the library's next Read
	// msgs follows the frames read from the socket.
	msgs msgTracker
	// deadline is the socket's read deadline as last set (Unix ns); 0:
	// none.
	deadline int64
}

// wait blocks until the socket has bytes to read (or fails), keeping what
// one read returns for the library.
func (c *peekConn) wait() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.r < c.w || c.err != nil {
		return
	}
	n, err := c.readSocket(c.buf[:], true)
	c.r, c.w, c.err = 0, uint8(n), err
}

func (c *peekConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case len(p) == 0:
		return 0, nil
	case c.r < c.w:
		n := copy(p, c.buf[c.r:c.w])
		c.r += uint8(n)
		return n, nil
	case c.err != nil:
		return 0, c.err
	}
	return c.readSocket(p, false)
}

// readSocket reads from the socket and follows the frames in what it
// read (took). A read that fails on a deadline outside a message (one
// left from the last) is made again without it. loop says that the
// caller is the read loop (wait): see setReadDeadline. Guarded by c.mu.
func (c *peekConn) readSocket(p []byte, loop bool) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.reads.Add(1)
			c.took(p[:n], loop)
		}
		if n > 0 || err == nil || c.deadline == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if c.msgs.inMessage() {
			c.expired = true
			return n, err
		}
		c.deadline = 0
		c.setReadDeadline(time.Time{}, loop)
	}
}

// setReadDeadline sets the socket's read deadline. Setting one goes deep
// into the runtime's poller; on the read loop's goroutine (loop) that
// would grow its stack past the 2 KiB it parks in, and it would keep the
// 4 KiB it grew to while the connection idles (measured: 1.1 KB more
// stack per idle connection). So there it is set from a goroutine of its
// own, which the read loop waits for: at most once per message that
// spans reads and once per deadline left over between messages. Guarded
// by c.mu.
func (c *peekConn) setReadDeadline(t time.Time, loop bool) {
	if !loop {
		c.Conn.SetReadDeadline(t)
		return
	}
	done := make(chan struct{})
	go func() {
		c.Conn.SetReadDeadline(t)
		close(done)
	}()
	<-done
}

// took follows the frames in bytes read from the socket, and makes sure
// that a message they stop inside has its read deadline: between timeout
// and timeout + timeout/10 from the read that brought its first byte (any
// deadline in that span will do, so that one set for a message can serve
// the next ones). Guarded by c.mu.
func (c *peekConn) took(b []byte, loop bool) {
	c.msgs.feed(b)
	if c.msgs.ended {
		c.armed, c.msgs.ended = false, false // that message is over
	}
	if c.timeout <= 0 || c.armed || !c.msgs.inMessage() {
		return
	}
	c.armed = true
	due, slack := time.Now().Add(c.timeout).UnixNano(), int64(c.timeout/10)
	if c.deadline < due || c.deadline > due+slack {
		c.deadline = due + slack
		c.setReadDeadline(time.Unix(0, c.deadline), loop)
	}
}

// timedOut reports whether a read failed because a message took longer
// than timeout.
func (c *peekConn) timedOut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expired
}

// msgTracker follows the frames a client sends (RFC 6455 §5.2; a client's
// are masked) as they are read in arbitrary pieces, to tell whether a data
// message is in progress: a frame's header or payload is incomplete, or
// its last data frame had no FIN (a fragmented message goes on, whatever
// control frames come between). It costs a few comparisons per read, and
// nothing per byte of payload.
type msgTracker struct {
	b0, b1     byte  // the current frame's first two header bytes
	have, need uint8 // header bytes of the current frame seen, and its length once b1 is
	more       bool  // the last data frame had no FIN: its message goes on
	// ended is set when a frame ends outside a data message (the last
	// frame of a message, or a control frame between messages); the
	// reader clears it.
	ended bool
	// left is the payload bytes of the current frame still to come; while
	// its header is read, the extended payload length as it arrives.
	left int64
}

// inMessage reports whether the bytes so far stop inside a data message
// (or inside any frame).
func (t *msgTracker) inMessage() bool { return t.have > 0 || t.left > 0 || t.more }

// feed takes the next bytes of the stream.
func (t *msgTracker) feed(p []byte) {
	for len(p) > 0 {
		if t.have == 0 && t.left > 0 {
			n := min(int64(len(p)), t.left)
			t.left -= n
			p = p[n:]
			if t.left == 0 {
				t.end()
			}
			continue
		}
		b := p[0]
		p = p[1:]
		switch t.have {
		case 0:
			t.b0 = b
		case 1:
			t.b1 = b
			t.need = 2
			switch b & 0x7f {
			case 126:
				t.need += 2
			case 127:
				t.need += 8
			}
			if b&0x80 != 0 {
				t.need += 4 // the masking key
			}
		default:
			if t.b1&0x7f >= 126 && t.have < t.need-(t.b1>>7)*4 {
				t.left = t.left<<8 | int64(b)
			}
		}
		t.have++
		if t.have >= 2 && t.have == t.need {
			if n := t.b1 & 0x7f; n < 126 {
				t.left = int64(n)
			}
			t.have, t.need = 0, 0
			if t.left <= 0 {
				t.left = 0 // a length past 2^63 is the library's to refuse
				t.end()
			}
		}
	}
}

// end records that the current frame is complete.
func (t *msgTracker) end() {
	if t.b0&0x08 == 0 { // a data frame: text, binary or continuation
		t.more = t.b0&0x80 == 0
	}
	if !t.more {
		t.ended = true
	}
}
