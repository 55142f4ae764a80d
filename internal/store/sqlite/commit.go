package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// A request is one queued Append, Ready's probe (probe set; its outcome
// goes to Store.health), a Flush (flush != nil), which is answered once
// everything queued before it is done, or a call on the writer's
// connection (onWriter: do != nil), made once the batch it is collected
// into has committed, or a write of moderation state (mod != nil).
type request struct {
	msg   protocol.Message
	key   string
	done  store.DoneFunc
	probe bool
	flush chan<- struct{}
	do    func(*sql.Conn)
	// clear, with cleared, is a Clear of that room: its outcome goes to
	// cleared once the batch commits or fails.
	clear   string
	cleared chan<- error
	mod     *modReq
}

// roomState is the committer's view of one room. Owned by the committer.
type roomState struct {
	roomID    string // rooms.room_id
	id        int64  // rooms.id
	last      int64  // last seq assigned, including the batch being built
	committed int64  // last seq committed; last rolls back to it on failure
	epoch     string // rooms.epoch

	used   uint64    // c.writes when a batch last wrote to the room
	usedAt time.Time // and when; both for eviction (cache.go)
}

// result is what a request's done gets once its batch commits.
type result struct {
	msg   protocol.Message
	dup   bool
	dupOf int   // index in the batch of the original when dup within the batch, else -1
	err   error // a refusal of this message alone (a *store.MutedError or *store.PostRuleError)
}

// committer is the state of the goroutine that writes: everything in it is
// owned by that goroutine (after init, which runs before it starts).
type committer struct {
	s *Store

	// rooms caches, by room ID, the state of rooms written recently: at
	// most Options.cacheRooms of them between batches, none idle for
	// roomIdle (cache.go). A room not in it is read from its rooms row.
	// Its last seq is the database's only because this committer is the
	// database's only writer: Open's lock (fileLock) keeps every other
	// Store, in any process, off the file. A second writer would make
	// these seqs stale and the two would fail each other's batches.
	rooms     map[string]*roomState
	roomsPeak int       // the size rooms grew to since it was last rebuilt (compact)
	writes    uint64    // one more for each room a batch writes to: roomState.used
	nextSweep time.Time // next sweepIdle

	// Statements prepared on s.wconn, the writer's connection, which the
	// committer holds from Open to Close. Its transactions are the BEGIN
	// IMMEDIATE … COMMIT of tx: database/sql's Tx, and the Stmt that
	// tx.Stmt makes for each statement in it, were most of the 84
	// allocations (3.7 KB) a message cost at one message per transaction.
	getKey, delKey, getRoom, insRoom, updRoom, probe, redact, clear *sql.Stmt
	putRestriction, delRestriction, putRule, delRule                *sql.Stmt
	insMsgs, insKeys, hasKeys                                       *multiStmt
	tx                                                              txStmts

	// mutes holds the mutes of the file (SPEC §11), loaded by init and
	// changed only once a batch that changes them has committed; the
	// batch being written notes its changes in muteBatch first. The mute
	// check of an Append reads both, in the transaction that would store
	// the message, so it sees every mute queued before it.
	mutes     map[muteKey]time.Time // end of each mute; zero: until lifted
	muteBatch map[muteKey]mutePending
	// modOnly holds the rooms whose run-time post rule is moderators,
	// kept like mutes: the batch's changes in ruleBatch (room → rule,
	// "" removed) until it commits.
	modOnly   map[string]bool
	ruleBatch map[string]string

	// Reused between batches.
	msgArgs, keyArgs, keyList []any
	redactions                []redactReq         // the batch's redactions, in order
	existing                  map[string]bool     // keys of the batch the dedup table has
	batchKeys                 map[string]int      // key → index of the request that stores it
	batchRooms                map[*roomState]bool // rooms the batch writes to

	batch   []request // reused between batches
	results []result
	timer   *time.Timer // for MaxWait

	trim trimmer
}

