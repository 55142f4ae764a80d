package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

var _ store.Moderation = (*Store)(nil)

// modReq is a write of moderation state (SPEC §11), queued to the
// committer like an Append, so that it is ordered with the room's
// messages: an Append queued after a mute is checked against it. Exactly
// one of put, del and rule says what it is.
type modReq struct {
	room string
	kind store.Kind
	put  *store.Restriction // PutRestriction
	del  string             // DeleteRestriction's user
	rule *string            // SetPostRule ("" removes it)

	existed bool // DeleteRestriction's answer, set by the committer before reply
	// reply gets the outcome once the batch commits or fails (cap 1).
	reply chan error
}

// muteKey names one user's mute in one room in the committer's copy.
type muteKey struct{ room, user string }

// mutePending is a mute the batch being written sets (set) or lifts.
type mutePending struct {
	until time.Time
	set   bool
}

const (
	putRestrictionSQL = `INSERT INTO restrictions (room_id, kind, user_id, until_ms, by_id, by_name, reason, at_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (room_id, kind, user_id) DO UPDATE SET until_ms = excluded.until_ms,
  by_id = excluded.by_id, by_name = excluded.by_name, reason = excluded.reason, at_ms = excluded.at_ms`
	delRestrictionSQL = `DELETE FROM restrictions WHERE room_id = ? AND kind = ? AND user_id = ?`
	putRuleSQL        = `INSERT INTO post_rules (room_id, rule) VALUES (?, ?)
ON CONFLICT (room_id) DO UPDATE SET rule = excluded.rule`
	delRuleSQL = `DELETE FROM post_rules WHERE room_id = ?`
	// A restriction is in force at now when it has no end or ends after
	// now: until_ms > now_ms, with now_ms rounded down.
	restrictionsSQL = `SELECT user_id, until_ms, by_id, by_name, reason, at_ms FROM restrictions
WHERE room_id = ? AND kind = ? AND (until_ms = 0 OR until_ms > ?) ORDER BY user_id`
	restrictedSQL = `SELECT user_id, until_ms, by_id, by_name, reason, at_ms FROM restrictions
WHERE room_id = ? AND kind = ? AND user_id = ? AND (until_ms = 0 OR until_ms > ?)`
	postRuleSQL = `SELECT rule FROM post_rules WHERE room_id = ?`
	// loadMutesSQL reads the mutes in force at Open into the committer.
	loadMutesSQL = `SELECT room_id, user_id, until_ms FROM restrictions
WHERE kind = 'mute' AND (until_ms = 0 OR until_ms > ?)`
	// loadModOnlySQL reads the rooms whose run-time post rule is
	// moderators at Open into the committer.
	loadModOnlySQL = `SELECT room_id FROM post_rules WHERE rule = ?`
)

