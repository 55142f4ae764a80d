package room_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/store"
)

// The registry's tests drive it directly: connections are recorders that
// decode what is queued to them, the store is the real in-memory store
// (wrapped by heldStore where a test must hold a moment of a join open),
// and everything that depends on time runs in a testing/synctest bubble,
// where time.Sleep advances a fake clock once every goroutine is idle.

// recorder is a room.Conn that keeps every frame queued to it, decoded,
// with the (bubble) time it was queued at.
type recorder struct {
	mu     sync.Mutex
	frames []frame
}

type frame struct {
	at  time.Time
	env protocol.Envelope
}

func (r *recorder) Queue(b []byte) {
	env, err := protocol.DecodeEnvelope(b)
	if err != nil {
		panic("registry queued a frame that does not decode: " + string(b))
	}
	r.mu.Lock()
	r.frames = append(r.frames, frame{at: time.Now(), env: env})
	r.mu.Unlock()
}

// take returns the frames queued so far and forgets them.
func (r *recorder) take() []frame {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.frames
	r.frames = nil
	return f
}

// peer is one connected user: the registry's User and its connection.
type peer struct {
	t    testing.TB
	reg  *room.Registry
	user *room.User
	conn *recorder
}

func connect(t testing.TB, reg *room.Registry) *peer {
	t.Helper()
	p := &peer{t: t, reg: reg, conn: new(recorder)}
	p.user, _, _ = reg.Connect(p.conn, "")
	return p
}

// resume connects again with token and reports whether the user resumed.
func resume(t testing.TB, reg *room.Registry, token string) (*peer, bool) {
	t.Helper()
	p := &peer{t: t, reg: reg, conn: new(recorder)}
	var resumed bool
	p.user, resumed, _ = reg.Connect(p.conn, token)
	return p, resumed
}

// join joins roomID without since and returns the joined reply.
func (p *peer) join(roomID string) protocol.Joined {
	p.t.Helper()
	return p.joinSince(roomID, nil)
}

func (p *peer) joinSince(roomID string, since *int64) protocol.Joined {
	p.t.Helper()
	if err := p.reg.Join(context.Background(), p.user, p.conn, roomID, "", since, "j"); err != nil {
		p.t.Fatalf("join %s: %v", roomID, err)
	}
	return p.joined()
}

// joined decodes the last joined reply queued to p.
func (p *peer) joined() protocol.Joined {
	p.t.Helper()
	p.conn.mu.Lock()
	defer p.conn.mu.Unlock()
	for i := len(p.conn.frames) - 1; i >= 0; i-- {
		if f := p.conn.frames[i]; f.env.Type == protocol.TypeJoined {
			var j protocol.Joined
			decode(p.t, f.env, &j)
			return j
		}
	}
	p.t.Fatalf("no joined reply among %d frames", len(p.conn.frames))
	return protocol.Joined{}
}

func (p *peer) send(roomID, text string) {
	p.t.Helper()
	if err := p.reg.Send(p.user, roomID, text, ""); err != nil {
		p.t.Fatalf("send to %s: %v", roomID, err)
	}
}

// drop ends p's connection without a close frame (clean false) or with
// one (clean true).
func (p *peer) drop(clean bool) { p.reg.Disconnect(p.user, p.conn, clean) }

func decode(t testing.TB, env protocol.Envelope, v any) {
	t.Helper()
	if err := protocol.DecodePayload(env, v); err != nil {
		t.Fatalf("decode %s: %v", env.Type, err)
	}
}

// ofType returns the frames of type typ, in order.
func ofType(frames []frame, typ string) []frame {
	var out []frame
	for _, f := range frames {
		if f.env.Type == typ {
			out = append(out, f)
		}
	}
	return out
}

// seqs returns the seqs of the msg events among frames, in order.
func seqs(t testing.TB, frames []frame) []int64 {
	t.Helper()
	var out []int64
	for _, f := range ofType(frames, protocol.TypeMsg) {
		var m protocol.Message
		decode(t, f.env, &m)
		out = append(out, m.Seq)
	}
	return out
}

// presences returns the presence events among frames, in order.
func presences(t testing.TB, frames []frame) []protocol.Presence {
	t.Helper()
	var out []protocol.Presence
	for _, f := range ofType(frames, protocol.TypePresence) {
		var p protocol.Presence
		decode(t, f.env, &p)
		out = append(out, p)
	}
	return out
}

// span returns the seqs from..to.
func span(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// wantCode fails unless err is a *protocol.Error with code (and field,
// when field is not empty).
func wantCode(t testing.TB, err error, code, field string) {
	t.Helper()
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a %s error", err, code)
	}
	if pe.Code != code || field != "" && pe.Field != field {
		t.Fatalf("err = %+v, want code %s field %q", pe, code, field)
	}
}

func limits(mod func(*protocol.Limits)) protocol.Limits {
	l := protocol.DefaultLimits()
	mod(&l)
	return l
}

func newRegistry(t testing.TB, st store.Store, opts room.Options) *room.Registry {
	t.Helper()
	reg := room.New(st, opts)
	t.Cleanup(func() { reg.Close() })
	return reg
}

// heldStore is the in-memory store with two moments of a join that the
// test can hold open:
//
//   - with holdDone, a successful Append's done call waits until release:
//     the message is stored (a history read sees it) but not yet
//     delivered, as with SQLite, which commits a batch before it calls
//     back for each of its messages;
//   - with holdPage, Page reads its snapshot, then waits until the test
//     closes the channel: messages stored meanwhile are delivered while
//     the join is still reading; with failPage set too, Page then fails.
type heldStore struct {
	*store.Memory

	mu       sync.Mutex
	holdDone bool
	held     []func()
	holdPage chan struct{}
	failPage bool
	epoch    string // when set, the epoch Page reports
	pages    int    // Page calls so far
	// holdRule, when set, holds PostRule until it is closed; ruleReads
	// counts PostRule calls.
	holdRule  chan struct{}
	ruleReads int
}

func (s *heldStore) PostRule(ctx context.Context, roomID string) (string, error) {
	s.mu.Lock()
	s.ruleReads++
	gate := s.holdRule
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return s.Memory.PostRule(ctx, roomID)
}

func newHeldStore() *heldStore {
	return &heldStore{Memory: store.NewMemory(store.Retention{MaxMessages: 1000})}
}

func (s *heldStore) Append(m protocol.Message, key string, done store.DoneFunc) {
	s.Memory.Append(m, key, func(stored protocol.Message, dup bool, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.holdDone {
			s.held = append(s.held, func() { done(stored, dup, err) })
			return
		}
		done(stored, dup, err)
	})
}

// release calls the held done functions, in order, and stops holding.
func (s *heldStore) release() {
	s.mu.Lock()
	held := s.held
	s.held, s.holdDone = nil, false
	s.mu.Unlock()
	for _, f := range held {
		f()
	}
}

func (s *heldStore) Page(ctx context.Context, roomID string, q store.Query) (store.RoomInfo, []protocol.Message, error) {
	info, msgs, err := s.Memory.Page(ctx, roomID, q)
	s.mu.Lock()
	s.pages++
	gate := s.holdPage
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	fail := s.failPage
	s.mu.Unlock()
	if fail {
		return store.RoomInfo{}, nil, fmt.Errorf("%w: disk on fire", store.ErrUnavailable)
	}
	s.mu.Lock()
	if s.epoch != "" {
		info.Epoch = s.epoch
	}
	s.mu.Unlock()
	return info, slices.Clone(msgs), err
}
