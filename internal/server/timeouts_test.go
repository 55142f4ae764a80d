package server_test

// Timeouts over real sockets: the http.Server that Server.HTTPServer
// returns cuts a client that trickles its headers or its body, closes idle
// keep-alive connections, lets a reader at the average rate of 128 KiB
// per request timeout have a page of messages (and cuts a slower one), and
// leaves upgraded WebSocket connections alone;
// a WebSocket connection reading a large backlog slowly but steadily is
// not closed as too slow, and one that stops reading is. The timeouts are
// made short (hundreds of milliseconds) so the tests are quick; they
// assert what happens, not exactly when.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// timedServer is a test server on the http.Server that HTTPServer returns.
// closed receives a value each time net/http closes a connection it has
// not handed over to a WebSocket.
//
// Its sockets have a fixed send buffer of 64 KiB. On loopback, Linux grows
// a send buffer to 4 MiB (the round trip is microseconds), and wakes a
// blocked writer only once half of it has drained: a reader at 4 MB/s
// then lets the server write nothing for half a second, longer than the
// short timeouts of these tests. On a real link the buffer is sized to
// the path, and so is that pause.
type timedServer struct {
	*chattest.InProcess
	closed chan struct{}
}

func newTimedServer(t *testing.T, mod ...func(*server.Config)) *timedServer {
	t.Helper()
	ts := chattest.NewInProcess(t, mod...)
	closed := make(chan struct{}, 1000)
	ts.Serve(func(hs *httptest.Server) {
		hs.Listener = sndbufListener{hs.Listener}
		hs.Config = ts.HTTPServer()
		hs.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				closed <- struct{}{}
			}
		}
	})
	return &timedServer{InProcess: ts, closed: closed}
}

// sndbufListener gives every connection it accepts a 64 KiB send buffer.
type sndbufListener struct{ net.Listener }

func (l sndbufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		err = c.(*net.TCPConn).SetWriteBuffer(64 << 10)
	}
	return c, err
}

// waitClosed waits up to 5 s for net/http to close a connection.
func (ts *timedServer) waitClosed(t *testing.T, what string) {
	t.Helper()
	select {
	case <-ts.closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the server did not close the connection within 5 s", what)
	}
}

func rawDial(t *testing.T, ts *timedServer) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// hungUp reports whether the server has closed c, waiting at most d; any
// bytes it sent first (an error response) are read and dropped.
func hungUp(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

// trickle writes s one byte per 50 ms until the server hangs up, and
// returns how many bytes it wrote; it gives up after s or 5 s.
func trickle(t *testing.T, c net.Conn, s string) (int, bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < len(s) && time.Now().Before(deadline); i++ {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return i, true
		}
		if hungUp(c, 50*time.Millisecond) {
			return i + 1, true
		}
	}
	return len(s), false
}

// TestSlowlorisUpgrade: an upgrade request whose headers trickle in, a
// byte every 50 ms, is cut off by the header timeout, and chat goes on.
func TestSlowlorisUpgrade(t *testing.T) {
	ts := newTimedServer(t, chattest.NoRate, func(c *server.Config) { c.HeaderTimeout = 200 * time.Millisecond })
	a, b := chattest.Dial(t, ts.InProcess.URL, ""), chattest.Dial(t, ts.InProcess.URL, "")
	a.Join(t, "r")
	b.Join(t, "r")
	a.Await(t, protocol.TypePresence)

	c := rawDial(t, ts)
	headers := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Padding: " + strings.Repeat("a", 200) + "\r\n\r\n"
	n, cut := trickle(t, c, headers)
	if !cut {
		t.Fatalf("the server still read headers after %d bytes at 20 a second", n)
	}
	if n == len(headers) {
		t.Fatalf("all %d bytes of headers went in before the server hung up", n)
	}
	chat(t, a, b, "undisturbed")
}

