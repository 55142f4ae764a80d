package wsconn

// One test per behaviour of coder/websocket listed in doc.go, each over
// real loopback sockets, and the test that stops a version bump from
// going by unnoticed.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// pinned is the coder/websocket version whose behaviours doc.go lists.
const pinned = "v1.8.15"

// TestLibraryVersion fails when the build uses another version of
// coder/websocket than the one doc.go's list was checked against. It reads
// the build info's module list; a test binary carries none, so there it
// asks the go command which module the build takes the package from.
func TestLibraryVersion(t *testing.T) {
	const path = "github.com/coder/websocket"
	version := ""
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, m := range info.Deps {
			if m.Path == path {
				if m.Replace != nil {
					m = m.Replace
				}
				version = m.Version
			}
		}
	}
	if version == "" {
		out, err := exec.Command("go", "list", "-f", "{{with .Module}}{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}{{end}}", path).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", path, err)
		}
		version = strings.TrimSpace(string(out))
	}
	if version != pinned {
		t.Fatalf("coder/websocket is %q, not %s: re-check each behaviour that internal/wsconn/doc.go lists against the new version's source (accept.go, read.go, write.go, close.go), then update the list, its tests and pinned", version, pinned)
	}
}

const timeout = 5 * time.Second

// serve runs handler behind a real loopback HTTP server and returns its
// address.
func serve(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	ts := httptest.NewServer(handler)
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://")
}

// dial sends an upgrade request to addr with extra right behind it, in
// one write, and reads the 101 response. header adds request lines.
func dial(t *testing.T, addr string, extra []byte, header ...string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(timeout))
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, h := range header {
		req += h + "\r\n"
	}
	if _, err := c.Write(append([]byte(req+"\r\n"), extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %s", res.Status)
	}
	return c, br, res
}

// clientFrame is a masked client frame (RFC 6455 §5.3) with the masking
// key 0, so the payload goes as it is.
func clientFrame(op byte, payload string) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	default:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	}
	return append(append(b, 0, 0, 0, 0), payload...)
}

// readFrame reads one server frame: its first byte and payload.
func readFrame(t *testing.T, br *bufio.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("read a frame: %v", err)
	}
	if h[1]&0x80 != 0 {
		t.Fatal("the server masked a frame")
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var e [2]byte
		io.ReadFull(br, e[:])
		n = int(binary.BigEndian.Uint16(e[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatal(err)
	}
	return h[0], p
}

// recConn is a hijacked socket that counts what the library does to it
// directly, as opposed to through the bufio pair.
type recConn struct {
	net.Conn
	reads, writes, deadlines, closes atomic.Int32
}

func (c *recConn) Read(p []byte) (int, error)  { c.reads.Add(1); return c.Conn.Read(p) }
func (c *recConn) Write(p []byte) (int, error) { c.writes.Add(1); return c.Conn.Write(p) }
func (c *recConn) SetDeadline(time.Time) error { c.deadlines.Add(1); return nil }
func (c *recConn) SetReadDeadline(time.Time) error {
	c.deadlines.Add(1)
	return nil
}
func (c *recConn) SetWriteDeadline(time.Time) error {
	c.deadlines.Add(1)
	return nil
}
func (c *recConn) Close() error { c.closes.Add(1); return c.Conn.Close() }

// readerOf and writerOf reach the socket around recConn's counters.
type readerOf struct{ c net.Conn }
type writerOf struct {
	c   net.Conn
	mu  sync.Mutex
	log [][]byte // every write, as it came
}

func (r readerOf) Read(p []byte) (int, error) { return r.c.Read(p) }
func (w *writerOf) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.log = append(w.log, bytes.Clone(p))
	w.mu.Unlock()
	return w.c.Write(p)
}
func (w *writerOf) written() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Join(w.log, nil)
}

// recHijacker hands the library a recConn and a bufio pair of its own;
// buffered is what net/http had read past the request, as Hijack found it.
type recHijacker struct {
	http.ResponseWriter
	hijacks  int
	conn     *recConn
	br       *bufio.Reader
	bw       *writerOf
	buffered []byte
}

func (h *recHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.hijacks++
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	n := brw.Reader.Buffered()
	b, _ := brw.Reader.Peek(n)
	h.buffered = bytes.Clone(b)
	h.conn = &recConn{Conn: conn}
	h.bw = &writerOf{c: conn}
	h.br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(h.buffered), readerOf{conn}), max(n, 4096))
	if n > 0 {
		h.br.Peek(n)
	}
	return h.conn, bufio.NewReadWriter(h.br, bufio.NewWriterSize(h.bw, writeBufSize)), nil
}

