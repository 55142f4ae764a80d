package sqlite

import (
	"maps"
	"slices"
	"sync/atomic"
	"time"
)

// The committer's per-room state (committer.rooms) and the trimmer's set of
// rooms to visit (trimmer.dirty) are caches of what the database holds, and
// both are bounded: a client that writes one message to each of a million
// room IDs must not make the process hold a million entries.
const (
	// maxCachedRooms bounds each of them. A cached room costs about 200
	// bytes (its ID, four fields, the map's share), so 10,000 is about 2 MB.
	// A room not cached costs one indexed SELECT of its rooms row in the
	// next batch that writes to it (tens of microseconds), and only when
	// more than 10,000 rooms are written within a few seconds of each
	// other. No operator has a reason to tune it, so it is not a flag.
	maxCachedRooms = 10000

	// roomIdle is how long a room stays cached without being written to:
	// after a burst of rooms, the map shrinks back to the rooms in use.
	// Checked every roomIdle/10.
	roomIdle = 10 * time.Minute
)

// evict keeps c.rooms within its bound after a batch: past it, the rooms
// written least recently go, down to three quarters of the bound, so that
// the sort it takes runs once per bound/4 new rooms, not at every batch.
// Within one batch the map may exceed the bound by up to MaxBatch rooms.
func (c *committer) evict() {
	bound := c.s.opts.cacheRooms
	if len(c.rooms) <= bound {
		return
	}
	used := make([]uint64, 0, len(c.rooms))
	for _, rs := range c.rooms {
		used = append(used, rs.used)
	}
	slices.Sort(used)
	cut := used[len(used)-bound*3/4] // used values are unique
	for id, rs := range c.rooms {
		if rs.used < cut {
			delete(c.rooms, id)
		}
	}
	c.rooms = compact(c.rooms, &c.roomsPeak)
}

// cacheStats mirrors the sizes of the committer's room cache and of the
// trimmer's set of rooms to visit, for tests (which may not read the
// committer's own fields while it runs). Written by the committer only,
// after each batch, idle sweep and trim step.
type cacheStats struct {
	rooms, roomsPeak, dirty, dirtyPeak atomic.Int64
}

func (c *committer) publish() {
	st := &c.s.cache
	st.rooms.Store(int64(len(c.rooms)))
	st.roomsPeak.Store(int64(c.roomsPeak))
	st.dirty.Store(int64(len(c.trim.dirty)))
	st.dirtyPeak.Store(int64(c.trim.dirtyPeak))
}

// sweepIdle drops rooms not written for roomIdle, at most every roomIdle/10.
func (c *committer) sweepIdle(now time.Time) {
	if now.Before(c.nextSweep) {
		return
	}
	c.nextSweep = now.Add(roomIdle / 10)
	for id, rs := range c.rooms {
		if now.Sub(rs.usedAt) >= roomIdle {
			delete(c.rooms, id)
		}
	}
	c.rooms = compact(c.rooms, &c.roomsPeak)
	c.publish()
}

// compact returns m, or m rebuilt to its size when it has shrunk to under a
// quarter of *peak, which it then lowers: deleting from a Go map does not
// free its buckets. (As internal/room's compact.)
func compact[K comparable, V any](m map[K]V, peak *int) map[K]V {
	if len(m) >= *peak/4 {
		return m
	}
	*peak = len(m)
	return maps.Collect(maps.All(m)) // not Clone: it keeps the table size
}
