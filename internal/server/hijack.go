package server

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The WebSocket library reads and writes through the bufio pair that
// Hijack returns; net/http's are 4 KiB each. An idle chat connection needs
// neither: reads of a frame larger than the read buffer go straight to the
// socket, and writes go through netWriter, which collects a whole drain of
// the queue before one write to the socket. Small buffers keep an idle
// connection in kilobytes.
const (
	// readBufSize fits a typical chat frame (header and payload) in one read.
	readBufSize = 128
	// writeBufSize only has to hold a frame header before it reaches
	// netWriter, which does the real buffering.
	writeBufSize = 16
)

// hijackWriter hands the WebSocket library small buffers at Hijack, keeping
// any bytes net/http had already read.
type hijackWriter struct {
	http.ResponseWriter
	// frameTimeout is the peekConn's: how long a client's message may take
	// from its first byte to its last (Config.FrameTimeout).
	frameTimeout time.Duration
	nw           *netWriter    // set by Hijack
	peek         *peekConn     // set by Hijack
	br           *bufio.Reader // set by Hijack: the library reads frames from it
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// A client may send its first frames right behind the handshake, and
	// net/http may have read them already. The library keeps only what the
	// returned reader has buffered (it resets the reader onto conn), so the
	// new reader must hold those bytes in its buffer. They came from the
	// socket: peekConn follows the frames from there (msgTracker).
	n := brw.Reader.Buffered()
	pc := &peekConn{Conn: conn, timeout: w.frameTimeout}
	br := bufio.NewReaderSize(pc, readBufSize)
	if n > 0 {
		b, _ := brw.Reader.Peek(n)
		pc.took(b, false)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), pc), max(n, readBufSize))
		if _, err := br.Peek(n); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	w.nw, w.peek, w.br = &netWriter{conn: conn}, pc, br
	return pc, bufio.NewReadWriter(br, bufio.NewWriterSize(w.nw, writeBufSize)), nil
}

// peekConn is the socket as the library reads it. Between frames the read
// loop waits for the next bytes itself (wait), a few frames above the
// runtime's netpoll; the library's next Read gets them first, unless the
// read loop finds they are a pong, which it takes itself (conn.skipPongs).
// An idle connection's read-loop goroutine is then parked with a shallow
// stack (see conn.readLoop), where waiting inside the library's reader
// would keep some 3 KiB in use. Reads are serialized: the library's close
// handshake, and each frame's goroutine, read from other goroutines.
//
// It also bounds how long a client's data message may take to arrive
// (timeout, Config.FrameTimeout): a message started and never finished
// would hold its frame's goroutine and a buffer of up to 64 KiB, and one
// byte per keepalive interval is enough to keep the connection alive. It
// follows the client's frames in what it reads from the socket
// (msgTracker). A read from the socket that brings the first byte of a
// message that it does not finish makes sure of a read deadline between
// timeout and timeout + timeout/10 from then (took); past it, a read
// fails with os.ErrDeadlineExceeded (timedOut reports it) and the
// connection is closed (conn.frame). The deadline is left in place after
// the message, so that a client that talks steadily needs a new one at
// most every timeout/10; one left over that expires between messages is
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

// netWriter is the writer under the library's bufio.Writer. Outside a
// drain it passes writes to the socket (the library's own pong and close
// frames). Between hold and release it collects them in a pooled buffer,
// so the writer sends a whole drain of the queue in one syscall.
type netWriter struct {
	conn net.Conn

	mu   sync.Mutex // serializes socket writes; guards the fields below
	held bool
	buf  *[]byte
	// broken is set when a drain failed after part of it was written: the
	// peer holds part of a frame, so nothing more may follow (a close
	// frame would be read as the rest of it).
	broken bool
	// frames follows the frames the library writes, which take several
	// writes each, so that a keepalive ping (ping) goes between two
	// frames, never into one; pendingPing holds one that came mid-frame.
	// tracking is set once the handshake's response (not frames) is out.
	frames      frameTracker
	pendingPing bool
	tracking    bool
	// deadline is the socket's write deadline as last set (Unix ns), so
	// that a drain sets a new one only when it is near (writeSteady).
	deadline int64
}

