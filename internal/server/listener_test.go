package server_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/server"
)

// countedServer is an in-process server served as roomchatd serves it:
// HTTPServer on a listener from Listener, so every connection is counted.
// It also records net/http's view of each connection, by the client's
// address, once the listener has accounted for it, so that a test waits
// for the server to see a connection idle or active rather than guessing
// how long that takes.
type countedServer struct {
	*chattest.InProcess

	mu     sync.Mutex
	states map[string]http.ConnState // by the client's address
}

func newCountedServer(t *testing.T, mod ...func(*server.Config)) *countedServer {
	t.Helper()
	ts := &countedServer{InProcess: chattest.NewInProcess(t, mod...), states: make(map[string]http.ConnState)}
	ts.Serve(func(hs *httptest.Server) {
		hs.Listener = ts.Listener(hs.Listener)
		hs.Config = ts.HTTPServer()
		account := hs.Config.ConnState
		hs.Config.ConnState = func(c net.Conn, st http.ConnState) {
			account(c, st)
			ts.mu.Lock()
			ts.states[c.RemoteAddr().String()] = st
			ts.mu.Unlock()
		}
	})
	return ts
}

// waitState waits until the server has seen c, a client's connection,
// reach st. net/http changes a connection's state on its own goroutine,
// after the client can see why: the response is written before the
// connection is idle, a request's headers are sent before they are read.
func (ts *countedServer) waitState(t *testing.T, c net.Conn, st http.ConnState) {
	t.Helper()
	chattest.Eventually(t, 5*time.Second, func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return ts.states[c.LocalAddr().String()] == st
	}, "the server sees %s %s", c.LocalAddr(), st)
}

// idleConn opens a connection from local (an address of 127.0.0.0/8) and
// has one GET /healthz answered on it, leaving it idle, and waits until
// the server counts it idle; nil if the server closed it instead.
func idleConn(t *testing.T, ts *countedServer, local string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: chattest.Timeout}
	c, err := d.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(chattest.Timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return nil
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil
	}
	res.Body.Close()
	ts.waitState(t, c, http.StateIdle)
	return c
}

