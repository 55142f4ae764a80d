package sqlite

import (
	"database/sql"
	"os"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
)

// TestMain fails the run if a store's goroutines (committer, checkpointer,
// database/sql's connection openers) outlive the tests: every Store must be
// closed, and Close must wait for what it started.
func TestMain(m *testing.M) {
	os.Exit(chattest.Main(m, "roomchat/internal/store/sqlite.(*", "database/sql.(*DB).connectionOpener"))
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