// track starts following frames: call it once the handshake is done.
func (w *netWriter) track() {
	w.mu.Lock()
	w.tracking, w.frames = true, frameTracker{}
	w.mu.Unlock()
}

// pingFrame is a WebSocket ping with no payload, as the server sends it
// (unmasked).
var pingFrame = []byte{0x89, 0x00}

// ping writes a ping frame at the next frame boundary. Called by the
// connection's writer between hold and release, it only appends to the
// drain.
func (w *netWriter) ping() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.frames.closed {
		return // nothing but the close handshake after a close frame
	}
	if !w.frames.boundary() {
		w.pendingPing = true
		return
	}
	w.emit(pingFrame)
}

// emit writes p as the library's writes are written: to the drain while
// held, else to the socket. Guarded by w.mu.
func (w *netWriter) emit(p []byte) (int, error) {
	if w.held {
		*w.buf = append(*w.buf, p...)
		return len(p), nil
	}
	if w.broken {
		return 0, errBroken
	}
	// The library's own frames (pong, close): a deadline left by an
	// earlier drain may have passed, so give this write its own.
	d := time.Now().Add(controlWriteTimeout)
	w.conn.SetWriteDeadline(d)
	w.deadline = d.UnixNano()
	n, err := w.conn.Write(p)
	if err != nil {
		// The library abandons the frame: nothing may follow it.
		w.broken = true
	}
	return n, err
}

// text appends one text frame to the drain, its payload the lines, each
// followed by '\n' if nl is set. Called by the connection's writer between
// hold and release. The writer frames its events itself rather than
// through the library's Write, which for the same bytes takes a lock
// through a select, resets a message writer and passes the frame through
// a 16-byte bufio.Writer: a fifth of the server's CPU at a fixed 20,000
// deliveries/s. Server frames are not masked, and compression is not
// negotiated, so a frame is its header and the payload.
//
// The library still writes its own control frames (pong, close) through
// Write, in pieces; text waits for one it is in the middle of to end, and
// refuses to write after a close frame, as the library's Write does.
func (w *netWriter) text(lines [][]byte, nl bool) error {
	n := 0
	for _, l := range lines {
		n += len(l)
	}
	if nl {
		n += len(lines)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// While held, the library's writes only append, so its frame ends as
	// soon as its goroutine runs again; a failed write marks w broken.
	for !w.frames.boundary() && !w.broken {
		w.mu.Unlock()
		runtime.Gosched()
		w.mu.Lock()
	}
	switch {
	case w.broken:
		return errBroken
	case w.frames.closed:
		return net.ErrClosed
	}
	b := *w.buf
	switch {
	case n < 126:
		b = append(b, 0x81, byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x81, 126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x81, 127), uint64(n))
	}
	for _, l := range lines {
		b = append(b, l...)
		if nl {
			b = append(b, '\n')
		}
	}
	*w.buf = b
	return nil
}

// frameTracker follows a stream of server frames (unmasked) written in
// pieces, to tell where one ends.
type frameTracker struct {
	hdr    [10]byte
	have   int   // header bytes of the current frame seen so far
	need   int   // the header's length, once its second byte is seen
	left   int64 // payload bytes of the current frame still to come
	closed bool  // a close frame's header has been seen
}

// boundary reports whether the bytes so far end a frame.
func (t *frameTracker) boundary() bool { return t.have == 0 && t.left == 0 }