// counted reads a series of ts's /metrics without a connection, which
// would take a place among the ones counted.
func counted(t *testing.T, ts *countedServer, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	ts.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// gone reports whether the server closed c within d.
func gone(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	_, err := c.Read(make([]byte, 1))
	ne, ok := err.(net.Error)
	return err != nil && (!ok || !ne.Timeout())
}

// busy sends a request on c whose body never comes, which keeps c active
// (net/http's StateActive: it has a request's headers and reads its
// body), and waits until the server has read the headers.
func busy(t *testing.T, ts *countedServer, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "POST /api/rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	ts.waitState(t, c, http.StateActive)
}

// At MaxTCPConns, the connection idle longest makes room for a new one;
// a connection that is not idle (a request being read or answered) is
// never closed for it, and with none idle the new one is closed at once.
// Each is counted in /metrics. (Between requests, net/http counts a
// keep-alive connection idle until its next request's headers are all in:
// one sending them may be closed, and its client sends the request again.)
func TestTCPLimitClosesIdleFirst(t *testing.T) {
	ts := newCountedServer(t, func(c *server.Config) { c.MaxTCPConns = 3 })
	a := idleConn(t, ts, "127.0.0.1")
	b := idleConn(t, ts, "127.0.0.1")
	c := idleConn(t, ts, "127.0.0.1")
	if a == nil || b == nil || c == nil {
		t.Fatal("a connection under the limit was closed")
	}
	// b becomes active: a request whose body is on its way.
	busy(t, ts, b)

	d := idleConn(t, ts, "127.0.0.1")
	if d == nil {
		t.Fatal("a new connection was refused while one was idle")
	}
	if !gone(a, 5*time.Second) {
		t.Fatal("the connection idle longest is still open")
	}
	if gone(b, 100*time.Millisecond) || gone(c, 100*time.Millisecond) {
		t.Fatal("a connection other than the one idle longest was closed")
	}
	// b, c (now idle longest) and d: c goes for e.
	e := idleConn(t, ts, "127.0.0.1")
	if e == nil {
		t.Fatal("e was refused")
	}
	if !gone(c, 5*time.Second) {
		t.Fatalf("c, idle longest, did not make room; b gone %v, d gone %v", gone(b, 100*time.Millisecond), gone(d, 100*time.Millisecond))
	}
	// Now b (active), d and e; d and e go, then nothing is idle.
	f := idleConn(t, ts, "127.0.0.1")
	g := idleConn(t, ts, "127.0.0.1")
	if f == nil || g == nil {
		t.Fatal("idle connections did not make room")
	}
	// f and g are idle: make them active, then the next one is refused.
	busy(t, ts, f)
	busy(t, ts, g)
	if h := idleConn(t, ts, "127.0.0.1"); h != nil {
		t.Fatal("a connection was accepted with every place taken by requests in progress")
	}
	chattest.Eventually(t, 5*time.Second, func() bool {
		return counted(t, ts, `roomchat_tcp_refused_total{reason="server_full"}`) == 1
	}, "the refusal counted")
	if got := counted(t, ts, "roomchat_tcp_idle_closed_total"); got != 4 {
		t.Errorf("roomchat_tcp_idle_closed_total = %v, want 4", got)
	}
}

// A WebSocket holds its place among all connections until it closes; it
// is not idle, so it is never closed to make room.
func TestTCPLimitCountsWebSockets(t *testing.T) {
	ts := newCountedServer(t, func(c *server.Config) { c.MaxTCPConns = 2 })
	ws := chattest.Dial(t, ts.URL, "")
	ws.Join(t, "r")
	a := idleConn(t, ts, "127.0.0.1")
	if a == nil {
		t.Fatal("refused with a place left")
	}
	if b := idleConn(t, ts, "127.0.0.1"); b == nil || !gone(a, 5*time.Second) {
		t.Fatal("the idle connection did not make room")
	}
	ws.SendAck(t, "m", "the WebSocket is still open")
	if got := counted(t, ts, "roomchat_tcp_connections"); got != 2 {
		t.Errorf("roomchat_tcp_connections = %v, want 2", got)
	}
	ws.Close()
	chattest.Eventually(t, 5*time.Second, func() bool { return counted(t, ts, "roomchat_tcp_connections") == 1 }, "the WebSocket's place is given back")
}

// IPHTTPConns limits the HTTP connections (idle ones included) of each
// peer address; a WebSocket no longer counts once upgraded, another
// address is not affected, and a trusted proxy is not limited.
func TestIPHTTPConns(t *testing.T) {
	ts := newCountedServer(t, func(c *server.Config) {
		c.IPHTTPConns = 2
		c.TrustProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}
	})
	a := idleConn(t, ts, "127.0.0.2")
	b := idleConn(t, ts, "127.0.0.2")
	if a == nil || b == nil {
		t.Fatal("refused under the per-address limit")
	}
	if c := idleConn(t, ts, "127.0.0.2"); c != nil {
		t.Fatal("a third HTTP connection from one address was accepted")
	}
	if c := idleConn(t, ts, "127.0.0.3"); c == nil {
		t.Fatal("another address was refused")
	}
	for range 4 {
		if c := idleConn(t, ts, "127.0.0.9"); c == nil {
			t.Fatal("a trusted proxy was limited")
		}
	}
	chattest.Eventually(t, 5*time.Second, func() bool { return counted(t, ts, `roomchat_tcp_refused_total{reason="address"}`) == 1 }, "the refusal counted")

	a.Close()
	chattest.Eventually(t, 5*time.Second, func() bool { return idleConn(t, ts, "127.0.0.2") != nil }, "a's place is given back")

	// A WebSocket from an address at its limit of HTTP connections: its
	// upgrade request needs one; once upgraded it leaves the count.
	ts2 := newCountedServer(t, func(c *server.Config) { c.IPHTTPConns = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), chattest.Timeout)
	defer cancel()
	ws, _, err := chattest.DialFrom(ctx, ts2.URL, "127.0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if c := idleConn(t, ts2, "127.0.0.4"); c == nil {
		t.Fatal("an upgraded WebSocket still counts as an HTTP connection")
	}
}
