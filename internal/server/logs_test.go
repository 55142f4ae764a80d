package server_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
)

// lockedBuffer is a bytes.Buffer that the server's goroutines may log to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count returns how many lines hold all of parts.
func (l *lockedBuffer) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// TestNoisyLinesThrottled: with the store down, thirty posts fail with
// store_unavailable and log one store error between them, not thirty; ten
// upgrades refused as server_full log one refusal. Both are counted in
// /metrics all the same.
func TestNoisyLinesThrottled(t *testing.T) {
	var logs lockedBuffer
	st := store.NewMemory(store.Retention{})
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) {
		c.Store = st
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.MaxConns = 1
	})
	t.Cleanup(func() { st.Close() })
	st.Close() // the store is down from here on

	for range 30 {
		resp, err := http.Post(ts.URL+"/api/rooms/r/messages", "application/json", strings.NewReader(`{"message":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("POST with the store down: %d, want 503", resp.StatusCode)
		}
	}
	if n := logs.count("level=ERROR", "msg=store"); n != 1 {
		t.Errorf("30 failed posts logged %d store errors, want 1:\n%s", n, logs.b.String())
	}
	if got := metric(t, ts, `roomchat_errors_total{code="store_unavailable"}`); got != 30 {
		t.Errorf(`roomchat_errors_total{code="store_unavailable"} = %v, want 30`, got)
	}

	c := mustUpgrade(t, ts, "127.0.0.2", nil)
	defer c.Close()
	for range 10 {
		_, resp, err := upgrade(t, ts, "127.0.0.3", nil)
		wantRefusal(t, "upgrade past MaxConns", resp, err, http.StatusServiceUnavailable, protocol.CodeServerFull)
	}
	if n := logs.count(`msg="refused websocket"`, `why="server full"`); n != 1 {
		t.Errorf("10 refused upgrades logged %d refusals, want 1:\n%s", n, logs.b.String())
	}
	if got := metric(t, ts, "roomchat_connections_refused_total"); got != 10 {
		t.Errorf("roomchat_connections_refused_total = %v, want 10", got)
	}
}

// TestSeparateMetrics: with SeparateMetrics, /metrics is not served on the
// server's routes (404) and MetricsHandler serves it.
func TestSeparateMetrics(t *testing.T) {
	ts := chattest.StartInProcess(t, func(c *server.Config) { c.SeparateMetrics = true })
	status, body := requestAs(t, ts, "GET", "/metrics", strings.TrimPrefix(ts.URL, "http://"), "")
	if status != http.StatusNotFound || !strings.Contains(string(body), protocol.CodeNotFound) {
		t.Fatalf("GET /metrics on the server: %d %s, want 404 not_found", status, body)
	}
	rec := httptest.NewRecorder()
	ts.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "roomchat_connections ") {
		t.Fatalf("MetricsHandler: %d, want 200 with roomchat_connections", rec.Code)
	}
}
