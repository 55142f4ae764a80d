package wsconn

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// Hold starts a drain: from here to Release, Text and Ping append frames to
// it, and so do the library's own writes (pong, close).
func (c *Conn) Hold() { c.wr.hold() }

// Text appends one text frame to the drain, its payload the lines, each
// followed by '\n' if nl is set. Call it between Hold and Release. It fails
// after a close frame (net.ErrClosed) and after a drain was cut off in the
// middle of a frame.
func (c *Conn) Text(lines [][]byte, nl bool) error { return c.wr.text(lines, nl) }

// Ping appends a ping frame to the drain at the next frame boundary. Call
// it between Hold and Release.
func (c *Conn) Ping() { c.wr.ping() }

// Release writes the drain to the socket in one write and ends it. The
// write fails once the socket has taken no byte of it for timeout; one
// that keeps making progress may take longer (see writeSteady).
func (c *Conn) Release(timeout time.Duration) error { return c.wr.release(timeout) }

// netWriter is the writer under the library's bufio.Writer. Outside a
// drain it passes writes to the socket (the library's own pong and close
// frames). Between hold and release it collects them in a pooled buffer,
// so the writer sends a whole drain of the queue in one syscall.
type netWriter struct {
	conn net.Conn

	mu sync.Mutex // serializes socket writes; guards the fields below
	// boundary (on mu) is signalled when the library's writes end a frame,
	// or fail: text waits on it for a frame the library is in the middle of.
	boundary sync.Cond
	held     bool
	buf      *[]byte
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

// ping writes a ping frame at the next frame boundary. Called between hold
// and release, it only appends to the drain.
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
// followed by '\n' if nl is set. Called between hold and release. The
// caller's events are framed here rather than through the library's
// Write, which for the same bytes takes a lock through a select, resets a
// message writer and passes the frame through a 16-byte bufio.Writer: a
// fifth of the server's CPU at a fixed 20,000 deliveries/s. Server frames are not masked, and compression is not
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
	// soon as its goroutine runs again, between two of its writes that do
	// nothing else; a failed write marks w broken. Either signals boundary.
	for !w.frames.boundary() && !w.broken {
		w.boundary.Wait()
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

// Write is the library's write, through its bufio.Writer: its pong and
// close frames, in pieces.
func (w *netWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.emit(p)
	if w.tracking {
		w.frames.feed(p[:n])
	}
	if err == nil && w.pendingPing && w.frames.boundary() {
		w.pendingPing = false
		_, err = w.emit(pingFrame)
	}
	if w.broken || w.frames.boundary() {
		w.boundary.Broadcast() // for text
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
			w.boundary.Broadcast()
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