const (
	insMsgsSQL = `INSERT INTO messages (room, seq, id, user_id, name, body, ts, redacts) VALUES `
	clearSQL   = `DELETE FROM messages WHERE room = (SELECT id FROM rooms WHERE room_id = ?)`
	// redactSQL empties a message's text for a redaction (SPEC §11), once.
	redactSQL = `UPDATE messages SET body = '', redacted_seq = ?, redacted_by = ?, redacted_name = ?
WHERE room = ? AND seq = ? AND redacted_seq IS NULL`
	insKeysSQL = `INSERT INTO dedup (key, room, seq, msg_id, at) VALUES `
	hasKeysSQL = `SELECT key FROM dedup WHERE key IN (`
	delKeySQL  = `DELETE FROM dedup WHERE key = ?`
	getRoomSQL = `SELECT id, last_seq, epoch FROM rooms WHERE room_id = ?`
	insRoomSQL = `INSERT INTO rooms (room_id, last_seq, epoch, created_ms) VALUES (?, 0, ?, ?)`
	updRoomSQL = `UPDATE rooms SET last_seq = ? WHERE id = ?`
	probeSQL   = `INSERT INTO meta (key, value) VALUES ('probe_ms', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`
	// getKeySQL finds a key's original message; the message itself may
	// already be gone to retention (LEFT JOIN).
	getKeySQL = `SELECT d.at, d.seq, d.msg_id, r.room_id, m.user_id, m.name, m.body, m.ts, m.redacts, m.redacted_seq, m.redacted_by, m.redacted_name
FROM dedup d JOIN rooms r ON r.id = d.room
LEFT JOIN messages m ON m.room = d.room AND m.seq = d.seq
WHERE d.key = ?`
)

func (c *committer) init(ctx context.Context, s *Store) error {
	c.s = s
	c.rooms = make(map[string]*roomState)
	c.timer = time.NewTimer(time.Hour)
	c.timer.Stop()
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&c.getKey, getKeySQL},
		{&c.delKey, delKeySQL}, {&c.getRoom, getRoomSQL}, {&c.insRoom, insRoomSQL},
		{&c.updRoom, updRoomSQL}, {&c.probe, probeSQL}, {&c.redact, redactSQL},
		{&c.clear, clearSQL},
		{&c.putRestriction, putRestrictionSQL}, {&c.delRestriction, delRestrictionSQL},
		{&c.putRule, putRuleSQL}, {&c.delRule, delRuleSQL},
	} {
		var err error
		if *p.stmt, err = s.wconn.PrepareContext(ctx, p.sql); err != nil {
			return fmt.Errorf("prepare %q: %w", p.sql, err)
		}
	}
	var err error
	if c.insMsgs, err = prepareMulti(ctx, s.wconn, insMsgsSQL, 8, "", false); err != nil {
		return err
	}
	if c.insKeys, err = prepareMulti(ctx, s.wconn, insKeysSQL, 5, "", false); err != nil {
		return err
	}
	if c.hasKeys, err = prepareMulti(ctx, s.wconn, hasKeysSQL, 1, ")", true); err != nil {
		return err
	}
	if err := c.tx.prepare(ctx, s.wconn); err != nil {
		return err
	}
	c.existing = make(map[string]bool)
	c.batchKeys = make(map[string]int)
	c.batchRooms = make(map[*roomState]bool)
	if err := c.loadMod(ctx, s.opts.now()); err != nil {
		return err
	}
	return c.trim.init(ctx, s, &c.tx)
}

func (c *committer) closeStmts() error {
	var errs []error
	for _, st := range []*sql.Stmt{c.getKey, c.delKey, c.getRoom, c.insRoom, c.updRoom, c.probe, c.redact, c.clear,
		c.putRestriction, c.delRestriction, c.putRule, c.delRule} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	errs = append(errs, c.insMsgs.close(), c.insKeys.close(), c.hasKeys.close(), c.tx.close())
	errs = append(errs, c.trim.closeStmts())
	return errors.Join(errs...)
}

// run is the committer goroutine: it commits queued requests in batches
// and, between batches, runs retention in small steps. It returns once
// Close has closed the queue and everything queued is done.
func (c *committer) run() {
	defer close(c.s.exited)
	trimTimer := time.NewTimer(c.s.opts.TrimInterval)
	defer trimTimer.Stop()
	trimDue := true // a first pass at start cleans up after the last run
	for {
		if trimDue {
			more := c.trim.step(c.s.opts.now())
			c.publish()
			if !more {
				trimDue = false
				trimTimer.Reset(c.s.opts.TrimInterval)
			}
		}
		var r request
		var ok bool
		if trimDue {
			// More trimming to do: serve what is queued first, else go on.
			select {
			case r, ok = <-c.s.queue:
			default:
				continue
			}
		} else {
			select {
			case r, ok = <-c.s.queue:
			case <-trimTimer.C:
				trimDue = true
				c.sweepIdle(c.s.opts.now())
				continue
			}
		}
		if !ok {
			return
		}
		closed := c.collect(r)
		c.commit()
		if closed {
			return
		}
	}
}

