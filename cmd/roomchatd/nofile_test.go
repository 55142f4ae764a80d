//go:build unix

package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
)

// lowNoFile is the open-files limit the tests below give roomchatd: small
// enough that 1,300 connections would pass it.
const lowNoFile = 1200

// keepAlive opens a TCP connection to addr and has one GET /healthz
// answered on it, leaving it open and idle; nil if the server closed it
// first.
func keepAlive(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, chattest.Timeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.SetDeadline(time.Now().Add(chattest.Timeout))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		c.Close()
		return nil
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	c.SetDeadline(time.Time{})
	return c
}

// startLowNoFile starts roomchatd with an open-files limit of lowNoFile
// and checks that it took it.
func startLowNoFile(t *testing.T) *chattest.Server {
	t.Helper()
	d := chattest.StartNoFile(t, lowNoFile)
	if want := "max_conns=944 max_tcp_conns=1072 open_files_limit=1200"; !strings.Contains(d.Logs(), want) {
		t.Fatalf("the server did not log %q:\n%s", want, d.Logs())
	}
	return d
}

// With every connection counted, idle keep-alive HTTP connections cannot
// take the file descriptors that WebSockets need: under an open-files
// limit of 1,200, 1,300 idle keep-alive connections to /healthz are held
// to 1,072 (the limit less 128) by closing the one idle longest for each
// new one, accept never fails with EMFILE, and a WebSocket client still
// completes its handshake.
func TestIdleConnectionsMakeRoom(t *testing.T) {
	d := startLowNoFile(t)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 1300 {
		c := keepAlive(t, d.Addr)
		if c == nil {
			t.Fatalf("connection %d: closed before its /healthz was answered", i)
		}
		conns = append(conns, c)
	}

	ws := chattest.Dial(t, d.URL, "")
	ws.Join(t, "room")
	ws.SendAck(t, "m1", "still room for a WebSocket")

	m, err := scrapeMetrics(http.DefaultClient, d.URL, "roomchat_tcp_idle_closed_total", "roomchat_tcp_connections", `roomchat_tcp_refused_total{reason="server_full"}`)
	if err != nil {
		t.Fatal(err)
	}
	// 1,300 idle, a WebSocket and the scrape, at most 1,072 open: the rest
	// were closed to make room.
	if got := m["roomchat_tcp_idle_closed_total"]; got < 1300+2-1072 {
		t.Errorf("roomchat_tcp_idle_closed_total = %v, want at least %d", got, 1300+2-1072)
	}
	if got := m["roomchat_tcp_connections"]; got > 1072 {
		t.Errorf("roomchat_tcp_connections = %v, over the limit of 1072", got)
	}
	if got := m[`roomchat_tcp_refused_total{reason="server_full"}`]; got != 0 {
		t.Errorf("%v connections refused, want none: idle ones make room", got)
	}
	// The oldest were closed first: the first connection is gone, the last
	// one is still open.
	if isOpen(conns[0]) || !isOpen(conns[len(conns)-1]) {
		t.Errorf("first connection open %v, last one open %v; want the oldest idle closed first", isOpen(conns[0]), isOpen(conns[len(conns)-1]))
	}
	if logs := d.Logs(); strings.Contains(logs, "too many open files") {
		t.Fatalf("the server ran out of file descriptors:\n%s", grepLines(logs, "too many open files", 5))
	}
}

// Half-sent requests (an upgrade whose headers never end) are not idle:
// once they hold every place, a new connection is closed at once and
// counted, rather than accept failing with EMFILE; when they go, new
// clients are served again.
func TestHalfSentRequestsRefused(t *testing.T) {
	d := startLowNoFile(t)
	var half []net.Conn
	defer func() {
		for _, c := range half {
			c.Close()
		}
	}()
	refused := 0
	for range 1100 {
		c, err := net.DialTimeout("tcp", d.Addr, chattest.Timeout)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: "+d.Addr+"\r\nUpgrade: websocket\r\n")
		half = append(half, c)
	}
	// The last ones, past 1,072, were closed as soon as accepted.
	for _, c := range half[1072+10:] {
		if !closedWithin(c, 5*time.Second) {
			t.Fatal("a connection past the limit is still open")
		}
		refused++
	}
	if logs := d.Logs(); strings.Contains(logs, "too many open files") {
		t.Fatalf("the server ran out of file descriptors:\n%s", grepLines(logs, "too many open files", 5))
	}
	for _, c := range half {
		c.Close()
	}
	half = nil
	// Once they are gone (the server sees the closes at once), a WebSocket
	// gets in. A few tries: the server may not have read every close yet.
	chattest.Eventually(t, chattest.Timeout, func() bool {
		c := keepAlive(t, d.Addr)
		if c != nil {
			c.Close()
		}
		return c != nil
	}, "a connection accepted after the half-sent ones closed")
	chattest.Dial(t, d.URL, "")
	m, err := scrapeMetrics(http.DefaultClient, d.URL, `roomchat_tcp_refused_total{reason="server_full"}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := m[`roomchat_tcp_refused_total{reason="server_full"}`]; got < float64(refused) {
		t.Errorf(`roomchat_tcp_refused_total{reason="server_full"} = %v, want at least %d`, got, refused)
	}
	if !strings.Contains(d.Logs(), `msg="refused connection"`) {
		t.Errorf("no refused connection logged:\n%s", lastLines(d.Logs(), 20))
	}
}

// isOpen reports whether the server has not closed c: a read finds no
// end of stream within a moment.
func isOpen(c net.Conn) bool {
	return !closedWithin(c, 100*time.Millisecond)
}

// closedWithin reports whether the server closes c (end of stream or a
// reset) within d; bytes it sends first are read and dropped.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			ne, ok := err.(net.Error)
			return !ok || !ne.Timeout()
		}
	}
}
