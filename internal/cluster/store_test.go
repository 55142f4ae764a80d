package cluster_test

import (
	"context"
	"os"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// shared is one redis-server for the tests that do not stop or break it;
// each store on it has its own key prefix.
var shared *redistest.Server

func sharedRedis(t *testing.T) *redistest.Server {
	if shared == nil {
		shared = redistest.Start(&mainT{t}, redistest.Options{})
	}
	return shared
}

// mainT keeps the shared server alive past the test that started it: its
// cleanups run at the end of the test binary (TestMain).
type mainT struct{ *testing.T }

var cleanups []func()

func (m *mainT) Cleanup(f func()) { cleanups = append(cleanups, f) }
func (m *mainT) TempDir() string {
	d, err := os.MkdirTemp("", "redistest")
	if err != nil {
		m.Fatal(err)
	}
	cleanups = append(cleanups, func() { os.RemoveAll(d) })
	return d
}

// TestMain stops the shared Redis after the tests, then fails the run if
// a goroutine of this package or of its Redis client outlives them: every
// Store, Broker, Directory and Roster must be closed, and Close must wait
// for what it started.
func TestMain(m *testing.M) {
	os.Exit(chattest.Main(chattest.Runner(func() int {
		code := m.Run()
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		return code
	}), "github.com/roomchat/roomchat/internal/cluster.", "github.com/redis/rueidis."))
}

// mustOpen opens a store with o, closed when the test ends.
func mustOpen(t *testing.T, o cluster.Options) *cluster.Store {
	t.Helper()
	st, err := cluster.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// openOn opens a store on srv under prefix with the default options,
// closed when the test ends.
func openOn(t *testing.T, srv *redistest.Server, prefix string) *cluster.Store {
	t.Helper()
	return mustOpen(t, cluster.Options{URL: srv.URL(), Prefix: prefix})
}

func openStore(t *testing.T, srv *redistest.Server, ret store.Retention) *cluster.Store {
	t.Helper()
	return mustOpen(t, cluster.Options{URL: srv.URL(), Prefix: redistest.Prefix(t), Retention: ret})
}

func TestStoreConformance(t *testing.T) {
	srv := sharedRedis(t)
	storetest.Run(t, func(t *testing.T, ret store.Retention) store.Store {
		return openStore(t, srv, ret)
	})
}