// collect fills c.batch with r and whatever else is queued, up to MaxBatch,
// waiting up to MaxWait for more. It reports whether the queue was closed.
func (c *committer) collect(r request) (closed bool) {
	opts := c.s.opts
	c.batch = append(c.batch[:0], r)
	var deadline time.Time
	if opts.MaxWait > 0 {
		deadline = time.Now().Add(opts.MaxWait)
	}
	for len(c.batch) < opts.MaxBatch {
		select {
		case r, ok := <-c.s.queue:
			if !ok {
				return true
			}
			c.batch = append(c.batch, r)
			continue
		default:
		}
		wait := time.Until(deadline)
		if opts.MaxWait <= 0 || wait <= 0 {
			return false
		}
		c.timer.Reset(wait)
		select {
		case r, ok := <-c.s.queue:
			c.timer.Stop()
			if !ok {
				return true
			}
			c.batch = append(c.batch, r)
		case <-c.timer.C:
			return false
		}
	}
	return false
}

// commit writes c.batch in one transaction and calls every done in batch
// order, which is seq order in each room. The outcome goes to Store.health
// when the batch wrote something or failed (a batch of Flush markers and
// duplicates only proves nothing).
//
// A batch that fails (a full disk, an I/O error, a lock held past
// BusyTimeout) fails every request in it and leaves nothing behind: the
// transaction is rolled back (txStmts.run), also when COMMIT itself
// failed and left it open, so the next batch starts a fresh transaction on
// a clean connection. No state
// survives a failure but the rolled-back seqs, so the store recovers by
// itself as soon as a write can succeed again (TestDiskFull).
func (c *committer) commit() {
	now := c.s.opts.now()
	c.results = c.results[:0]
	touched, created, err := c.write(now)
	c.settleMod(err == nil)
	if err != nil {
		// Nothing of the batch is stored: forget the seqs it took and the
		// rooms it created, so the next batch reuses them (no gap).
		for _, rs := range touched {
			rs.last = rs.committed
		}
		for _, id := range created {
			delete(c.rooms, id)
		}
		err = unavailable(fmt.Errorf("commit a batch of %d: %w", len(c.batch), err))
	} else {
		for _, rs := range touched {
			rs.committed = rs.last
			c.trim.mark(rs.id, rs.roomID, rs.committed)
		}
	}
	c.evict()
	c.publish()
	probe := slices.ContainsFunc(c.batch, func(r request) bool { return r.probe })
	mods := slices.ContainsFunc(c.batch, func(r request) bool { return r.mod != nil })
	if err != nil || len(touched) > 0 || probe || mods {
		herr := err
		if probe && herr == nil {
			herr = c.s.readCheck()
		}
		c.s.health.record(herr, c.s.opts.now(), probe)
	}
	c.reply(err)
	clear(c.batch) // drop references to messages and callbacks
}

// reply is commit's last step: it answers every request of the batch in
// batch order, with err if the transaction failed, else with its result.
func (c *committer) reply(err error) {
	for i, r := range c.batch {
		if r.probe {
			continue
		}
		if r.flush != nil {
			close(r.flush)
			continue
		}
		if r.do != nil {
			r.do(c.s.wconn)
			continue
		}
		if r.cleared != nil {
			r.cleared <- err
			continue
		}
		if r.mod != nil {
			r.mod.reply <- err
			continue
		}
		if err != nil {
			r.done(r.msg, false, err)
			continue
		}
		res := c.results[i]
		if res.err != nil {
			r.done(r.msg, false, res.err)
			continue
		}
		if res.dupOf >= 0 {
			res.msg = c.results[res.dupOf].msg
		}
		r.done(res.msg, res.dup, nil)
	}
}

