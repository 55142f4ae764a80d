package store

import (
	"context"
	"fmt"
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
	now   func() time.Time

	mu     sync.Mutex // guards rooms, dedup and closed
	rooms  map[string]*memRoom
	dedup  map[string]dedupEntry
	closed bool
	sweep  time.Time // next time dedup is swept
}

type memRoom struct {
	msgs    []protocol.Message // oldest first, seqs consecutive
	lastSeq int64
}

type dedupEntry struct {
	msg protocol.Message
	at  time.Time
}

// NewMemory returns an empty in-memory store.
func NewMemory(ret Retention) *Memory {
	return &Memory{
		ret:   ret,
		epoch: gonanoid.Must(12),
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
	if key != "" {
		if e, ok := s.dedup[key]; ok && now.Sub(e.at) < DedupWindow {
			done(e.msg, true, nil)
			return
		}
	}
	r := s.rooms[m.RoomID]
	if r == nil {
		r = &memRoom{}
		s.rooms[m.RoomID] = r
	}
	r.lastSeq++
	m.Seq = r.lastSeq
	r.msgs = append(r.msgs, m)
	s.trim(r, now)
	if key != "" {
		s.dedup[key] = dedupEntry{msg: m, at: now}
		s.sweepDedup(now)
	}
	done(m, false, nil)
}

// trim applies retention to r. Guarded by s.mu.
func (s *Memory) trim(r *memRoom, now time.Time) {
	drop := max(len(r.msgs)-s.ret.Limit(), 0)
	if s.ret.MaxAge > 0 {
		cut := now.Add(-s.ret.MaxAge)
		for drop < len(r.msgs) && r.msgs[drop].TS.Before(cut) {
			drop++
		}
	}
	if drop > 0 {
		// Copy so that the dropped prefix can be collected.
		r.msgs = append([]protocol.Message(nil), r.msgs[drop:]...)
	}
}

// sweepDedup forgets expired keys, at most once a minute. Guarded by s.mu.
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
}

// Messages implements Store.
func (s *Memory) Messages(_ context.Context, roomID string, q Query) ([]protocol.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	}
	r := s.rooms[roomID]
	if r == nil {
		return nil, nil
	}
	if s.ret.MaxAge > 0 {
		s.trim(r, s.now())
	}
	lo := sort.Search(len(r.msgs), func(i int) bool { return r.msgs[i].Seq > q.After })
	hi := len(r.msgs)
	if q.Before > 0 {
		hi = sort.Search(len(r.msgs), func(i int) bool { return r.msgs[i].Seq >= q.Before })
	}
	if lo >= hi {
		return nil, nil
	}
	if q.Limit > 0 && hi-lo > q.Limit {
		if q.Newest {
			lo = hi - q.Limit
		} else {
			hi = lo + q.Limit
		}
	}
	return append([]protocol.Message(nil), r.msgs[lo:hi]...), nil
}

// Room implements Store.
func (s *Memory) Room(_ context.Context, roomID string) (RoomInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return RoomInfo{}, fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	}
	r := s.rooms[roomID]
	if r == nil {
		return RoomInfo{}, nil
	}
	if s.ret.MaxAge > 0 {
		s.trim(r, s.now())
	}
	ri := RoomInfo{LastSeq: r.lastSeq, Epoch: s.epoch}
	if len(r.msgs) > 0 {
		ri.FirstSeq = r.msgs[0].Seq
	} else {
		ri.FirstSeq = r.lastSeq + 1
	}
	return ri, nil
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
