// Reads of the Redis store: a room's info and pages of its history
// (lua/page.lua), and a joiner's position in the stream (lua/position.lua).

package cluster

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

func decodeMessage(seq, body string) (protocol.Message, error) {
	var m protocol.Message
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return m, fmt.Errorf("stored message: %w", err)
	}
	n, err := strconv.ParseInt(seq, 10, 64)
	if err != nil {
		return m, fmt.Errorf("stored seq %q: %w", seq, err)
	}
	m.Seq = n
	return m, nil
}

// Page implements store.Store: one script reads the room's meta and the
// range from one snapshot (Redis runs a script atomically). It writes
// nothing: a room nobody used reads as empty, with the store's epoch.
func (s *Store) Page(ctx context.Context, roomID string, q store.Query) (store.RoomInfo, []protocol.Message, error) {
	return s.page(ctx, roomID, q, true)
}

// Messages implements store.Store.
func (s *Store) Messages(ctx context.Context, roomID string, q store.Query) ([]protocol.Message, error) {
	_, msgs, err := s.page(ctx, roomID, q, true)
	return msgs, err
}

// Room implements store.Store.
func (s *Store) Room(ctx context.Context, roomID string) (store.RoomInfo, error) {
	info, _, err := s.page(ctx, roomID, store.Query{}, false)
	return info, err
}

// maxSeq is past every seq a room will reach (2^53: a million messages a
// second for 285 years) and what Lua's numbers, doubles, hold exactly, so
// that a script never writes one as 1e+17, which no stream command takes:
// a query's bounds are cut to it, and a since or after past it reads
// nothing, as with SQLite.
const maxSeq = 1 << 53

func (s *Store) page(ctx context.Context, roomID string, q store.Query, withMsgs bool) (store.RoomInfo, []protocol.Message, error) {
	if err := s.usable(); err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	lo := min(max(q.After, 0), maxSeq) + 1
	hi := "+"
	if q.Before > 0 && q.Before <= maxSeq {
		hi = strconv.FormatInt(q.Before-1, 10)
	}
	newest, read := "0", "0"
	if q.Newest {
		newest = "1"
	}
	if withMsgs {
		read = "1"
	}
	limit, age := s.ret.For(roomID)
	ageDay, ageTime := "", ""
	if age > 0 {
		ageDay, ageTime = cutoffArgs(time.Now().Add(-age))
	}
	arr, err := pageScript.Exec(ctx, s.client,
		[]string{s.streamKey(roomID), s.metaKey(roomID), s.tombKey(roomID)},
		[]string{s.storeEpoch(), strconv.FormatInt(lo, 10), hi, strconv.Itoa(max(q.Limit, 0)), newest, read, strconv.Itoa(limit), ageDay, ageTime},
	).ToArray()
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	if len(arr) != 5 {
		return store.RoomInfo{}, nil, unavailable(fmt.Errorf("page: %d values", len(arr)))
	}
	var info store.RoomInfo
	info.Epoch, _ = arr[0].ToString()
	info.LastSeq, _ = arr[1].AsInt64()
	info.FirstSeq, _ = arr[2].AsInt64()
	if limit == 0 {
		// The room keeps nothing, so nothing is truncated.
		return store.RoomInfo{Epoch: info.Epoch, LastSeq: info.LastSeq}, nil, nil
	}
	entries, err := arr[3].AsXRange()
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	msgs, err := s.decodeEntries(entries, q)
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	if info.LastSeq > 0 {
		lastID, _ := arr[4].ToString()
		s.mu.Lock()
		served := s.served
		s.mu.Unlock()
		if served != nil {
			served(roomID, info.Epoch, info.LastSeq, lastID)
		}
	}
	return info, msgs, nil
}

// decodeEntries turns stream entries, in the query's order (newest first
// for q.Newest), into messages oldest first, stopping at q's byte budget.
func (s *Store) decodeEntries(entries []rueidis.XRangeEntry, q store.Query) ([]protocol.Message, error) {
	msgs := make([]protocol.Message, 0, len(entries))
	n := 0
	for _, e := range entries {
		seq, _, _ := strings.Cut(e.ID, "-")
		m, err := decodeMessage(seq, e.FieldValues["m"])
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
		n += len(m.Message)
		if q.Full(n) {
			break
		}
	}
	if q.Newest {
		slices.Reverse(msgs)
	}
	return msgs, nil
}

// position is where a room stands (position.lua): its epoch ("" when it
// has no keys), last seq, the message ID at seq at (0: the last one), and
// the first seq its stream holds (0: none). With join, a room without
// keys gets them, with a new epoch.
type position struct {
	epoch string
	last  int64
	id    string
	head  int64
}

func (s *Store) positionExec(room string, join bool, at int64) rueidis.LuaExec {
	j := "0"
	if join {
		j = "1"
	}
	return rueidis.LuaExec{
		Keys: []string{s.streamKey(room), s.metaKey(room), s.tombKey(room), s.muteKey(room), s.banKey(room), s.ruleKey(room)},
		Args: []string{j, newEpoch(), strconv.FormatInt(at, 10), strconv.FormatInt(s.idleTTL.Milliseconds(), 10)},
	}
}

func parsePosition(r rueidis.RedisResult) (position, error) {
	arr, err := r.ToArray()
	if err != nil {
		return position{}, err
	}
	if len(arr) != 4 {
		return position{}, fmt.Errorf("position: %d values", len(arr))
	}
	var p position
	p.epoch, _ = arr[0].ToString() // nil: the room has no keys
	p.last, _ = arr[1].AsInt64()
	p.id, _ = arr[2].ToString()
	p.head, _ = arr[3].AsInt64()
	return p, nil
}

// join is a member's first join of room on this node (Broker.Subscribe):
// the room's keys are created if it has none, which fixes its epoch, and
// their lifetime starts again. It returns the room's position.
func (s *Store) join(ctx context.Context, room string) (position, error) {
	if err := s.usable(); err != nil {
		return position{}, err
	}
	ex := s.positionExec(room, true, 0)
	return parsePosition(positionScript.Exec(ctx, s.client, ex.Keys, ex.Args))
}