// TestTricklingBody: a POST whose body trickles in is cut by the request
// timeout, and nothing is stored.
func TestTricklingBody(t *testing.T) {
	ts := newTimedServer(t, chattest.NoRate, func(c *server.Config) { c.RequestTimeout = 300 * time.Millisecond })
	body := `{"name":"slow","message":"` + strings.Repeat("z", 200) + `"}`
	c := rawDial(t, ts)
	fmt.Fprintf(c, "POST /api/rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	n, cut := trickle(t, c, body)
	if !cut || n == len(body) {
		t.Fatalf("the server read %d of %d body bytes at 20 a second without hanging up", n, len(body))
	}
	var page server.MessagePage
	getJSON(t, ts.URL+"/api/rooms/r/messages", &page)
	if len(page.Messages) != 0 {
		t.Fatalf("stored %d messages from a cut body, want none", len(page.Messages))
	}
}

// TestIdleKeepAlive: a keep-alive connection that sends no next request
// is closed after the idle timeout.
func TestIdleKeepAlive(t *testing.T) {
	ts := newTimedServer(t, func(c *server.Config) { c.IdleTimeout = 200 * time.Millisecond })
	c := rawDial(t, ts)
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("status %d, close %v: want 200, kept alive", resp.StatusCode, resp.Close)
	}
	if !hungUp(c, 5*time.Second) {
		t.Fatal("an idle keep-alive connection is still open after 5 s")
	}
}

// TestWebSocketOutlivesHTTPTimeouts: net/http clears the deadlines of a
// hijacked connection, so none of the HTTP timeouts ends a WebSocket
// connection that is quiet for longer than all of them.
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	ts := newTimedServer(t, chattest.NoRate, func(c *server.Config) {
		c.HeaderTimeout = 100 * time.Millisecond
		c.RequestTimeout = 200 * time.Millisecond
		c.IdleTimeout = 100 * time.Millisecond
	})
	a, b := chattest.Dial(t, ts.InProcess.URL, ""), chattest.Dial(t, ts.InProcess.URL, "")
	a.Join(t, "r")
	b.Join(t, "r")
	a.Await(t, protocol.TypePresence)
	a.Quiet(t, time.Second) // five times the longest HTTP timeout
	b.Quiet(t, 0)
	chat(t, a, b, "still connected")
}

// slowDialer dials with a small receive buffer, set before the handshake
// so that the window the server sees is small from the start.
func slowDialer(rcvbuf int) *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
		}); err != nil {
			return err
		}
		return serr
	}}
}

// pacedReader reads at most rate bytes a second, chunk bytes at a time.
type pacedReader struct {
	r           io.Reader
	rate, chunk int
}

func (p *pacedReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b[:min(len(b), p.chunk)])
	time.Sleep(time.Duration(n) * time.Second / time.Duration(p.rate))
	return n, err
}

// seedRoom stores n messages of text in room.
func seedRoom(t *testing.T, st store.Store, room string, n int, text string) {
	t.Helper()
	errs := make(chan error, n)
	for i := range n {
		m := storetest.Msg(room, fmt.Sprintf("%04d %s", i, text))
		m.ID = fmt.Sprint("seed-", i)
		st.Append(m, "", func(_ protocol.Message, _ bool, err error) { errs <- err })
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestSlowPageReader: a page of messages (at most 256 KiB of them) has
// RequestTimeout per 128 KiB to be written in all, an average rate. A
// client reading it faster than that gets all of it; one reading slower,
// however steadily, or one that stops reading, is cut off.
func TestSlowPageReader(t *testing.T) {
	ts := newTimedServer(t, func(c *server.Config) {
		c.RequestTimeout = 300 * time.Millisecond // the floor: 128 KiB per 300 ms, about 430 KB/s
		c.IdleTimeout = time.Minute               // so that only the write deadline closes a connection
	})
	seedRoom(t, ts.Store, "big", 500, strings.Repeat("x", 3995)) // pages of 256 KiB: 600 ms each

	// get sends the request on a connection that reads at most rate bytes
	// a second.
	get := func(rate int) (net.Conn, *http.Response) {
		c, err := slowDialer(16<<10).Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /api/rooms/big/messages?after=0&limit=500 HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReaderSize(&pacedConn{Conn: c, rate: rate, chunk: 16 << 10}, 4<<10), nil)
		if err != nil {
			t.Fatal(err)
		}
		return c, resp
	}

	// Above the floor: 2 MB/s.
	c, resp := get(2 << 20)
	start := time.Now()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %d bytes in %v: %v", len(body), time.Since(start).Round(time.Millisecond), err)
	}
	var page server.MessagePage
	if err := json.Unmarshal(body, &page); err != nil || len(page.Messages) < 50 || !page.More {
		t.Fatalf("got %d messages, more=%v (%v), want a page of 256 KiB with more", len(page.Messages), page.More, err)
	}
	t.Logf("read %d bytes in %v", len(body), time.Since(start).Round(time.Millisecond))
	c.Close()
	ts.waitClosed(t, "the steady reader's connection")

	// Below the floor: 64 KB/s, steadily, would take 4 s.
	_, resp = get(64 << 10)
	start = time.Now()
	body, err = io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("a reader at 64 KB/s got all %d bytes in %v, want it cut off after about 600 ms", len(body), time.Since(start).Round(time.Millisecond))
	}
	t.Logf("a reader at 64 KB/s was cut off after %d bytes, %v: %v", len(body), time.Since(start).Round(time.Millisecond), err)
	ts.waitClosed(t, "a client reading a page below the floor")

	// Stopped: it reads the headers, then nothing.
	get(2 << 20)
	ts.waitClosed(t, "a client that stopped reading a page")
}