// libraryServer accepts one connection with websocket.Accept over a
// recHijacker and hands both to use, on the handler's goroutine.
func libraryServer(t *testing.T, opts *websocket.AcceptOptions, use func(*websocket.Conn, *recHijacker)) string {
	t.Helper()
	return serve(t, func(w http.ResponseWriter, r *http.Request) {
		h := &recHijacker{ResponseWriter: w}
		ws, err := websocket.Accept(h, r, opts)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		use(ws, h)
	})
}

// B1, B3, B4: Accept hijacks through the ResponseWriter it is given,
// once, and writes nothing through the returned writer; afterwards the
// library reads the socket through the returned reader, which Accept reset
// onto the returned conn (so the conn's Read is what the reader calls),
// writes only through the returned writer, never sets a deadline on the
// conn, and closes it.
func TestLibraryUsesOnlyTheBufioPair(t *testing.T) {
	done := make(chan struct{})
	addr := libraryServer(t, nil, func(ws *websocket.Conn, h *recHijacker) {
		defer close(done)
		if h.hijacks != 1 || len(h.bw.written()) != 0 {
			t.Errorf("Accept hijacked %d times and wrote % x through the returned writer; want once and nothing", h.hijacks, h.bw.written())
		}
		_, p, err := ws.Read(context.Background()) // after a ping, answered
		if err != nil || string(p) != "hello" {
			t.Errorf("Read: %q, %v", p, err)
		}
		ws.Close(websocket.StatusNormalClosure, "")
		if r, w, d, c := h.conn.reads.Load(), h.conn.writes.Load(), h.conn.deadlines.Load(), h.conn.closes.Load(); r == 0 || w != 0 || d != 0 || c == 0 {
			t.Errorf("on the returned conn: %d reads, %d writes, %d deadlines, %d closes; want some, 0, 0 and at least 1", r, w, d, c)
		}
	})
	c, br, _ := dial(t, addr, nil)
	c.Write(append(clientFrame(0x9, "p"), clientFrame(0x1, "hello")...))
	if b0, p := readFrame(t, br); b0 != 0x8a || string(p) != "p" {
		t.Fatalf("answer to a ping: %#x %q, want a pong", b0, p)
	}
	if b0, _ := readFrame(t, br); b0 != 0x88 {
		t.Fatalf("frame %#x, want the close frame", b0)
	}
	c.Write(clientFrame(0x8, "\x03\xe8"))
	<-done
}

// B2: Accept moves what the reader had buffered out of its buffer: the
// reader is reset onto those bytes (the same array) and then the socket,
// so Buffered is 0 and a Peek brings them back without reading the socket.
func TestAcceptMovesBufferedBytes(t *testing.T) {
	early := clientFrame(0x1, "early")
	done := make(chan struct{})
	addr := libraryServer(t, nil, func(ws *websocket.Conn, h *recHijacker) {
		defer close(done)
		if !bytes.Equal(h.buffered, early) {
			t.Errorf("net/http had read % x past the request, want the frame % x", h.buffered, early)
			return
		}
		if n := h.br.Buffered(); n != 0 {
			t.Errorf("after Accept, %d bytes buffered; want 0", n)
		}
		if b, err := h.br.Peek(len(early)); err != nil || !bytes.Equal(b, early) || h.br.Buffered() != len(early) {
			t.Errorf("Peek after Accept: % x, %v, %d buffered; want the frame", b, err, h.br.Buffered())
		}
		if _, p, err := ws.Read(context.Background()); err != nil || string(p) != "early" {
			t.Errorf("Read: %q, %v", p, err)
		}
	})
	dial(t, addr, early)
	<-done
}

// B5: a message read to io.EOF leaves the frames behind it in the reader's
// buffer: the library reads no further than the message it returns.
func TestReadStopsAtTheMessage(t *testing.T) {
	done := make(chan struct{})
	second := clientFrame(0x1, "second")
	addr := libraryServer(t, nil, func(ws *websocket.Conn, h *recHijacker) {
		defer close(done)
		_, r, err := ws.Reader(context.Background())
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if err != nil {
			t.Errorf("read the first message: %v", err)
			return
		}
		// The second frame came in the same write; whatever part of it
		// the reader holds, none of it was consumed.
		if b, _ := h.br.Peek(h.br.Buffered()); len(b) == 0 || !bytes.HasPrefix(second, b) {
			t.Errorf("after the first message the reader holds % x, want the start of the second frame % x", b, second)
		}
	})
	c, _, _ := dial(t, addr, nil)
	c.Write(append(clientFrame(0x1, "first"), second...))
	<-done
}

