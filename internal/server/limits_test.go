package server_test

// The connection limits over real sockets: -max-conns (503 server_full),
// the per-address limits (429 rate_limited) on open connections, new
// connections and HTTP requests, and the client address behind a trusted
// proxy. Distinct clients dial from distinct loopback addresses
// (127.0.0.2, 127.0.0.3, …); the server listens on 127.0.0.1.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

// upgrade dials ts's /ws from local with header h. On success it returns
// a client that has read welcome; otherwise the handshake's response
// (with the first KiB of its body) and the error.
func upgrade(t *testing.T, ts *chattest.InProcess, local string, h http.Header) (*chattest.Client, *http.Response, error) {
	t.Helper()
	hc := chattest.HTTPFrom(local)
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: h})
	if err != nil {
		return nil, resp, err
	}
	c := chattest.Wrap(t, ws)
	chattest.Decode(t, c.Expect(t, protocol.TypeWelcome), &c.Welcome)
	return c, resp, nil
}

// mustUpgrade is upgrade that fails the test when the upgrade is refused.
func mustUpgrade(t *testing.T, ts *chattest.InProcess, local string, h http.Header) *chattest.Client {
	t.Helper()
	c, resp, err := upgrade(t, ts, local, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("upgrade from %s: %v (status %d)", local, err, status)
	}
	return c
}

// wantRefusal checks that resp is a refusal with status and a JSON error
// with code, with a Retry-After of at least one second.
func wantRefusal(t *testing.T, what string, resp *http.Response, err error, status int, code string) {
	t.Helper()
	if err == nil && resp != nil && resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("%s: upgraded, want %d %s", what, status, code)
	}
	if resp == nil {
		t.Fatalf("%s: no response (%v), want %d %s", what, err, status, code)
	}
	var body []byte
	if resp.Body != nil {
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if resp.StatusCode != status {
		t.Fatalf("%s: status %d (%s), want %d", what, resp.StatusCode, body, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var e protocol.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Code != code || e.Message == "" {
		t.Fatalf("%s: body %s, want a JSON error with code %q", what, body, code)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("%s: Retry-After %q, want whole seconds ≥ 1", what, resp.Header.Get("Retry-After"))
	}
}

// TestMaxConns: with MaxConns 3, a fourth upgrade gets 503 server_full
// with Retry-After, and the three open connections keep chatting; once
// one closes, a new one gets in.
func TestMaxConns(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) { c.MaxConns = 3 })
	a, b := mustUpgrade(t, ts, "127.0.0.2", nil), mustUpgrade(t, ts, "127.0.0.3", nil)
	third := mustUpgrade(t, ts, "127.0.0.4", nil)
	a.Join(t, "r")
	b.Join(t, "r")
	a.Await(t, protocol.TypePresence)

	for i := range 3 {
		_, resp, err := upgrade(t, ts, "127.0.0.5", nil)
		wantRefusal(t, fmt.Sprintf("upgrade %d past MaxConns", i+4), resp, err, http.StatusServiceUnavailable, protocol.CodeServerFull)
	}
	chat(t, a, b, "still here")
	if got := metric(t, ts, "roomchat_connections_refused_total"); got != 3 {
		t.Errorf("roomchat_connections_refused_total = %v, want 3", got)
	}

	third.WS.Close(websocket.StatusNormalClosure, "")
	var d *chattest.Client
	chattest.Eventually(t, 5*time.Second, func() bool {
		c, _, err := upgrade(t, ts, "127.0.0.5", nil)
		d = c
		return err == nil
	}, "an upgrade after a connection closed")
	d.Join(t, "r")
	chat(t, a, d, "welcome back")
}

