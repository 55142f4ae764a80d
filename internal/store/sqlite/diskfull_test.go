package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// maxPages sets SQLite's max_page_count on the writer's connection, the
// one that commits batches and trims, and returns the limit in force: it
// is never below the file's current size, so maxPages(1) makes the file
// full as it is, as a full disk would. (The pragma belongs to the
// connection; the file does not keep it.)
func maxPages(t *testing.T, s *Store, n int64) int64 {
	t.Helper()
	var got int64
	onWriter(t, s, func(c *sql.Conn) error {
		return c.QueryRowContext(context.Background(), fmt.Sprintf("PRAGMA max_page_count = %d", n)).Scan(&got)
	})
	return got
}

// TestDiskFull: with a full database file, every Append of a batch fails
// with ErrUnavailable and nothing of it stays, reads go on working, the
// committer and the trimmer keep running, retention deletes aged rows
// although the file cannot grow and new messages take the pages they
// free, and once the file may grow again the next Append succeeds with no
// gap in seq: no operator action at any point. Ready follows the batches'
// outcome. It runs in a synctest
// bubble, so the hour of retention passes at once.
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(dir, "roomchat.db")
		s := openT(t, path, Options{Retention: store.Retention{MaxAge: time.Hour}})
		db := rawDB(t, path)
		count := func(room string) int {
			t.Helper()
			var n int
			if err := db.QueryRow("SELECT count(*) FROM messages m JOIN rooms r ON r.id = m.room WHERE r.room_id = ?", room).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		big := strings.Repeat("x", 3000) // about one page of the file each
		for i := range 50 {
			storetest.MustAppend(t, s, storetest.Msg("aged", fmt.Sprint(i, big)), "")
		}
		time.Sleep(30 * time.Minute) // "live" stays when "aged" ages out
		live := 0
		appendLive := func() storetest.Result {
			t.Helper()
			r := storetest.Append(t, s, storetest.Msg("live", fmt.Sprint(live, big)), store.DedupKey("u", "live", fmt.Sprint(live)))
			if r.Err == nil {
				if live++; r.Msg.Seq != int64(live) || r.Dup {
					t.Fatalf("live message %d: seq %d dup %v", live, r.Msg.Seq, r.Dup)
				}
			}
			return r
		}
		fill := func() error {
			t.Helper()
			for range 1000 {
				if r := appendLive(); r.Err != nil {
					return r.Err
				}
			}
			t.Fatal("1000 pages later the file is still not full")
			return nil
		}
		pages := maxPages(t, s, 1)
		err := fill()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Append to a full file: %v, want ErrUnavailable", err)
		}
		t.Logf("file full at %d pages with %d live messages: %v", pages, live, err)

		// One batch of several keyed Appends: every one fails.
		const n = 8
		results := make(chan storetest.Result, n)
		for i := range n {
			m := storetest.Msg("live", fmt.Sprint("batch", i, big))
			s.Append(m, store.DedupKey("u", "live", fmt.Sprint("batch", i)), func(m protocol.Message, dup bool, err error) {
				results <- storetest.Result{Msg: m, Dup: dup, Err: err}
			})
		}
		for range n {
			if r := <-results; !errors.Is(r.Err, store.ErrUnavailable) {
				t.Fatalf("Append in a batch on a full file: seq %d err %v, want ErrUnavailable", r.Msg.Seq, r.Err)
			}
		}
		if err := s.Ready(context.Background()); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Ready on a full file, right after a failed batch = %v, want ErrUnavailable", err)
		}
		// Reads do not need space.
		if got := messages(t, s, "live"); len(got) != live {
			t.Fatalf("Messages on a full file: %d, want %d", len(got), live)
		}
		if info, page, err := s.Page(context.Background(), "aged", store.Query{Newest: true, Limit: 10}); err != nil || info.LastSeq != 50 || len(page) != 10 {
			t.Fatalf("Page on a full file: %+v, %d messages, %v", info, len(page), err)
		}

		// An hour after "aged" was written, retention drops it: the
		// trimmer's deletes need no new page, and the pages they free take
		// new messages while the limit stays where it is.
		time.Sleep(31 * time.Minute)
		synctest.Wait()
		if n := count("aged"); n != 0 {
			t.Fatalf("%d aged rows left an hour later on a full file, want 0", n)
		}
		before := live
		if err := fill(); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("filling the freed pages: %v", err)
		}
		// Not all 50: B-tree pages are not packed full.
		if live-before < 10 {
			t.Fatalf("%d messages fitted in the pages of the 50 trimmed ones, want most of 50", live-before)
		}
		t.Logf("%d messages fitted in the pages of the 50 trimmed ones", live-before)
		if got := maxPages(t, s, 1); got != pages {
			t.Fatalf("max_page_count %d, want still %d: the file did not grow", got, pages)
		}

		// Space comes back: the next Append succeeds, keys of failed
		// batches were not kept, seqs have no gap.
		maxPages(t, s, 1<<30)
		for i := range 3 {
			if r := appendLive(); r.Err != nil {
				t.Fatalf("Append %d once the file may grow: %v", i, r.Err)
			}
		}
		r := storetest.MustAppend(t, s, storetest.Msg("live", "batch0 again"), store.DedupKey("u", "live", "batch0"))
		if r.Dup || r.Msg.Seq != int64(live+1) {
			t.Fatalf("key of a failed batch, retried: seq %d dup %v, want seq %d, not a dup", r.Msg.Seq, r.Dup, live+1)
		}
		got := messages(t, s, "live")
		for i, m := range got {
			if m.Seq != int64(i+1) {
				t.Fatalf("live message %d has seq %d: gap", i, m.Seq)
			}
		}
		if err := s.Ready(context.Background()); err != nil {
			t.Fatalf("Ready after recovery = %v", err)
		}
	})
}