// write runs the batch's transaction. It fills c.results (one per request)
// and returns the rooms whose seqs it advanced and the IDs of the rooms it
// created, which commit rolls back in memory if err != nil.
//
// The transaction: find which of the batch's keys the database already
// has (one IN query per 64 keys; usually none), walk the batch in order
// deciding duplicates and assigning seqs, then insert all messages and
// keys with multi-row INSERTs and update each touched room's last_seq.
func (c *committer) write(now time.Time) (touched []*roomState, created []string, err error) {
	err = c.tx.run(func() error {
		touched, created, err = c.writeTx(now)
		return err
	})
	return touched, created, err
}

// writeTx is write's work inside the transaction. Its loop stays in one
// piece because it is one ordered pass over the batch that shares its
// state (the batch's keys, the rooms seen, touched and created) from one
// request to the next: split, that state would travel through every call
// on the commit path.
func (c *committer) writeTx(now time.Time) (touched []*roomState, created []string, err error) {
	ctx := context.Background() // bounded by busy_timeout, not by a caller
	nowMs := now.UnixMilli()
	if err := c.findKeys(ctx); err != nil {
		return nil, nil, err
	}
	c.msgArgs, c.keyArgs, c.redactions = c.msgArgs[:0], c.keyArgs[:0], c.redactions[:0]
	keys, seen := c.batchKeys, c.batchRooms
	clear(keys)
	clear(seen)
	probe := false
	for i, r := range c.batch {
		c.results = append(c.results, result{dupOf: -1})
		if r.probe {
			probe = true
			continue
		}
		if r.flush != nil || r.do != nil {
			continue
		}
		if r.cleared != nil {
			// What the batch wrote before goes first, then the room's
			// messages, with what is gone from them by then.
			if err := c.writeRows(ctx); err != nil {
				return touched, created, err
			}
			if _, err := c.clear.ExecContext(ctx, r.clear); err != nil {
				return touched, created, err
			}
			continue
		}
		if r.mod != nil {
			if err := c.writeMod(ctx, r.mod); err != nil {
				return touched, created, err
			}
			continue
		}
		if r.key != "" {
			if j, ok := keys[r.key]; ok {
				c.results[i] = result{dup: true, dupOf: j}
				continue
			}
			if c.existing[r.key] {
				live, orig, err := c.oldKey(ctx, r, nowMs)
				if err != nil {
					return touched, created, err
				}
				if live {
					c.results[i] = result{msg: orig, dup: true, dupOf: -1}
					continue
				}
			}
		}
		if r.msg.Redacts <= 0 {
			// A muted user's message, or a member's under the
			// moderators post rule, is refused here, in the
			// transaction that would store it: nothing is written
			// and no seq is taken (SPEC §11 mute, configure).
			if err := c.refused(&r.msg, now); err != nil {
				c.results[i].err = err
				continue
			}
		}
		rs, isNew, err := c.room(ctx, r.msg.RoomID, nowMs)
		if err != nil {
			return touched, created, err
		}
		if isNew {
			created = append(created, r.msg.RoomID)
		}
		m := r.msg
		m.BelowModerator = false
		m.Seq = rs.last + 1
		rs.last = m.Seq
		if !seen[rs] {
			seen[rs] = true
			touched = append(touched, rs)
			c.writes++
			rs.used, rs.usedAt = c.writes, now
		}
		if keep, _ := c.s.opts.Retention.For(m.RoomID); keep > 0 {
			c.msgArgs = append(c.msgArgs, rs.id, m.Seq, m.ID, m.From.UserID, m.From.Name, m.Message, m.TS.UnixMilli(), m.Redacts)
			if m.Redacts > 0 && m.Redacts < m.Seq {
				c.redactions = append(c.redactions, redactReq{room: rs.id, target: m.Redacts, seq: m.Seq, by: m.From})
			}
		}
		if r.key != "" {
			keys[r.key] = i
			c.keyArgs = append(c.keyArgs, r.key, rs.id, m.Seq, m.ID, nowMs)
		}
		c.results[i].msg = m
	}
	if err := c.writeRows(ctx); err != nil {
		return touched, created, err
	}
	for _, rs := range touched {
		if _, err := c.updRoom.ExecContext(ctx, rs.last, rs.id); err != nil {
			return touched, created, err
		}
	}
	if probe {
		if _, err := c.probe.ExecContext(ctx, strconv.FormatInt(nowMs, 10)); err != nil {
			return touched, created, err
		}
	}
	return touched, created, nil
}

