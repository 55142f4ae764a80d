package server_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
)

// testServer is a real server on a loopback port.
type testServer struct {
	*server.Server
	http  *httptest.Server
	store store.Store
	URL   string
}

// newTestServer starts a server with an in-memory store; mod may change
// its Config. Logs go to the test's output.
func newTestServer(t testing.TB, mod ...func(*server.Config)) *testServer {
	t.Helper()
	st := store.NewMemory(store.Retention{})
	cfg := server.Config{
		Store:  st,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: testLogLevel})),
	}
	for _, m := range mod {
		m(&cfg)
	}
	if cfg.Store != st {
		st = nil
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	ts := &testServer{Server: srv, http: hs, store: cfg.Store, URL: hs.URL}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
		if st != nil {
			st.Close()
		}
	})
	return ts
}

// withRoom gives c a registry built with opts, on c's store, limits and
// logger as they are when it runs (so it comes after what sets them),
// with the budgets a server gives its own registry.
func withRoom(c *server.Config, opts room.Options) {
	opts.Limits = c.Limits
	if opts.Limits == (protocol.Limits{}) {
		opts.Limits = protocol.DefaultLimits()
	}
	opts.Budgets = room.DefaultBudgets(opts.Limits)
	if c.Logger != nil {
		opts.Logger = server.Throttled(c.Logger)
	}
	c.Registry = room.New(c.Store, opts)
}

// noRate turns the rate limit off.
func noRate(c *server.Config) {
	c.Limits = protocol.DefaultLimits()
	c.Limits.Rate = 0
}

var testLogLevel = slog.LevelWarn
