package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"time"

	"github.com/roomchat/roomchat/internal/store"
)

// Trimming deletes what retention no longer keeps and sweeps expired
// de-duplication keys. It runs in the committer goroutine between batches,
// in steps of one short transaction each, so that it never holds the write
// lock for long: a step deletes at most trimChunk rows per room, visits at
// most trimRooms rooms and sweeps at most trimChunk keys. Reads apply
// retention themselves, so how soon rows are deleted only affects the
// file's size, never what clients see.
const (
	trimChunk = 1000
	trimRooms = 100
	// fullPassEvery is how often, with a MaxAge, every room is visited
	// (rooms without new messages also age).
	fullPassEvery = time.Minute
	// pruneEvery is how often bans and mutes that have ended are deleted
	// (SPEC §11: every read skips them already, so this only bounds the
	// rows they leave; the scan of restrictions is not worth doing at
	// every step).
	pruneEvery = time.Minute
)

// trimmer is owned by the committer goroutine.
type trimmer struct {
	s *Store

	// dirty holds the rooms (rooms.id → last committed seq) with commits
	// since their last trim that retention may have rows of to delete:
	// with no MaxAge, only rooms whose seqs went past MaxMessages. It holds
	// at most Options.cacheRooms rooms; a room that does not fit makes a
	// full pass run instead (mark), which visits every room.
	dirty     map[int64]dirtyRoom
	dirtyPeak int // for compact
	// cursor is the rooms.id after which a full pass over every room goes
	// on; -1 when no full pass is under way. A full pass runs at Open (for
	// rooms left over the limit by the last run, or by a lowered limit),
	// with a MaxAge every fullPassEvery, and when dirty was full. again
	// asks for one more pass after the one under way, which may already
	// be past a room that did not fit in dirty.
	cursor   int64
	again    bool
	nextFull time.Time

	// nextPrune is when the next step deletes ended restrictions; zero:
	// the first step does.
	nextPrune time.Time

	firstSeq, ageSeq, delMsgs, sweep, roomPage, prune *sql.Stmt // on s.wconn
	tx                                                *txStmts  // the committer's

	log faultLog
}

const (
	firstSeqSQL = `SELECT min(seq) FROM messages WHERE room = ?`
	ageSeqSQL   = `SELECT min(seq) FROM messages WHERE room = ? AND ts >= ?`
	delMsgsSQL  = `DELETE FROM messages WHERE room = ? AND seq <= ?`
	// sweepSQL deletes expired keys among the oldest trimChunk in rowid
	// order, which is insertion (time) order.
	sweepSQL    = `DELETE FROM dedup WHERE rowid IN (SELECT rowid FROM dedup ORDER BY rowid LIMIT ?) AND at <= ?`
	roomPageSQL = `SELECT id, room_id, last_seq FROM rooms WHERE id > ? ORDER BY id LIMIT ?`
	// pruneSQL deletes up to a chunk of bans and mutes that ended at or
	// before a time (until_ms 0: until lifted, never).
	pruneSQL = `DELETE FROM restrictions WHERE (room_id, kind, user_id) IN
(SELECT room_id, kind, user_id FROM restrictions WHERE until_ms != 0 AND until_ms <= ? LIMIT ?)`
)

// dirtyRoom is a room to trim: its ID and last committed seq.
type dirtyRoom struct {
	roomID string
	last   int64
}

// periodic reports whether retention can drop messages of rooms that
// get none (an age, or a per-room rule that a reload may lower), so that
// a full pass runs every fullPassEvery.
func (t *trimmer) periodic() bool {
	ret := t.s.opts.Retention
	return ret.MaxAge > 0 || ret.Room != nil
}

func (t *trimmer) init(ctx context.Context, s *Store, tx *txStmts) error {
	t.s, t.tx = s, tx
	t.log = faultLog{log: s.opts.Logger, what: "trim", path: s.path}
	t.dirty = make(map[int64]dirtyRoom)
	t.cursor = 0 // full pass at start
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&t.firstSeq, firstSeqSQL}, {&t.ageSeq, ageSeqSQL}, {&t.delMsgs, delMsgsSQL},
		{&t.sweep, sweepSQL}, {&t.roomPage, roomPageSQL}, {&t.prune, pruneSQL},
	} {
		var err error
		if *p.stmt, err = s.wconn.PrepareContext(ctx, p.sql); err != nil {
			return err
		}
	}
	return nil
}