// TestSteadyWebSocketReader: a member that reads a backlog of several
// megabytes slowly but steadily, for many times the write timeout, gets
// every message and is never closed as too slow.
func TestSteadyWebSocketReader(t *testing.T) {
	ts := newTimedServer(t, chattest.NoRate, func(c *server.Config) {
		// A second is some four times what the reader needs per 16 KiB
		// chunk even on a loaded machine under -race; the backlog takes
		// four seconds to read.
		c.WriteTimeout = time.Second
		c.MaxQueue = 64 << 20 // only the write deadline may close it
	})
	sender := chattest.Dial(t, ts.InProcess.URL, "")
	sender.Join(t, "big")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := slowDialer(16 << 10)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &pacedConn{Conn: c, rate: 2 << 20, chunk: 16 << 10}, nil
	}}}
	slow, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	slow.SetReadLimit(-1)
	slow.Read(ctx) // welcome
	slow.Write(ctx, websocket.MessageText, []byte(`{"type":"join","payload":{"roomID":"big"}}`))
	sender.Await(t, protocol.TypePresence)

	const n = 2000 // 8 MB: four seconds at 2 MB/s
	text := strings.Repeat("w", 3990)
	go func() {
		for i := range n {
			if err := sender.WS.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"msg","payload":{"message":"%04d %s"}}`, i, text)); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	for i := 0; i < n; {
		_, b, err := slow.Read(ctx)
		if err != nil {
			t.Fatalf("after %d messages in %v: %v (close status %d)", i, time.Since(start).Round(time.Millisecond), err, websocket.CloseStatus(err))
		}
		var env protocol.Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		if env.Type != protocol.TypeMsg {
			continue
		}
		var m protocol.Message
		json.Unmarshal(env.Payload, &m)
		if want := fmt.Sprintf("%04d ", i); !strings.HasPrefix(m.Message, want) {
			t.Fatalf("message %.10q, want %q", m.Message, want)
		}
		i++
	}
	t.Logf("read %d messages in %v", n, time.Since(start).Round(time.Millisecond))
	if got := metric(t, ts.InProcess, "roomchat_slow_consumers_total"); got != 0 {
		t.Fatalf("roomchat_slow_consumers_total = %v, want 0", got)
	}
}

// pacedConn is a net.Conn that reads at most rate bytes a second.
type pacedConn struct {
	net.Conn
	rate, chunk int
}

func (c *pacedConn) Read(b []byte) (int, error) {
	return (&pacedReader{r: c.Conn, rate: c.rate, chunk: c.chunk}).Read(b)
}

// TestStalledWebSocketReader: a member that stops reading is closed as
// too slow about WriteTimeout after the socket took its last byte, while
// the rest of the room keeps chatting.
func TestStalledWebSocketReader(t *testing.T) {
	const writeTimeout = 500 * time.Millisecond
	ts := newTimedServer(t, chattest.NoRate, func(c *server.Config) {
		c.WriteTimeout = writeTimeout
		c.MaxQueue = 64 << 20 // only the write deadline may close it
		withRoom(c, room.Options{Grace: 50 * time.Millisecond})
	})
	a, b := chattest.Dial(t, ts.InProcess.URL, ""), chattest.Dial(t, ts.InProcess.URL, "")
	a.Join(t, "r")
	b.Join(t, "r")
	a.Await(t, protocol.TypePresence)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: slowDialer(16 << 10).DialContext}}
	stalled, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.CloseNow()
	stalled.SetReadLimit(-1)
	stalled.Read(ctx) // welcome
	stalled.Write(ctx, websocket.MessageText, []byte(`{"type":"join","payload":{"roomID":"r"}}`))
	a.Await(t, protocol.TypePresence)
	b.Await(t, protocol.TypePresence)

	// 4 MB, far more than the socket buffers hold, while it reads
	// nothing; the others get every message.
	text := strings.Repeat("s", 3990)
	for i := range 1000 {
		a.Sendf(t, `{"type":"msg","payload":{"message":"%04d %s"}}`, i, text)
	}
	for _, c := range []*chattest.Client{a, b} {
		for range 1000 {
			c.Await(t, protocol.TypeMsg)
		}
	}
	sent := time.Now()
	// Its writes stall once the buffers are full, moments after the last
	// message: it is closed about the write timeout later, and the others
	// chat meanwhile.
	for i := 0; metric(t, ts.InProcess, "roomchat_slow_consumers_total") == 0; i++ {
		if time.Since(sent) > 10*writeTimeout {
			t.Fatalf("a member that reads nothing is not closed %v after 4 MB were queued to it", time.Since(sent))
		}
		chat(t, a, b, fmt.Sprint("meanwhile ", i))
	}
	if d := time.Since(sent); d > 4*writeTimeout {
		t.Errorf("closed %v after the last message, want about the write timeout (%v)", d, writeTimeout)
	} else {
		t.Logf("closed %v after the last message", d)
	}
	// Reading again, it finds what the socket held, then the end: the
	// server cut it mid-frame, or, if the cut fell between frames, closed
	// it with 1013.
	for {
		_, _, err := stalled.Read(ctx)
		if err == nil {
			continue
		}
		if st := websocket.CloseStatus(err); st != -1 && st != websocket.StatusTryAgainLater {
			t.Fatalf("stalled member ended with %v, want 1013 or a cut", err)
		}
		break
	}
	// It leaves the room after the grace period (a drop), and the others
	// keep chatting.
	chattest.Eventually(t, 5*time.Second, func() bool {
		var info server.RoomInfo
		getJSON(t, ts.URL+"/api/rooms/r", &info)
		return info.Count == 2
	}, "the stalled member leaving the room")
	chat(t, a, b, "after")
}

// chat checks that a and b, both in room, still exchange messages both ways.
func chat(t *testing.T, a, b *chattest.Client, text string) {
	t.Helper()
	for _, pair := range [][2]*chattest.Client{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		from.Sendf(t, `{"type":"msg","payload":{"message":%q}}`, text)
		for _, c := range []*chattest.Client{from, to} {
			var m protocol.Message
			for {
				f := c.Next(t)
				if f.Type == protocol.TypeMsg {
					m = chattest.MsgOf(t, f)
					break
				}
				if f.Type != protocol.TypePresence && f.Type != protocol.TypeTyping {
					t.Fatalf("waiting for %q, got %s", text, f)
				}
			}
			if m.Message != text || m.From.UserID != from.Welcome.UserID {
				t.Fatalf("got %q from %s, want %q from %s", m.Message, m.From.UserID, text, from.Welcome.UserID)
			}
		}
	}
}

// getJSON GETs u and decodes its 200 JSON body into v.
func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d (%s)", u, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %s: %v", u, b, err)
	}
}
