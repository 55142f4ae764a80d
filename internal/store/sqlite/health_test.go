package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// writes returns the rows the store's writer connection has inserted,
// updated or deleted since Open (SQLite's total_changes()): every write
// the store makes goes through that one connection.
func writes(t *testing.T, s *Store) int64 {
	t.Helper()
	var n int64
	onWriter(t, s, func(c *sql.Conn) error {
		return c.QueryRowContext(context.Background(), "SELECT total_changes()").Scan(&n)
	})
	return n
}

// TestReadyAnswersFromLastWrite runs in a synctest bubble, so that the
// store's clock is the bubble's: Ready answers from the last write while
// it is recent, with no write of its own however often it is called;
// once that is older than ReadyInterval, one probe (shared by concurrent
// callers) writes one row; a failed Append turns Ready at once, which
// stays for ReadyInterval/5 and then clears with a probe; and a fault
// while nothing is written is found by the next probe.
func TestReadyAnswersFromLastWrite(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		const interval = 5 * time.Second
		path := filepath.Join(dir, "roomchat.db")
		s := openT(t, path, Options{BusyTimeout: 50 * time.Millisecond, ReadyInterval: interval})
		ctx := context.Background()
		many := func(n int) (failed int) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			for range n {
				wg.Go(func() {
					if err := s.Ready(ctx); err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			return failed
		}

		// Open's own write is recent: no probe.
		w := writes(t, s)
		if failed := many(1000); failed > 0 {
			t.Fatalf("%d of 1000 Ready calls failed on a fresh store", failed)
		}
		if got := writes(t, s); got != w {
			t.Fatalf("1000 Ready calls right after Open wrote %d rows, want 0", got-w)
		}

		// Stale: one probe row for 1000 concurrent callers, then nothing.
		time.Sleep(interval)
		if failed := many(1000); failed > 0 {
			t.Fatalf("%d of 1000 Ready calls failed", failed)
		}
		if got := writes(t, s); got != w+1 {
			t.Fatalf("1000 concurrent Ready calls %v after the last write wrote %d rows, want 1 (one probe)", interval, got-w)
		}
		w++
		time.Sleep(interval - time.Second)
		many(1000)
		if got := writes(t, s); got != w {
			t.Fatalf("Ready %v after a probe wrote %d rows, want 0", interval-time.Second, got-w)
		}

		// Appends are the evidence while they flow: no probes.
		for range 3 {
			time.Sleep(interval - time.Second)
			storetest.MustAppend(t, s, storetest.Msg("r", "x"), "")
			w = writes(t, s)
			time.Sleep(time.Second / 2)
			many(100)
			if got := writes(t, s); got != w {
				t.Fatalf("Ready while Appends commit wrote %d rows, want 0", got-w)
			}
		}

		// Another connection holds the write lock (a backup, an sqlite3
		// shell): an Append fails and Ready says so at once.
		conn, err := rawDB(t, path).Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		if r := storetest.Append(t, s, storetest.Msg("r", "locked"), ""); !errors.Is(r.Err, store.ErrUnavailable) {
			t.Fatalf("Append while locked: %v", r.Err)
		}
		if err := s.Ready(ctx); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Ready right after a failed Append = %v, want ErrUnavailable", err)
		}
		if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		if err := s.Ready(ctx); err == nil {
			t.Fatal("Ready within ReadyInterval/5 of the failure = nil, want the failure")
		}
		time.Sleep(interval / 5)
		if err := s.Ready(ctx); err != nil {
			t.Fatalf("Ready %v after the failure, lock gone = %v, want nil (a probe)", interval/5, err)
		}

		// A fault while nothing is written: the next probe finds it.
		time.Sleep(interval)
		if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		err = s.Ready(ctx)
		conn.ExecContext(ctx, "ROLLBACK")
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Ready with the lock held, nothing written for %v = %v, want ErrUnavailable", interval, err)
		}
		t.Logf("Ready while another connection holds the lock: %v", err)
	})
}