func (t *trimmer) closeStmts() error {
	var errs []error
	for _, st := range []*sql.Stmt{t.firstSeq, t.ageSeq, t.delMsgs, t.sweep, t.roomPage, t.prune} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// mark records that room id (roomID) committed messages up to seq last.
func (t *trimmer) mark(id int64, roomID string, last int64) {
	limit, age := t.s.opts.Retention.For(roomID)
	if age <= 0 && last <= int64(limit) {
		return // seqs start at 1: at most last rows, none past the limit
	}
	if _, ok := t.dirty[id]; ok || len(t.dirty) < t.s.opts.cacheRooms {
		t.dirty[id] = dirtyRoom{roomID, last}
		t.dirtyPeak = max(t.dirtyPeak, len(t.dirty))
		return
	}
	if t.cursor < 0 {
		t.cursor = 0
	} else {
		t.again = true
	}
}

// step runs one bounded trim transaction and reports whether work is left
// (more rows to delete, dirty rooms or a full pass not finished). A failed
// step changes nothing and is retried at the next interval. On a full disk
// the deletes go on as long as the WAL has room for them (it is reused
// from its start after each complete checkpoint), and the pages they free
// take new messages; where even the WAL cannot grow, trimming resumes by
// itself once there is space.
func (t *trimmer) step(now time.Time) (more bool) {
	if t.cursor < 0 && t.periodic() && !now.Before(t.nextFull) {
		t.cursor = 0
	}
	var cursor int64
	var cleaned []int64
	err := t.tx.run(func() (err error) {
		more, cursor, cleaned, err = t.work(context.Background(), now)
		return err
	})
	t.log.observe(err)
	if err != nil {
		return false
	}
	for _, id := range cleaned {
		delete(t.dirty, id)
	}
	t.dirty = compact(t.dirty, &t.dirtyPeak)
	if t.cursor >= 0 && cursor < 0 {
		t.nextFull = now.Add(fullPassEvery)
		if t.again {
			t.again, cursor = false, 0
		}
	}
	t.cursor = cursor
	return more || len(t.dirty) > 0 || t.cursor >= 0
}

// work does one step's statements, in a transaction. It returns the dirty
// rooms it finished and where the full pass goes on (-1: finished).
func (t *trimmer) work(ctx context.Context, now time.Time) (more bool, cursor int64, cleaned []int64, err error) {
	cut := now.Add(-store.DedupWindow).UnixMilli()
	res, err := t.sweep.ExecContext(ctx, trimChunk, cut)
	if err != nil {
		return false, 0, nil, err
	}
	if n, _ := res.RowsAffected(); n == trimChunk {
		more = true
	}
	if !now.Before(t.nextPrune) {
		res, err := t.prune.ExecContext(ctx, now.UnixMilli(), trimChunk)
		if err != nil {
			return false, 0, nil, err
		}
		if n, _ := res.RowsAffected(); n == trimChunk {
			more = true // the next step deletes more
		} else {
			t.nextPrune = now.Add(pruneEvery)
		}
	}
	visited := 0
	for id, d := range t.dirty {
		if visited == trimRooms {
			break
		}
		visited++
		roomMore, err := t.room(ctx, id, d.roomID, d.last, now)
		if err != nil {
			return false, 0, nil, err
		}
		if !roomMore {
			cleaned = append(cleaned, id)
		}
	}
	cursor = t.cursor
	if cursor >= 0 {
		page, err := t.readPage(ctx, cursor)
		if err != nil {
			return false, 0, nil, err
		}
		for _, r := range page {
			roomMore, err := t.room(ctx, r.id, r.roomID, r.last, now)
			if err != nil {
				return false, 0, nil, err
			}
			if roomMore {
				// Stay on this room; the next step deletes more of it.
				return true, cursor, cleaned, nil
			}
			cursor = r.id
		}
		if len(page) < trimRooms {
			cursor = -1
		}
	}
	return more, cursor, cleaned, nil
}

// pageRoom is a room of the full pass's page (readPage).
type pageRoom struct {
	id     int64
	roomID string
	last   int64
}

// readPage reads the full pass's next page: up to trimRooms rooms after
// cursor, in id order.
func (t *trimmer) readPage(ctx context.Context, cursor int64) ([]pageRoom, error) {
	rows, err := t.roomPage.QueryContext(ctx, cursor, trimRooms)
	if err != nil {
		return nil, err
	}
	var page []pageRoom
	for rows.Next() {
		var r pageRoom
		if err := rows.Scan(&r.id, &r.roomID, &r.last); err != nil {
			rows.Close()
			return nil, err
		}
		page = append(page, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return page, nil
}

// room deletes, oldest first and at most trimChunk of them, the messages of
// room id (roomID, whose last seq is last) that retention no longer keeps.
// It reports whether more remain.
func (t *trimmer) room(ctx context.Context, id int64, roomID string, last int64, now time.Time) (more bool, err error) {
	limit, age := t.s.opts.Retention.For(roomID)
	keepFrom := last - int64(limit) + 1 // first seq kept by count
	if age > 0 {
		var s sql.NullInt64
		if err := t.ageSeq.QueryRowContext(ctx, id, now.Add(-age).UnixMilli()).Scan(&s); err != nil {
			return false, err
		}
		byAge := int64(math.MaxInt64)
		if s.Valid {
			byAge = s.Int64
		}
		keepFrom = max(keepFrom, min(byAge, last+1))
	}
	var first sql.NullInt64
	if err := t.firstSeq.QueryRowContext(ctx, id).Scan(&first); err != nil {
		return false, err
	}
	if !first.Valid || first.Int64 >= keepFrom {
		return false, nil
	}
	upTo := min(keepFrom-1, first.Int64+trimChunk-1)
	if _, err := t.delMsgs.ExecContext(ctx, id, upTo); err != nil {
		return false, err
	}
	return upTo < keepFrom-1, nil
}
