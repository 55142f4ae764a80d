package chattest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
)

// InProcess is roomchat's server run inside the test's process, for a test
// that needs its Config, its store or its handler; a test of the built
// binary uses Start instead. Every in-process server of the tests is built
// by NewInProcess, and every server.Config of the tests by ServerConfig.
type InProcess struct {
	*server.Server
	// Store is the server's store: Config.Store as the mods left it.
	Store store.Store
	// HTTP serves the server once Serve has run; nil before.
	HTTP *httptest.Server
	// URL is HTTP's URL, http://127.0.0.1:PORT; "" before Serve.
	URL string

	t     testing.TB
	owned store.Store // the memory store ServerConfig made, if the mods kept it
	once  sync.Once
}

// ServerConfig is the Config of a test's server: a fresh memory store,
// warnings and errors logged to the test's output, the default limits,
// then mods applied in order (each may replace any field, the store
// included). It is the one place where the tests build a server.Config.
// What it makes for the Config is closed when the test ends.
func ServerConfig(t testing.TB, mods ...func(*server.Config)) server.Config {
	cfg, made := serverConfig(t, mods)
	if made != nil {
		t.Cleanup(func() { made.Close() })
	}
	return cfg
}

// serverConfig is ServerConfig, and the memory store it made if the mods
// kept it (nil if they replaced it).
func serverConfig(t testing.TB, mods []func(*server.Config)) (server.Config, store.Store) {
	made := store.NewMemory(store.Retention{})
	cfg := server.Config{
		Store:  made,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, m := range mods {
		m(&cfg)
	}
	if cfg.Store != made {
		return cfg, nil // replaced, or wrapped: a mod's to close
	}
	return cfg, made
}

// NoRate is a mod that turns the per-connection rate limit off (as make
// bench runs roomchatd: -rate 0), the other limits at their defaults.
func NoRate(c *server.Config) {
	c.Limits = protocol.DefaultLimits()
	c.Limits.Rate = 0
}

// NewInProcess builds a server from ServerConfig(t, mods...) without
// serving it (Serve does), and closes it at the end of the test. It fails
// t if server.New does.
func NewInProcess(t testing.TB, mods ...func(*server.Config)) *InProcess {
	t.Helper()
	cfg, owned := serverConfig(t, mods)
	s := &InProcess{Store: cfg.Store, t: t, owned: owned}
	srv, err := server.New(cfg)
	if err != nil {
		if s.owned != nil {
			s.owned.Close()
		}
		t.Fatal(err)
	}
	s.Server = srv
	t.Cleanup(s.Close)
	return s
}

// StartInProcess is NewInProcess, then Serve: the common case.
func StartInProcess(t testing.TB, mods ...func(*server.Config)) *InProcess {
	t.Helper()
	s := NewInProcess(t, mods...)
	s.Serve()
	return s
}

// Serve serves the server with an httptest.Server on a loopback port. Each
// setup runs on the server before it starts, to change its Listener or its
// Config (roomchatd's own, s.HTTPServer(), for instance); by default
// it is httptest's, with s as its handler.
func (s *InProcess) Serve(setup ...func(*httptest.Server)) {
	hs := httptest.NewUnstartedServer(s.Server)
	for _, f := range setup {
		f(hs)
	}
	hs.Start()
	s.HTTP, s.URL = hs, hs.URL
}

// Close shuts the server down the way roomchatd does (every WebSocket gets
// 1001, within 10 s), stops serving, and closes the store if ServerConfig
// made it; a store a mod gave is its giver's to close. It reports a failed
// shutdown on t. It runs once, at the latest when the test ends.
func (s *InProcess) Close() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			s.t.Errorf("Shutdown: %v", err)
		}
		if s.HTTP != nil {
			s.HTTP.Close()
		}
		if s.owned != nil {
			s.owned.Close()
		}
	})
}
