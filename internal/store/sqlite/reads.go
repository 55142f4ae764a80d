// Reads of the SQLite store: pages of a room's history and its info on
// the read connections, with redacted texts hidden (SPEC §11).

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// readSQL selects a room's messages with After < seq < Before, honouring
// retention at read time: nothing at or below last_seq - MaxMessages,
// nothing older than the MaxAge cut-off, whether or not the background trim
// has deleted it yet. The room's row and its messages are read in one
// statement, so from one snapshot.
func readSQL(order string) string {
	return `SELECT m.seq, m.id, m.user_id, m.name, m.body, m.ts, m.redacts, m.redacted_seq, m.redacted_by, m.redacted_name
FROM rooms r CROSS JOIN messages m
WHERE r.room_id = ?1 AND m.room = r.id
  AND m.seq > max(?2, r.last_seq - ?3) AND m.seq < ?4 AND m.ts >= ?5
ORDER BY m.seq ` + order + ` LIMIT ?6`
}

// roomInfoSQL reads a room's last seq, epoch and oldest retained seq.
const roomInfoSQL = `SELECT r.last_seq, r.epoch,
  (SELECT min(m.seq) FROM messages m
   WHERE m.room = r.id AND m.seq > r.last_seq - ?2 AND m.ts >= ?3)
FROM rooms r WHERE r.room_id = ?1`

// redaction is what the redacted_* columns of a message hold.
type redaction struct {
	seq      sql.NullInt64
	by, name sql.NullString
}

// get returns the message's Redacted: nil while it is not redacted.
func (r redaction) get() *protocol.Redaction {
	if !r.seq.Valid {
		return nil
	}
	return &protocol.Redaction{By: protocol.User{UserID: r.by.String, Name: r.name.String}, Seq: r.seq.Int64}
}

// Messages implements store.Store. It reads from its own connection pool
// and does not wait for the committer; it sees committed messages only.
func (s *Store) Messages(ctx context.Context, roomID string, q store.Query) ([]protocol.Message, error) {
	if s.isClosed() {
		return nil, unavailable(store.ErrClosed)
	}
	return s.messages(ctx, nil, roomID, q)
}

// Room implements store.Store, from committed data.
func (s *Store) Room(ctx context.Context, roomID string) (store.RoomInfo, error) {
	if s.isClosed() {
		return store.RoomInfo{}, unavailable(store.ErrClosed)
	}
	return s.room(ctx, nil, roomID)
}

// Page implements store.Store: both reads run in one read transaction,
// which in WAL mode sees one snapshot of the file.
func (s *Store) Page(ctx context.Context, roomID string, q store.Query) (store.RoomInfo, []protocol.Message, error) {
	if s.isClosed() {
		return store.RoomInfo{}, nil, unavailable(store.ErrClosed)
	}
	tx, err := s.rdb.BeginTx(ctx, nil)
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(fmt.Errorf("read room %q: %w", roomID, err))
	}
	defer tx.Rollback() // read-only: nothing to commit
	info, err := s.room(ctx, tx, roomID)
	if err != nil {
		return store.RoomInfo{}, nil, err
	}
	msgs, err := s.messages(ctx, tx, roomID, q)
	if err != nil {
		return store.RoomInfo{}, nil, err
	}
	return info, msgs, nil
}

// stmt returns st, bound to tx when tx is not nil.
func stmt(ctx context.Context, tx *sql.Tx, st *sql.Stmt) *sql.Stmt {
	if tx == nil {
		return st
	}
	return tx.StmtContext(ctx, st)
}

func (s *Store) messages(ctx context.Context, tx *sql.Tx, roomID string, q store.Query) ([]protocol.Message, error) {
	before := q.Before
	if before <= 0 {
		before = math.MaxInt64
	}
	limit := int64(q.Limit)
	if limit <= 0 {
		limit = -1
	}
	keep, cutoff := s.retention(roomID)
	if keep == 0 {
		return nil, nil // the room keeps no message
	}
	desc := q.Newest && limit > 0
	st := s.readAsc
	if desc {
		st = s.readDesc
	}
	rows, err := stmt(ctx, tx, st).QueryContext(ctx, roomID, q.After, keep, before, cutoff, limit)
	if err != nil {
		return nil, unavailable(fmt.Errorf("read room %q: %w", roomID, err))
	}
	defer rows.Close()
	var out []protocol.Message
	size := 0
	for rows.Next() {
		m := protocol.Message{RoomID: roomID}
		var ts int64
		var red redaction
		if err := rows.Scan(&m.Seq, &m.ID, &m.From.UserID, &m.From.Name, &m.Message, &ts, &m.Redacts, &red.seq, &red.by, &red.name); err != nil {
			return nil, unavailable(fmt.Errorf("read room %q: %w", roomID, err))
		}
		m.TS = time.UnixMilli(ts).UTC()
		m.Redacted = red.get()
		out = append(out, m)
		if size += len(m.Message); q.Full(size) {
			break // closing rows stops SQLite stepping further
		}
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("read room %q: %w", roomID, err))
	}
	if desc {
		slices.Reverse(out)
	}
	return out, nil
}

func (s *Store) room(ctx context.Context, tx *sql.Tx, roomID string) (store.RoomInfo, error) {
	var ri store.RoomInfo
	var first sql.NullInt64
	keep, cutoff := s.retention(roomID)
	err := stmt(ctx, tx, s.roomInfo).QueryRowContext(ctx, roomID, keep, cutoff).Scan(&ri.LastSeq, &ri.Epoch, &first)
	if errors.Is(err, sql.ErrNoRows) {
		// No message yet: the first one will start in the store's epoch.
		return store.RoomInfo{Epoch: s.epoch}, nil
	}
	if err != nil {
		return store.RoomInfo{}, unavailable(fmt.Errorf("read room %q: %w", roomID, err))
	}
	if ri.LastSeq == 0 {
		// A room row without messages (created by a batch whose only
		// message for it was a duplicate) has no history yet.
		return store.RoomInfo{Epoch: ri.Epoch}, nil
	}
	switch {
	case keep == 0:
		// The room keeps nothing, so nothing is truncated.
	case first.Valid:
		ri.FirstSeq = first.Int64
	default:
		ri.FirstSeq = ri.LastSeq + 1
	}
	return ri, nil
}
