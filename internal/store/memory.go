package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"

	"github.com/roomchat/roomchat/internal/protocol"
)

// Memory is a Store that keeps history in process memory: fast, gone at
// exit. Its epoch is drawn at NewMemory, so every restart shows clients a
// new epoch.
type Memory struct {
	ret   Retention
	epoch string
	key   []byte // TokenKey, drawn at NewMemory
	now   func() time.Time

	mu sync.Mutex // guards the fields below
	// rooms is the history itself, not a cache of it: a room's entry holds
	// its messages (at most Retention's worth) and its last seq, which must
	// outlive its messages so that seqs are never reused. It is never
	// emptied, so -db :memory: holds every room written since start; it is
	// for tests and trials, the SQLite store for anything exposed.
	rooms     map[string]*memRoom
	dedup     map[string]dedupEntry
	dedupPeak int // the size dedup grew to since it was last rebuilt
	closed    bool
	sweep     time.Time // next time dedup is swept

	restrictions map[restrictionKey]Restriction // bans and mutes (SPEC §11)
	postRules    map[string]string              // room → run-time post rule
}

type memRoom struct {
	msgs    []protocol.Message // oldest first, seqs consecutive
	first   int                // msgs[:first] are dropped by retention
	lastSeq int64
}

// kept returns the messages retention keeps. Guarded by s.mu.
func (r *memRoom) kept() []protocol.Message { return r.msgs[r.first:] }

type dedupEntry struct {
	msg protocol.Message
	at  time.Time
}

// NewMemory returns an empty in-memory store.
func NewMemory(ret Retention) *Memory {
	return &Memory{
		ret:   ret,
		epoch: gonanoid.Must(12),
		key:   randomKey(),
		now:   time.Now,
		rooms: make(map[string]*memRoom),
		dedup: make(map[string]dedupEntry),
	}
}

// Append implements Store. It calls done before returning, while holding
// the store's lock, which is what keeps done calls in seq order.
func (s *Memory) Append(m protocol.Message, key string, done DoneFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		done(m, false, fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed))
		return
	}
	now := s.now()
	below := m.BelowModerator
	m.BelowModerator = false
	if key != "" {
		if e, ok := s.dedup[key]; ok && now.Sub(e.at) < DedupWindow {
			done(s.dupOf(e), true, nil)
			return
		}
	}
	if m.Redacts <= 0 {
		if err := s.refused(m, below, now); err != nil {
			done(m, false, err)
			return
		}
	}
	r := s.rooms[m.RoomID]
	if r == nil {
		r = &memRoom{}
		s.rooms[m.RoomID] = r
	}
	limit, age := s.ret.For(m.RoomID)
	r.lastSeq++
	m.Seq = r.lastSeq
	if limit > 0 {
		r.msgs = append(r.msgs, m)
		if m.Redacts > 0 {
			r.redact(m)
		}
	}
	s.trim(r, limit, age, now)
	if key != "" {
		// The key keeps the message's seq and ID, never its text: a
		// retry reads the text from the room while it is kept (dupOf).
		kept := m
		kept.Message = ""
		s.dedup[key] = dedupEntry{msg: kept, at: now}
		s.dedupPeak = max(s.dedupPeak, len(s.dedup))
		s.sweepDedup(now)
	}
	done(m, false, nil)
}

// dupOf returns the message a de-duplication entry names: the room's
// copy while retention keeps it, else what the entry holds (no text).
// Guarded by s.mu.
func (s *Memory) dupOf(e dedupEntry) protocol.Message {
	if r := s.rooms[e.msg.RoomID]; r != nil {
		if m := r.at(e.msg.Seq); m != nil && m.ID == e.msg.ID {
			return *m
		}
	}
	return e.msg
}

// redact removes the text of the message that redaction red names, if
// the room keeps it and it is not redacted yet. Guarded by s.mu.
func (r *memRoom) redact(red protocol.Message) {
	if t := r.at(red.Redacts); t != nil && t.Seq < red.Seq && t.Redacted == nil {
		t.Message = ""
		t.Redacted = &protocol.Redaction{By: red.From, Seq: red.Seq}
	}
}

// at returns the kept message with seq seq, or nil. Guarded by s.mu.
func (r *memRoom) at(seq int64) *protocol.Message {
	msgs := r.kept()
	if len(msgs) == 0 || seq < msgs[0].Seq {
		return nil
	}
	if i := seq - msgs[0].Seq; i < int64(len(msgs)) {
		return &msgs[i]
	}
	return nil
}

