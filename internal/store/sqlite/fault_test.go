package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// TestLockedDatabase holds the write lock from a second connection (as a
// backup tool or another process would) and checks that Appends fail with
// ErrUnavailable, nothing half-written stays, seqs do not skip, Ready
// reports the fault, and everything recovers once the lock is gone.
func TestLockedDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := openT(t, path, Options{BusyTimeout: 50 * time.Millisecond, ReadyInterval: 50 * time.Millisecond})
	ctx := context.Background()
	storetest.MustAppend(t, s, storetest.Msg("r", "before"), "")

	other := rawDB(t, path)
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}

	// Several appends in one failing batch, with a dedup key among them.
	const n = 5
	results := make(chan storetest.Result, n)
	for i := range n {
		s.Append(storetest.Msg("r", fmt.Sprint("locked", i)), store.DedupKey("u", "r", fmt.Sprint(i)), func(m protocol.Message, dup bool, err error) {
			results <- storetest.Result{Msg: m, Dup: dup, Err: err}
		})
	}
	for range n {
		r := <-results
		if !errors.Is(r.Err, store.ErrUnavailable) {
			t.Fatalf("Append while locked: err = %v, want ErrUnavailable", r.Err)
		}
	}
	if r := storetest.Append(t, s, storetest.Msg("new-room", "x"), ""); !errors.Is(r.Err, store.ErrUnavailable) {
		t.Fatalf("Append to a new room while locked: err = %v, want ErrUnavailable", r.Err)
	}
	if err := s.Ready(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ready while locked = %v, want ErrUnavailable", err)
	}
	if s.LastError() == nil {
		t.Fatal("LastError while locked = nil")
	}
	// Reads still work in WAL mode... except that this test's EXCLUSIVE
	// lock blocks readers too, so only check them after.

	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	// The failure stays Ready's answer for ReadyInterval/5, then a probe
	// finds the store writable again.
	chattest.Eventually(t, 10*time.Second, func() bool { return s.Ready(ctx) == nil }, "Ready after the lock is gone")
	r := storetest.MustAppend(t, s, storetest.Msg("r", "after"), store.DedupKey("u", "r", "0"))
	if r.Dup || r.Msg.Seq != 2 {
		t.Fatalf("first Append after the fault: seq=%d dup=%v, want seq 2 (no gap), dup false (nothing stored)", r.Msg.Seq, r.Dup)
	}
	if got := messages(t, s, "r"); len(got) != 2 {
		t.Fatalf("room has %d messages, want 2 (nothing of the failed batch)", len(got))
	}
	if r := storetest.MustAppend(t, s, storetest.Msg("new-room", "x"), ""); r.Msg.Seq != 1 {
		t.Fatalf("new room after the fault: seq %d, want 1", r.Msg.Seq)
	}
	if ri := roomInfo(t, s, "new-room"); ri.Epoch == "" || ri.LastSeq != 1 {
		t.Fatalf("new room after the fault: %+v", ri)
	}
}

// TestReadOnlyAfterOpen makes the file immutable while the store runs
// (disk fault, remount read-only) and checks failure and recovery.
func TestReadOnlyAfterOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := openT(t, path, Options{BusyTimeout: 50 * time.Millisecond})
	storetest.MustAppend(t, s, storetest.Msg("r", "1"), "")
	// Checkpoint so that the next commit writes to the WAL only; then
	// make the WAL immutable.
	onWriter(t, s, func(c *sql.Conn) error {
		_, err := c.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)")
		return err
	})
	if !chattr(t, "+i", path+"-wal") {
		t.Skip("chattr not usable here")
	}
	r := storetest.Append(t, s, storetest.Msg("r", "2"), "")
	if !errors.Is(r.Err, store.ErrUnavailable) {
		chattr(t, "-i", path+"-wal")
		t.Fatalf("Append to an immutable WAL: err = %v, want ErrUnavailable", r.Err)
	}
	t.Logf("Append to an immutable WAL: %v", r.Err)
	chattr(t, "-i", path+"-wal")
	chattest.Eventually(t, 10*time.Second, func() bool { return s.Ready(context.Background()) == nil }, "store recovers")
	if r := storetest.MustAppend(t, s, storetest.Msg("r", "2"), ""); r.Msg.Seq != 2 {
		t.Fatalf("after recovery: seq %d, want 2", r.Msg.Seq)
	}
}

func TestQueueFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	// The committer waits up to a minute for the lock the test holds.
	s := openT(t, path, Options{QueueSize: 4, BusyTimeout: time.Minute})
	ctx := context.Background()
	conn, err := rawDB(t, path).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	// The committer is stuck on the lock with at most one batch; the
	// queue fills and further Appends fail at once instead of blocking.
	// An Append that blocked would wait for the committer, which cannot
	// go on before the test rolls back: the Appends ending at all, well
	// within the committer's minute, shows none did (no wall-clock bound).
	full := make(chan error, 1)
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		for i := range 100 {
			s.Append(storetest.Msg("r", fmt.Sprint(i)), "", func(_ protocol.Message, _ bool, err error) {
				if err != nil && errors.Is(err, store.ErrUnavailable) {
					select {
					case full <- err:
					default:
					}
				}
			})
		}
	}()
	select {
	case <-appended:
	case <-time.After(20 * time.Second):
		conn.ExecContext(ctx, "ROLLBACK")
		t.Fatal("100 Appends did not return while the committer waited for the lock; Append must not block")
	}
	select {
	case err := <-full:
		t.Logf("Append with a full queue: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no Append failed although the queue was full")
	}
	conn.ExecContext(ctx, "ROLLBACK")
}

// TestCloseWaitsForPending checks that Close commits what is queued and
// calls every done, and that the messages are there after reopening.
func TestCloseWaitsForPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{})
	const n = 2000
	var got int
	for i := range n {
		s.Append(storetest.Msg("r", fmt.Sprint(i)), "", func(_ protocol.Message, _ bool, err error) {
			if err == nil {
				got++ // done calls are serial: only the committer makes them
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got != n {
		t.Fatalf("%d done calls succeeded before Close returned, want %d", got, n)
	}
	s = openT(t, path, Options{})
	if ri := roomInfo(t, s, "r"); ri.LastSeq != n {
		t.Fatalf("after reopening: LastSeq %d, want %d", ri.LastSeq, n)
	}
}

func chattr(t *testing.T, flag, path string) bool {
	t.Helper()
	out, err := exec.Command("chattr", flag, path).CombinedOutput()
	if err != nil {
		t.Logf("chattr %s %s: %v %s", flag, path, err, out)
		return false
	}
	return true
}