// writeRows inserts the messages and keys the batch has collected and
// applies its redactions, then empties those lists.
func (c *committer) writeRows(ctx context.Context) error {
	if err := c.insMsgs.exec(ctx, c.msgArgs); err != nil {
		return err
	}
	if err := c.insKeys.exec(ctx, c.keyArgs); err != nil {
		return err
	}
	clear(c.msgArgs) // drop references to message text
	// After the inserts: a redaction may name a message of its own batch.
	for _, r := range c.redactions {
		if _, err := c.redact.ExecContext(ctx, r.seq, r.by.UserID, r.by.Name, r.room, r.target); err != nil {
			return err
		}
	}
	c.msgArgs, c.keyArgs, c.redactions = c.msgArgs[:0], c.keyArgs[:0], c.redactions[:0]
	return nil
}

// redactReq is a redaction to apply once the batch's messages are in.
type redactReq struct {
	room, target, seq int64
	by                protocol.User
}

// findKeys sets c.existing to the batch's keys that the dedup table holds.
func (c *committer) findKeys(ctx context.Context) error {
	clear(c.existing)
	c.keyList = c.keyList[:0]
	for _, r := range c.batch {
		if r.key != "" {
			c.keyList = append(c.keyList, r.key)
		}
	}
	return c.hasKeys.each(c.keyList, func(st *sql.Stmt, args []any) error {
		rows, err := st.QueryContext(ctx, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				return err
			}
			c.existing[k] = true
		}
		return rows.Err()
	})
}

// room returns the state of room roomID from the cache, else loads it
// from the database, or creates it (in the store's epoch) when the room
// has never had a message.
func (c *committer) room(ctx context.Context, roomID string, nowMs int64) (rs *roomState, isNew bool, err error) {
	if rs := c.rooms[roomID]; rs != nil {
		return rs, false, nil
	}
	rs = &roomState{roomID: roomID}
	err = c.getRoom.QueryRowContext(ctx, roomID).Scan(&rs.id, &rs.last, &rs.epoch)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// A new room's history starts in the store's epoch, the one its
		// joiners saw before this first message (migrations/0002).
		rs.epoch = c.s.epoch
		res, err := c.insRoom.ExecContext(ctx, roomID, rs.epoch, nowMs)
		if err != nil {
			return nil, false, err
		}
		if rs.id, err = res.LastInsertId(); err != nil {
			return nil, false, err
		}
		isNew = true
	case err != nil:
		return nil, false, err
	}
	rs.committed = rs.last
	c.rooms[roomID] = rs
	c.roomsPeak = max(c.roomsPeak, len(c.rooms))
	return rs, isNew, nil
}

// oldKey looks at r.key, which the dedup table holds from an earlier
// batch. live reports whether it is younger than store.DedupWindow; orig is
// then the message it names. An expired key is deleted, so that write
// inserts it again with a new rowid (rowid order stays time order for the
// sweep).
func (c *committer) oldKey(ctx context.Context, r request, nowMs int64) (live bool, orig protocol.Message, err error) {
	var at, ts, redacts sql.NullInt64
	var userID, name, body sql.NullString
	var red redaction
	err = c.getKey.QueryRowContext(ctx, r.key).Scan(&at, &orig.Seq, &orig.ID, &orig.RoomID, &userID, &name, &body, &ts, &redacts, &red.seq, &red.by, &red.name)
	if err != nil {
		return false, orig, fmt.Errorf("read dedup key: %w", err)
	}
	if nowMs-at.Int64 < store.DedupWindow.Milliseconds() {
		if ts.Valid {
			orig.From = protocol.User{UserID: userID.String, Name: name.String}
			orig.Message = body.String
			orig.TS = time.UnixMilli(ts.Int64).UTC()
			orig.Redacts, orig.Redacted = redacts.Int64, red.get()
		} else {
			// Retention already dropped the original: what is left is
			// its ID and seq, which is what an ack needs.
			orig.From = r.msg.From
			orig.TS = time.UnixMilli(at.Int64).UTC()
		}
		return true, orig, nil
	}
	if _, err := c.delKey.ExecContext(ctx, r.key); err != nil {
		return false, orig, err
	}
	return false, protocol.Message{}, nil
}