// toMs and fromMs store a time as Unix ms, the zero time as 0.
func toMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMs(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// loadMod fills c.mutes with the mutes in force at now, and c.modOnly
// with the rooms only moderators may post to, from the file.
func (c *committer) loadMod(ctx context.Context, now time.Time) error {
	c.modOnly = make(map[string]bool)
	c.ruleBatch = make(map[string]string)
	rows, err := c.s.wconn.QueryContext(ctx, loadModOnlySQL, store.ModeratorsOnly)
	if err != nil {
		return fmt.Errorf("read post rules: %w", err)
	}
	for rows.Next() {
		var room string
		if err := rows.Scan(&room); err != nil {
			rows.Close()
			return fmt.Errorf("read post rules: %w", err)
		}
		c.modOnly[room] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read post rules: %w", err)
	}
	return c.loadMutes(ctx, now)
}

// loadMutes fills c.mutes with the mutes in force at now, from the file.
func (c *committer) loadMutes(ctx context.Context, now time.Time) error {
	c.mutes = make(map[muteKey]time.Time)
	c.muteBatch = make(map[muteKey]mutePending)
	rows, err := c.s.wconn.QueryContext(ctx, loadMutesSQL, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("read mutes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k muteKey
		var until int64
		if err := rows.Scan(&k.room, &k.user, &until); err != nil {
			return fmt.Errorf("read mutes: %w", err)
		}
		c.mutes[k] = fromMs(until)
	}
	return rows.Err()
}

// muted returns the error for a message of userID in room at now, nil if
// the user is not muted there: the batch's own changes first, then the
// committed copy. An expired mute found in the copy leaves it (the row
// stays in the file until replaced or lifted; reads skip it).
func (c *committer) muted(room, userID string, now time.Time) error {
	if userID == "" || len(c.mutes) == 0 && len(c.muteBatch) == 0 {
		return nil
	}
	k := muteKey{room, userID}
	until, ok := c.mutes[k]
	if p, pending := c.muteBatch[k]; pending {
		until, ok = p.until, p.set
	}
	if !ok {
		return nil
	}
	if !until.IsZero() && !now.Before(until) {
		if _, pending := c.muteBatch[k]; !pending {
			delete(c.mutes, k)
		}
		return nil
	}
	return &store.MutedError{Until: until}
}

// refused returns the error for m, a message (not a redaction) appended
// at now, nil if its room takes it: a mute of its sender, or the room's
// post rule (the batch's own change first, then the committed copy) when
// the sender is below moderator.
func (c *committer) refused(m *protocol.Message, now time.Time) error {
	if err := c.muted(m.RoomID, m.From.UserID, now); err != nil {
		return err
	}
	if !m.BelowModerator {
		return nil
	}
	only := c.modOnly[m.RoomID]
	if rule, pending := c.ruleBatch[m.RoomID]; pending {
		only = rule == store.ModeratorsOnly
	}
	if only {
		return &store.PostRuleError{Rule: store.ModeratorsOnly}
	}
	return nil
}

// writeMod runs a moderation write inside the batch's transaction and
// notes what it does to mutes in c.muteBatch and to post rules in
// c.ruleBatch, which commit applies to c.mutes and c.modOnly once the
// transaction has committed.
func (c *committer) writeMod(ctx context.Context, m *modReq) error {
	switch {
	case m.put != nil:
		r := m.put
		if _, err := c.putRestriction.ExecContext(ctx, m.room, string(m.kind), r.UserID, toMs(r.Until), r.By.UserID, r.By.Name, r.Reason, toMs(r.At)); err != nil {
			return err
		}
		if m.kind == store.Mute {
			c.muteBatch[muteKey{m.room, r.UserID}] = mutePending{until: fromMs(toMs(r.Until)), set: true}
		}
	case m.rule != nil:
		var err error
		if *m.rule == "" {
			_, err = c.delRule.ExecContext(ctx, m.room)
		} else {
			_, err = c.putRule.ExecContext(ctx, m.room, *m.rule)
		}
		if err == nil {
			c.ruleBatch[m.room] = *m.rule
		}
		return err
	default:
		res, err := c.delRestriction.ExecContext(ctx, m.room, string(m.kind), m.del)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		m.existed = n > 0
		if m.kind == store.Mute {
			c.muteBatch[muteKey{m.room, m.del}] = mutePending{}
		}
	}
	return nil
}

// settleMod applies the batch's mute and post rule changes to the
// committed copies when the batch committed, and forgets them either way.
func (c *committer) settleMod(committed bool) {
	if committed {
		for k, p := range c.muteBatch {
			if p.set {
				c.mutes[k] = p.until
			} else {
				delete(c.mutes, k)
			}
		}
		for room, rule := range c.ruleBatch {
			if rule == store.ModeratorsOnly {
				c.modOnly[room] = true
			} else {
				delete(c.modOnly, room)
			}
		}
	}
	clear(c.muteBatch)
	clear(c.ruleBatch)
}

// modify queues m to the committer and waits for its outcome, or for ctx
// (the write may still happen then, as with Clear).
func (s *Store) modify(ctx context.Context, m *modReq) error {
	m.reply = make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return unavailable(store.ErrClosed)
	}
	select {
	case s.queue <- request{mod: m}:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case err := <-m.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PutRestriction implements store.Moderation. The committer writes it in
// the transaction of the batch it is collected into, after the batch's
// earlier messages and before its later ones: an Append queued after a
// mute returns is refused.
func (s *Store) PutRestriction(ctx context.Context, roomID string, kind store.Kind, r store.Restriction) error {
	return s.modify(ctx, &modReq{room: roomID, kind: kind, put: &r})
}

// DeleteRestriction implements store.Moderation, ordered with Appends
// like PutRestriction.
func (s *Store) DeleteRestriction(ctx context.Context, roomID string, kind store.Kind, userID string) (bool, error) {
	m := &modReq{room: roomID, kind: kind, del: userID}
	if err := s.modify(ctx, m); err != nil {
		return false, err
	}
	return m.existed, nil
}

// SetPostRule implements store.Moderation, through the committer.
func (s *Store) SetPostRule(ctx context.Context, roomID, rule string) error {
	return s.modify(ctx, &modReq{room: roomID, rule: &rule})
}

// Restrictions implements store.Moderation, from committed data.
func (s *Store) Restrictions(ctx context.Context, roomID string, kind store.Kind, now time.Time) ([]store.Restriction, error) {
	if s.isClosed() {
		return nil, unavailable(store.ErrClosed)
	}
	rows, err := s.restrictions.QueryContext(ctx, roomID, string(kind), now.UnixMilli())
	if err != nil {
		return nil, unavailable(fmt.Errorf("read %ss of room %q: %w", kind, roomID, err))
	}
	defer rows.Close()
	var out []store.Restriction
	for rows.Next() {
		r, err := scanRestriction(rows)
		if err != nil {
			return nil, unavailable(fmt.Errorf("read %ss of room %q: %w", kind, roomID, err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("read %ss of room %q: %w", kind, roomID, err))
	}
	return out, nil
}

// Restricted implements store.Moderation, from committed data.
func (s *Store) Restricted(ctx context.Context, roomID string, kind store.Kind, userID string, now time.Time) (store.Restriction, bool, error) {
	if s.isClosed() {
		return store.Restriction{}, false, unavailable(store.ErrClosed)
	}
	r, err := scanRestriction(s.restricted.QueryRowContext(ctx, roomID, string(kind), userID, now.UnixMilli()))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Restriction{}, false, nil
	}
	if err != nil {
		return store.Restriction{}, false, unavailable(fmt.Errorf("read %s of %q in room %q: %w", kind, userID, roomID, err))
	}
	return r, true, nil
}

// PostRule implements store.Moderation, from committed data.
func (s *Store) PostRule(ctx context.Context, roomID string) (string, error) {
	if s.isClosed() {
		return "", unavailable(store.ErrClosed)
	}
	var rule string
	err := s.postRule.QueryRowContext(ctx, roomID).Scan(&rule)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", unavailable(fmt.Errorf("read post rule of room %q: %w", roomID, err))
	}
	return rule, nil
}

func scanRestriction(row interface{ Scan(...any) error }) (store.Restriction, error) {
	var r store.Restriction
	var until, at int64
	err := row.Scan(&r.UserID, &until, &r.By.UserID, &r.By.Name, &r.Reason, &at)
	r.Until, r.At = fromMs(until), fromMs(at)
	return r, err
}
