package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
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
	nw *netWriter // set by Hijack
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
	// new reader must hold those bytes in its buffer.
	n := brw.Reader.Buffered()
	br := bufio.NewReaderSize(conn, readBufSize)
	if n > 0 {
		b, _ := brw.Reader.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn), max(n, readBufSize))
		if _, err := br.Peek(n); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	w.nw = &netWriter{conn: conn}
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(w.nw, writeBufSize)), nil
}

// netWriter is the writer under the library's bufio.Writer. Outside a
// drain it passes writes to the socket (the library's own pong and close
// frames). Between hold and release it collects them in a pooled buffer,
// so the writer sends a whole drain of the queue in one syscall.
type netWriter struct {
	conn net.Conn

	mu   sync.Mutex // serializes socket writes; guards held, buf and broken
	held bool
	buf  *[]byte
	// broken is set when a drain failed after part of it was written: the
	// peer holds part of a frame, so nothing more may follow (a close
	// frame would be read as the rest of it).
	broken bool
}

// errBroken answers writes after a drain was cut off mid-frame.
var errBroken = errors.New("connection cut off in the middle of a frame")

var drainBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (w *netWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held {
		*w.buf = append(*w.buf, p...)
		return len(p), nil
	}
	if w.broken {
		return 0, errBroken
	}
	// The library's own frames (pong, close): a deadline left by an
	// earlier drain may have passed, so give this write its own.
	w.conn.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	return w.conn.Write(p)
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
		n, err = writeSteady(w.conn, *b, timeout)
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
// deadline timeout/progressChecks away and, each time it passes with some
// bytes taken, a fresh one (a deadline that has passed may be extended:
// net.Conn's Write returns what it wrote before it). Deadlines are left
// in place afterwards: the next drain or control frame sets its own.
func writeSteady(conn net.Conn, b []byte, timeout time.Duration) (int, error) {
	step := max(timeout/progressChecks, time.Millisecond)
	total := 0
	last := time.Now() // when the socket last took bytes
	for {
		now := time.Now()
		left := timeout - now.Sub(last)
		if left <= 0 {
			return total, os.ErrDeadlineExceeded
		}
		conn.SetWriteDeadline(now.Add(min(step, left)))
		n, err := conn.Write(b)
		total += n
		b = b[n:]
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		if n > 0 {
			last = time.Now()
		}
	}
}