// TestMaxConnsRefusesBeforeAccept: a refused upgrade allocates nothing
// for a connection: it is not counted online and no user exists for it.
func TestMaxConnsRefusesBeforeAccept(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) { c.MaxConns = 1 })
	a := mustUpgrade(t, ts, "127.0.0.2", nil)
	for range 50 {
		_, resp, err := upgrade(t, ts, "127.0.0.3", nil)
		wantRefusal(t, "past MaxConns", resp, err, http.StatusServiceUnavailable, protocol.CodeServerFull)
	}
	if got := metric(t, ts, "roomchat_connections"); got != 1 {
		t.Fatalf("roomchat_connections = %v, want 1", got)
	}
	a.WS.Close(websocket.StatusNormalClosure, "")
	var b *chattest.Client
	chattest.Eventually(t, 5*time.Second, func() bool {
		c, _, err := upgrade(t, ts, "127.0.0.3", nil)
		b = c
		return err == nil
	}, "an upgrade after the one connection closed")
	if b.Welcome.Online != 1 {
		t.Fatalf("welcome.online = %d, want 1", b.Welcome.Online)
	}
}

// TestIPConns: at most IPConns open connections per address; another
// address is not affected; a place freed is taken again.
func TestIPConns(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) { c.IPConns = 2 })
	x1, x2 := mustUpgrade(t, ts, "127.0.0.2", nil), mustUpgrade(t, ts, "127.0.0.2", nil)
	_, resp, err := upgrade(t, ts, "127.0.0.2", nil)
	wantRefusal(t, "a third connection from 127.0.0.2", resp, err, http.StatusTooManyRequests, protocol.CodeRateLimited)

	// Others are not affected, and neither are x's open connections.
	y := mustUpgrade(t, ts, "127.0.0.3", nil)
	x1.Join(t, "r")
	y.Join(t, "r")
	x1.Await(t, protocol.TypePresence)
	chat(t, x1, y, "hello")

	x2.WS.Close(websocket.StatusNormalClosure, "")
	chattest.Eventually(t, 5*time.Second, func() bool {
		_, _, err := upgrade(t, ts, "127.0.0.2", nil)
		return err == nil
	}, "an upgrade from 127.0.0.2 after one of its connections closed")
}

// TestIPConnRate: new connections per address are a token bucket: a
// burst passes, the next one gets 429 with Retry-After; other addresses
// and the connections already open are not affected.
func TestIPConnRate(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) {
		c.IPConnRate = 0.1 // one every 10 s: no refill during the test
		c.IPConnBurst = 3
	})
	var xs []*chattest.Client
	for range 3 {
		xs = append(xs, mustUpgrade(t, ts, "127.0.0.2", nil))
	}
	_, resp, err := upgrade(t, ts, "127.0.0.2", nil)
	wantRefusal(t, "a fourth new connection from 127.0.0.2", resp, err, http.StatusTooManyRequests, protocol.CodeRateLimited)
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 9 || ra > 10 {
		t.Errorf("Retry-After %d, want about the 10 s a token takes", ra)
	}
	// Closing one does not give a new connection: this is a rate.
	xs[0].WS.Close(websocket.StatusNormalClosure, "")
	_, resp, err = upgrade(t, ts, "127.0.0.2", nil)
	wantRefusal(t, "a new connection from 127.0.0.2 after a close", resp, err, http.StatusTooManyRequests, protocol.CodeRateLimited)

	y := mustUpgrade(t, ts, "127.0.0.3", nil)
	xs[1].Join(t, "r")
	y.Join(t, "r")
	xs[1].Await(t, protocol.TypePresence)
	chat(t, xs[1], y, "fine")
}

// TestIPHTTPRate: HTTP requests per address are a token bucket; /ws is
// not one of them.
func TestIPHTTPRate(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) {
		c.IPHTTPRate = 0.1
		c.IPHTTPBurst = 5
	})
	get := func(local, path string) *http.Response {
		t.Helper()
		hc := chattest.HTTPFrom(local)
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i := range 5 {
		resp := get("127.0.0.2", "/api/rooms/r")
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d of the burst: status %d", i+1, resp.StatusCode)
		}
	}
	for _, path := range []string{"/api/rooms/r", "/", "/healthz", "/api/rooms/r/messages"} {
		resp := get("127.0.0.2", path)
		wantRefusal(t, "GET "+path+" past the rate", resp, nil, http.StatusTooManyRequests, protocol.CodeRateLimited)
	}
	if resp := get("127.0.0.3", "/api/rooms/r"); resp.StatusCode != http.StatusOK {
		t.Fatalf("another address: status %d, want 200", resp.StatusCode)
	}
	// The upgrade has its own limits.
	mustUpgrade(t, ts, "127.0.0.2", nil)
}