// feed takes the next bytes of the stream.
func (t *frameTracker) feed(p []byte) {
	for len(p) > 0 {
		if t.left > 0 {
			n := min(int64(len(p)), t.left)
			t.left -= n
			p = p[n:]
			continue
		}
		t.hdr[t.have] = p[0]
		t.have++
		p = p[1:]
		if t.have == 2 {
			switch t.hdr[1] & 0x7f {
			case 126:
				t.need = 4
			case 127:
				t.need = 10
			default:
				t.need = 2
			}
		}
		if t.have >= 2 && t.have == t.need {
			switch t.need {
			case 4:
				t.left = int64(binary.BigEndian.Uint16(t.hdr[2:4]))
			case 10:
				t.left = int64(binary.BigEndian.Uint64(t.hdr[2:10]))
			default:
				t.left = int64(t.hdr[1] & 0x7f)
			}
			if t.hdr[0]&0x0f == 0x8 {
				t.closed = true
			}
			t.have, t.need = 0, 0
		}
	}
}

// errBroken answers writes after a drain was cut off mid-frame.
var errBroken = errors.New("connection cut off in the middle of a frame")

var drainBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (w *netWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.emit(p)
	if w.tracking {
		w.frames.feed(p[:n])
	}
	if err == nil && w.pendingPing && w.frames.boundary() {
		w.pendingPing = false
		if _, err := w.emit(pingFrame); err != nil {
			return n, err
		}
	}
	return n, err
}

// controlWriteTimeout bounds a write of the library's own control frames,
// as its close handshake does (5 s).
const controlWriteTimeout = 5 * time.Second

// hold starts collecting writes.
func (w *netWriter) hold() {
	w.mu.Lock()
	w.held = true
	w.buf = drainBufs.Get().(*[]byte)
	w.mu.Unlock()
}

// release writes what was collected and stops collecting. The write
// fails once the socket has taken no byte of it for timeout (see
// writeSteady); a write that keeps making progress may take longer.
func (w *netWriter) release(timeout time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held = false
	b := w.buf
	w.buf = nil
	var err error
	if len(*b) > 0 {
		var n int
		n, err = writeSteady(w.conn, *b, timeout, &w.deadline)
		if err != nil && n > 0 {
			w.broken = true
		}
	}
	if cap(*b) <= 256<<10 {
		*b = (*b)[:0]
		drainBufs.Put(b)
	}
	return err
}

// progressChecks is how many times per timeout writeSteady looks for
// progress: a peer that stops reading is found between timeout and
// timeout + timeout/progressChecks after the socket took its last byte.
const progressChecks = 5

// writeSteady writes b to conn and returns how much it wrote. It fails
// only when conn has taken no byte for timeout: a client that reads a
// large backlog slowly but steadily gets all of it, and one that stops
// reading is found within about timeout. One Write covers the usual case
// (the socket takes everything at once); a write that blocks is given a
// deadline and, each time it passes with some bytes taken, a fresh one
// timeout/progressChecks away (a deadline that has passed may be
// extended: net.Conn's Write returns what it wrote before it).
//
// *deadline is the deadline conn has (Unix ns), which writeSteady keeps
// up to date. Setting one costs a lock and a runtime timer update, a
// twentieth of the server's CPU at 60,000 deliveries/s when every write
// set its own, so the first Write of a call keeps the one in place while
// at least half a step of it is left: a write blocked from its start then
// fails its first try between step/2 and step in, and goes on as above.
// Deadlines are left in place afterwards.
func writeSteady(conn net.Conn, b []byte, timeout time.Duration, deadline *int64) (int, error) {
	step := max(timeout/progressChecks, time.Millisecond)
	total := 0
	last := time.Now() // when the socket last took bytes
	now, expired := last, false
	for {
		left := timeout - now.Sub(last)
		if left <= 0 {
			return total, os.ErrDeadlineExceeded
		}
		if expired || now.UnixNano()+int64(step/2) > *deadline || *deadline > now.Add(left).UnixNano() {
			d := now.Add(min(step, left))
			conn.SetWriteDeadline(d)
			*deadline = d.UnixNano()
		}
		n, err := conn.Write(b)
		total += n
		b = b[n:]
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		now, expired = time.Now(), true
		if n > 0 {
			last = now
		}
	}
}
