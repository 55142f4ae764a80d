package sqlite

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// appendAll appends one message to each room named by ids, all queued at
// once, waits for them and checks that each got seq want. It returns once
// the committer is idle again (synctest.Wait), so that the test goroutine
// may look at the committer's state.
func appendAll(t *testing.T, s *Store, ids []string, want int64) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for _, id := range ids {
		wg.Add(1)
		s.Append(storetest.Msg(id, fmt.Sprint(want)), "", func(m protocol.Message, _ bool, err error) {
			defer wg.Done()
			if err != nil || m.Seq != want {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s: seq %d err %v", id, m.Seq, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	synctest.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d appends went wrong, want seq %d each; first: %s", len(bad), len(ids), want, bad[0])
	}
}

func roomIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("room-%04d", i)
	}
	return ids
}

// TestRoomCacheBounded writes to ten times as many rooms as the
// committer's cache may hold: after every batch the cache is within its
// bound, and rooms that were evicted continue their seqs from the
// database, with no gap and no reuse.
func TestRoomCacheBounded(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		const bound, maxBatch = 100, 64
		s := openT(t, filepath.Join(dir, "roomchat.db"), Options{Synchronous: "NORMAL", MaxBatch: maxBatch, cacheRooms: bound})
		ids := roomIDs(10 * bound)
		for round := int64(1); round <= 3; round++ {
			for i := 0; i < len(ids); i += maxBatch {
				appendAll(t, s, ids[i:min(i+maxBatch, len(ids))], round)
				if n := int(s.cache.rooms.Load()); n > bound {
					t.Fatalf("round %d, after %d rooms: %d rooms cached, want at most %d", round, i+maxBatch, n, bound)
				}
			}
			if int(s.cache.roomsPeak.Load()) > bound+maxBatch {
				t.Fatalf("round %d: the cache's map grew to %d rooms, want at most %d (bound + one batch)", round, int(s.cache.roomsPeak.Load()), bound+maxBatch)
			}
		}
		for _, id := range []string{ids[0], ids[len(ids)/2], ids[len(ids)-1]} {
			ms := messages(t, s, id)
			if len(ms) != 3 || ms[0].Seq != 1 || ms[2].Seq != 3 {
				t.Fatalf("room %s holds %d messages, want seqs 1, 2, 3", id, len(ms))
			}
		}
	})
}

// TestRoomCacheShrinksWhenIdle: rooms not written for roomIdle leave the
// cache, and the map is rebuilt small, so a burst of rooms leaves no lasting
// memory; the next message to such a room continues its seqs.
func TestRoomCacheShrinksWhenIdle(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		s := openT(t, filepath.Join(dir, "roomchat.db"), Options{Synchronous: "NORMAL"})
		ids := roomIDs(2000)
		appendAll(t, s, ids, 1)
		if int(s.cache.rooms.Load()) != len(ids) {
			t.Fatalf("%d rooms cached after writing %d", int(s.cache.rooms.Load()), len(ids))
		}
		time.Sleep(roomIdle / 2)
		appendAll(t, s, ids[:10], 2) // still in use
		time.Sleep(roomIdle/2 + roomIdle/10 + time.Second)
		synctest.Wait()
		if n := int(s.cache.rooms.Load()); n != 10 || int(s.cache.roomsPeak.Load()) != 10 {
			t.Fatalf("after %v idle: %d rooms cached, map rebuilt at %d; want the 10 rooms in use and a map of 10", roomIdle, n, int(s.cache.roomsPeak.Load()))
		}
		appendAll(t, s, ids[10:20], 2)
		if r := storetest.MustAppend(t, s, storetest.Msg(ids[0], "3"), ""); r.Msg.Seq != 3 {
			t.Fatalf("room in use: seq %d, want 3", r.Msg.Seq)
		}
	})
}

// TestTrimDirtyBounded: when more rooms than the trimmer's set may hold
// pass their retention at once, the set stays within its bound, a full
// pass visits the rest, and every room ends up trimmed to its limit.
func TestTrimDirtyBounded(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		const bound, limit = 50, 2
		path := filepath.Join(dir, "roomchat.db")
		s := openT(t, path, Options{Synchronous: "NORMAL", cacheRooms: bound, Retention: store.Retention{MaxMessages: limit}})
		ids := roomIDs(10 * bound)
		for round := int64(1); round <= limit+2; round++ {
			for i := 0; i < len(ids); i += 4 * bound {
				appendAll(t, s, ids[i:min(i+4*bound, len(ids))], round)
				if n := int(s.cache.dirty.Load()); n > bound {
					t.Fatalf("round %d: %d rooms waiting to be trimmed, want at most %d", round, n, bound)
				}
			}
		}
		time.Sleep(3 * s.opts.TrimInterval)
		synctest.Wait()
		var n int
		if err := rawDB(t, path).QueryRow("SELECT count(*) FROM messages").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != limit*len(ids) {
			t.Fatalf("%d rows after trimming, want %d (%d per room)", n, limit*len(ids), limit)
		}
		if int(s.cache.dirty.Load()) != 0 || int(s.cache.dirtyPeak.Load()) > bound {
			t.Fatalf("after trimming: %d rooms waiting, map peak %d", int(s.cache.dirty.Load()), int(s.cache.dirtyPeak.Load()))
		}
	})
}