// trim applies retention (at most limit messages, none older than age
// when age > 0) to r: it drops what is past the limit or too old. The
// slice is compacted only once a quarter of it is dropped messages, so
// that appending at the limit costs O(1) amortized, not a copy of the
// room's whole history. Guarded by s.mu.
func (s *Memory) trim(r *memRoom, limit int, age time.Duration, now time.Time) {
	if limit <= 0 {
		r.msgs, r.first = nil, 0
		return
	}
	r.first = max(r.first, len(r.msgs)-limit)
	if age > 0 {
		cut := now.Add(-age)
		for r.first < len(r.msgs) && r.msgs[r.first].TS.Before(cut) {
			r.first++
		}
	}
	if r.first > 0 && r.first >= len(r.msgs)/4 {
		r.msgs = append([]protocol.Message(nil), r.msgs[r.first:]...)
		r.first = 0
	}
}

// sweepDedup forgets expired keys, at most once a minute, and rebuilds the
// map once it is under a quarter of its peak: deleting from a Go map frees
// no buckets, so a burst of keyed messages would otherwise keep its memory.
// Guarded by s.mu.
func (s *Memory) sweepDedup(now time.Time) {
	if now.Before(s.sweep) {
		return
	}
	s.sweep = now.Add(time.Minute)
	for k, e := range s.dedup {
		if now.Sub(e.at) >= DedupWindow {
			delete(s.dedup, k)
		}
	}
	if len(s.dedup) < s.dedupPeak/4 {
		s.dedup, s.dedupPeak = maps.Collect(maps.All(s.dedup)), len(s.dedup)
	}
}

// Messages implements Store.
func (s *Memory) Messages(_ context.Context, roomID string, q Query) ([]protocol.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	}
	return s.messages(roomID, q), nil
}

// Page implements Store: one lock holds for the info and the messages.
func (s *Memory) Page(_ context.Context, roomID string, q Query) (RoomInfo, []protocol.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return RoomInfo{}, nil, fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	}
	return s.room(roomID), s.messages(roomID, q), nil
}

// Clear implements Store.
func (s *Memory) Clear(_ context.Context, roomID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	}
	if r := s.rooms[roomID]; r != nil {
		r.msgs, r.first = nil, 0
	}
	return nil
}

// TokenKey implements Store.
func (s *Memory) TokenKey() []byte { return s.key }

// Flush implements Store: Append is synchronous, so there is nothing to
// wait for.
func (s *Memory) Flush(context.Context) error { return nil }

// messages selects q's messages of roomID. Guarded by s.mu.
func (s *Memory) messages(roomID string, q Query) []protocol.Message {
	r := s.rooms[roomID]
	if r == nil {
		return nil
	}
	limit, age := s.ret.For(roomID)
	s.trim(r, limit, age, s.now())
	msgs := r.kept()
	lo := sort.Search(len(msgs), func(i int) bool { return msgs[i].Seq > q.After })
	hi := len(msgs)
	if q.Before > 0 {
		hi = sort.Search(len(msgs), func(i int) bool { return msgs[i].Seq >= q.Before })
	}
	if lo >= hi {
		return nil
	}
	if q.Limit > 0 && hi-lo > q.Limit {
		if q.Newest {
			lo = hi - q.Limit
		} else {
			hi = lo + q.Limit
		}
	}
	if q.MaxBytes > 0 {
		n := 0
		if q.Newest {
			for i := hi - 1; i > lo; i-- {
				if n += len(msgs[i].Message); q.Full(n) {
					lo = i
					break
				}
			}
		} else {
			for i := lo; i < hi-1; i++ {
				if n += len(msgs[i].Message); q.Full(n) {
					hi = i + 1
					break
				}
			}
		}
	}
	return append([]protocol.Message(nil), msgs[lo:hi]...)
}

// Room implements Store.
func (s *Memory) Room(_ context.Context, roomID string) (RoomInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return RoomInfo{}, fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	}
	return s.room(roomID), nil
}

// room describes roomID. Guarded by s.mu.
func (s *Memory) room(roomID string) RoomInfo {
	r := s.rooms[roomID]
	if r == nil {
		return RoomInfo{Epoch: s.epoch}
	}
	limit, age := s.ret.For(roomID)
	s.trim(r, limit, age, s.now())
	ri := RoomInfo{LastSeq: r.lastSeq, Epoch: s.epoch}
	if limit == 0 {
		return ri // keeps nothing: nothing is truncated either
	}
	if msgs := r.kept(); len(msgs) > 0 {
		ri.FirstSeq = msgs[0].Seq
	} else {
		ri.FirstSeq = r.lastSeq + 1
	}
	return ri
}

// randomKey returns 32 random bytes for TokenKey.
func randomKey() []byte {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return b
}

// Ready implements Store.
func (s *Memory) Ready(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	}
	return nil
}

// Close implements Store.
func (s *Memory) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