// B6: a ping read inside Reader is answered with an unmasked pong, through
// the writer, unless OnPingReceived says no; a pong calls OnPongReceived.
func TestLibraryAnswersPings(t *testing.T) {
	var pongs atomic.Int32
	opts := &websocket.AcceptOptions{
		OnPingReceived: func(_ context.Context, p []byte) bool { return string(p) != "no" },
		OnPongReceived: func(context.Context, []byte) { pongs.Add(1) },
	}
	long := strings.Repeat("x", 100) // longer than the 16-byte writer
	done := make(chan struct{})
	addr := libraryServer(t, opts, func(ws *websocket.Conn, h *recHijacker) {
		defer close(done)
		if _, _, err := ws.Read(context.Background()); err != nil {
			t.Errorf("Read: %v", err)
		}
		want := append([]byte{0x8a, byte(len(long))}, long...)
		if got := h.bw.written(); !bytes.Equal(got, want) {
			t.Errorf("written % x, want only the pong % x", got, want)
		}
		if pongs.Load() != 1 {
			t.Errorf("OnPongReceived called %d times, want 1", pongs.Load())
		}
	})
	c, _, _ := dial(t, addr, nil)
	c.Write(bytes.Join([][]byte{clientFrame(0x9, "no"), clientFrame(0x9, long), clientFrame(0xA, ""), clientFrame(0x1, "m")}, nil))
	<-done
}

// B7: Close writes one close frame through the writer, and nothing after
// it; the close handshake then reads the peer's through the reader.
func TestCloseFrameIsLast(t *testing.T) {
	done := make(chan struct{})
	addr := libraryServer(t, nil, func(ws *websocket.Conn, h *recHijacker) {
		defer close(done)
		err := ws.Close(websocket.StatusGoingAway, "bye")
		want := []byte{0x88, 5, 0x03, 0xe9, 'b', 'y', 'e'}
		if got := h.bw.written(); !bytes.Equal(got, want) {
			t.Errorf("written % x, want the close frame % x alone", got, want)
		}
		if err != nil {
			t.Errorf("Close: %v (the peer's close frame was not read)", err)
		}
	})
	c, br, _ := dial(t, addr, nil)
	if b0, _ := readFrame(t, br); b0 != 0x88 {
		t.Fatalf("frame %#x, want a close frame", b0)
	}
	c.Write(clientFrame(0x8, "\x03\xe9"))
	<-done
}

// B8: the library frames a server's text message as Text does (unmasked,
// FIN, the shortest length encoding), and negotiates no compression
// unless asked, even when the client offers it.
func TestTextFramedAsTheLibraryDoes(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 65535, 65536}
	done := make(chan struct{})
	addr := libraryServer(t, nil, func(ws *websocket.Conn, h *recHijacker) {
		defer close(done)
		var want []byte
		for _, n := range sizes {
			p := bytes.Repeat([]byte{'x'}, n)
			if err := ws.Write(context.Background(), websocket.MessageText, p); err != nil {
				t.Errorf("Write: %v", err)
				return
			}
			w := &netWriter{}
			w.hold()
			if err := w.text([][]byte{p}, false); err != nil {
				t.Errorf("text: %v", err)
			}
			want = append(want, *w.buf...)
		}
		if got := h.bw.written(); !bytes.Equal(got, want) {
			t.Errorf("the library's frames differ from text's: %d bytes, want %d", len(got), len(want))
		}
	})
	_, _, res := dial(t, addr, nil, "Sec-WebSocket-Extensions: permessage-deflate")
	if ext := res.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Errorf("compression negotiated: %q", ext)
	}
	<-done
}

// A frame that comes in the same TCP segment as the upgrade request is
// readable at once: WaitReadable does not wait for more bytes from the
// client (B2 is why Accept puts those bytes back in the buffer).
func TestFrameWithTheUpgrade(t *testing.T) {
	type result struct {
		msg string
		err error
	}
	got := make(chan result, 1)
	addr := serve(t, func(w http.ResponseWriter, r *http.Request) {
		ws, c, err := Accept(w, r, nil, time.Second)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer ws.CloseNow()
		c.WaitReadable()
		if n, all := c.TakePongs(); n != 1 || all {
			got <- result{err: errors.New("the pong in front of the message was not taken")}
			return
		}
		_, p, err := ws.Read(context.Background())
		got <- result{string(p), err}
	})
	// The client sends nothing more, and keeps the connection open.
	dial(t, addr, append(clientFrame(0xA, ""), clientFrame(0x1, "with the upgrade")...))
	select {
	case r := <-got:
		if r.err != nil || r.msg != "with the upgrade" {
			t.Fatalf("read %q, %v", r.msg, r.err)
		}
	case <-time.After(timeout):
		t.Fatal("the frame sent with the upgrade request was not read")
	}
}
