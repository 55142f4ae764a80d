package sqlite

import (
	"database/sql"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if a store's goroutines (committer, checkpointer,
// database/sql's connection openers) outlive the tests: every Store must be
// closed, and Close must wait for what it started.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left running after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func leakedGoroutines(wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "internal/store/sqlite.(*") || strings.Contains(g, "database/sql.(*DB).connectionOpener") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// onWriter runs f on the writer's connection in the committer goroutine,
// between two transactions, and returns once f has: for the connection's
// own state (pragmas such as max_page_count, total_changes()), which only
// that connection sees.
func onWriter(t testing.TB, s *Store, f func(*sql.Conn) error) {
	t.Helper()
	ran := make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		t.Fatal("onWriter: store closed")
	}
	s.queue <- request{do: func(c *sql.Conn) { ran <- f(c) }}
	s.mu.RUnlock()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}