// TestTrustProxy: behind a trusted proxy the per-address limits count the
// client that X-Forwarded-For names (its rightmost untrusted entry); from
// any other peer the header is ignored.
func TestTrustProxy(t *testing.T) {
	const proxy = "127.0.0.2"
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) {
		c.IPConns = 1
		c.TrustProxy = []netip.Prefix{netip.MustParsePrefix(proxy + "/32")}
	})
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }

	// Through the proxy: two clients, one connection each.
	a := mustUpgrade(t, ts, proxy, xff("198.51.100.1"))
	b := mustUpgrade(t, ts, proxy, xff("198.51.100.2"))
	_, resp, err := upgrade(t, ts, proxy, xff("198.51.100.1"))
	wantRefusal(t, "a second connection of 198.51.100.1 through the proxy", resp, err, http.StatusTooManyRequests, protocol.CodeRateLimited)
	// A client cannot pose as another by prepending to the header: the
	// proxy appends the address it saw, and that one counts.
	_, resp, err = upgrade(t, ts, proxy, xff("198.51.100.9, 198.51.100.2"))
	wantRefusal(t, "a forged entry left of 198.51.100.2", resp, err, http.StatusTooManyRequests, protocol.CodeRateLimited)
	// A third client through the proxy gets in.
	mustUpgrade(t, ts, proxy, xff("2001:db8::1"))
	// IPv6 clients count by /64.
	_, resp, err = upgrade(t, ts, proxy, xff("2001:db8::2"))
	wantRefusal(t, "a second host of 2001:db8::/64", resp, err, http.StatusTooManyRequests, protocol.CodeRateLimited)
	mustUpgrade(t, ts, proxy, xff("2001:db8:0:1::2"))

	// Not through the proxy: the header is ignored, the peer counts.
	mustUpgrade(t, ts, "127.0.0.3", xff("198.51.100.3"))
	_, resp, err = upgrade(t, ts, "127.0.0.3", xff("198.51.100.4"))
	wantRefusal(t, "a second connection from untrusted 127.0.0.3", resp, err, http.StatusTooManyRequests, protocol.CodeRateLimited)

	a.Join(t, "r")
	b.Join(t, "r")
	a.Await(t, protocol.TypePresence)
	chat(t, a, b, "through the proxy")
}

// TestPostRateBehindProxy: the HTTP post limit (Limits.Rate per address)
// counts each client behind a trusted proxy apart, and every client of
// an untrusted peer together.
func TestPostRateBehindProxy(t *testing.T) {
	const proxy = "127.0.0.2"
	ts := chattest.StartInProcess(t, func(c *server.Config) {
		c.Limits = protocol.DefaultLimits()
		c.Limits.Rate, c.Limits.Burst = 0.1, 2
		c.TrustProxy = []netip.Prefix{netip.MustParsePrefix(proxy + "/32")}
	})
	post := func(local, client string) *http.Response {
		t.Helper()
		hc := chattest.HTTPFrom(local)
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequest("POST", ts.URL+"/api/rooms/r/events", strings.NewReader(`{"name":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", client)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, c := range []string{"198.51.100.1", "198.51.100.2"} {
		for i := range 2 {
			if resp := post(proxy, c); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("post %d of %s through the proxy: status %d, want 202", i+1, c, resp.StatusCode)
			}
		}
		wantRefusal(t, "a third post of "+c, post(proxy, c), nil, http.StatusTooManyRequests, protocol.CodeRateLimited)
	}
	// Untrusted: both "clients" are 127.0.0.3.
	post("127.0.0.3", "198.51.100.5")
	post("127.0.0.3", "198.51.100.6")
	wantRefusal(t, "a third post from untrusted 127.0.0.3", post("127.0.0.3", "198.51.100.7"), nil, http.StatusTooManyRequests, protocol.CodeRateLimited)
}
