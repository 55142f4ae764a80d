package wsconn

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
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

// Conn is the socket under one accepted websocket.Conn: what the library
// reads (a peekConn, through its bufio.Reader br) and what it writes (a
// netWriter). Its methods are safe for concurrent use, but the read side
// (WaitReadable, TakePongs) belongs to one reader at a time and the write
// side (Hold, Text, Ping, Release) to one writer at a time.
type Conn struct {
	rd peekConn      // the socket as the library reads it
	wr netWriter     // the socket as the library and the writer write it
	br *bufio.Reader // the library's read buffer, over rd

	mu sync.Mutex // guards closing; held over br's use by TakePongs
	// closing is set by Closing: the library's close handshake may read
	// br from then on, so WaitReadable and TakePongs leave it alone.
	closing bool
}

// Accept upgrades r to a WebSocket connection as websocket.Accept does,
// with the socket under it wrapped in a Conn (see doc.go for what this
// relies on). frameTimeout bounds how long a client's data message may take
// from its first byte to its last (0: no bound): past it, the library's
// read fails and TimedOut reports why. On error Accept has answered the
// request, as websocket.Accept does.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions, frameTimeout time.Duration) (*websocket.Conn, *Conn, error) {
	hw := &hijacker{ResponseWriter: w, frameTimeout: frameTimeout}
	ws, err := websocket.Accept(hw, r, opts)
	if err != nil {
		return nil, nil, err
	}
	c := hw.c
	c.wr.track() // the 101 response is out: frames from here on
	if hw.early > 0 {
		// Accept took the bytes behind the request out of br's buffer and
		// reset br onto a reader that returns them first, from the same
		// array. Peek brings them back into the buffer without touching
		// the socket, so that WaitReadable sees them; else a frame that
		// came with the request would wait for the client's next bytes.
		c.br.Peek(hw.early)
	}
	return ws, c, nil
}

// hijacker hands the WebSocket library small buffers at Hijack, keeping
// any bytes net/http had already read.
type hijacker struct {
	http.ResponseWriter
	frameTimeout time.Duration
	c            *Conn // set by Hijack
	early        int   // bytes net/http had read past the request; set by Hijack
}

func (w *hijacker) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c := &Conn{}
	c.rd.Conn, c.rd.timeout = conn, w.frameTimeout
	c.wr.conn = conn
	c.wr.boundary.L = &c.wr.mu
	// A client may send its first frames right behind the handshake, and
	// net/http may have read them already. The library keeps only what the
	// returned reader has buffered, so the new reader must hold those bytes
	// in its buffer. They came from the socket: peekConn follows the
	// frames from there (msgTracker).
	n := brw.Reader.Buffered()
	br := bufio.NewReaderSize(&c.rd, readBufSize)
	if n > 0 {
		b, _ := brw.Reader.Peek(n)
		c.rd.took(b, false)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), &c.rd), max(n, readBufSize))
		if _, err := br.Peek(n); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	c.br, w.c, w.early = br, c, n
	return &c.rd, bufio.NewReadWriter(br, bufio.NewWriterSize(&c.wr, writeBufSize)), nil
}

// Closing tells c that the library's close handshake may read from now on:
// WaitReadable and TakePongs no longer touch the library's buffer. Call it
// before Close on the websocket.Conn; it may be called more than once.
func (c *Conn) Closing() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
}

// CloseSocket closes the socket itself, which also ends a close handshake
// in progress (the library's CloseNow would wait for it, up to 5 s).
func (c *Conn) CloseSocket() error { return c.wr.conn.Close() }
