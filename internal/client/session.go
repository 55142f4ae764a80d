package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// Defaults of SessionOptions.
const (
	// DefaultMinBackoff is the first reconnect delay: long enough not to
	// hammer a server that is restarting, short enough to be unnoticed.
	DefaultMinBackoff = 250 * time.Millisecond
	// DefaultMaxBackoff caps the delay; 15 s is the server's presence grace
	// period, so a client that comes back within it is never announced as gone.
	DefaultMaxBackoff = 15 * time.Second
	// DefaultDialTimeout bounds one connection attempt including the join.
	DefaultDialTimeout = 10 * time.Second
)

// SessionOptions configure OpenSession. Zero values are the documented defaults.
type SessionOptions struct {
	// Options are used for every connection; Resume is managed by the
	// session after the first one.
	Options
	// Name is the display name; "" lets the server choose a guest name,
	// which the session then keeps across reconnects.
	Name string
	// Since, when not nil, is the seq after which the first join replays
	// history; after that the session tracks it itself.
	Since *int64
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles
	// per failed attempt with jitter (DefaultMinBackoff, DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds each connection attempt and its join (DefaultDialTimeout).
	DialTimeout time.Duration
	// OnState, if set, is called from the session's goroutine when the
	// connection drops (Err set, RetryIn the delay before the next attempt)
	// and when it is back (Connected). It must not block for long.
	OnState func(State)
}

// State is a change of a Session's connection.
type State struct {
	// Connected is true when a reconnect succeeded (the joined event follows).
	Connected bool
	// Err is why the connection dropped or the last attempt failed.
	Err error
	// Attempt counts the failed attempts since the last connection (1, 2, …).
	Attempt int
	// RetryIn is the delay before the next attempt.
	RetryIn time.Duration
}

// Event is one server event delivered by a Session.
type Event struct {
	protocol.Envelope
	// Raw is the event exactly as the server sent it.
	Raw []byte
	// Joined is the decoded payload of a joined event. Its History holds
	// only messages not delivered before (Raw is untouched).
	Joined *protocol.Joined
	// Msg is the decoded payload of a msg event.
	Msg *protocol.Message
	// Reconnected marks the joined event that follows a reconnect.
	Reconnected bool
	// EpochChanged marks a joined event whose epoch differs from the
	// previous one: the room's stored history was lost or reset on the
	// server, its seq numbers restarted, and messages may have been missed.
	EpochChanged bool
}

// Session is a reconnecting membership of one room, for readers that must
// not miss or repeat a message (roomchat join and tail, bots). It dials,
// joins, and delivers the room's events through Next. When the connection
// drops it reconnects with exponential backoff and jitter, resumes its
// userID with the welcome's token and re-joins with since = the last seq it
// delivered, and it drops any msg whose seq it has already delivered.
//
// One goroutine, owned by the Session, does this; it stops when the
// context given to OpenSession ends or Close is called.
type Session struct {
	roomID string
	opts   SessionOptions

	cancel context.CancelFunc
	events chan Event    // unbuffered; closed by run when it returns
	done   chan struct{} // closed after run has returned and err is set

	// Owned by run.
	name    string
	resume  string
	lastSeq int64
	epoch   string
	since   *int64
	joined  bool // a join has succeeded once

	mu      sync.Mutex
	conn    *Conn         // guarded by mu; nil while reconnecting
	changed chan struct{} // guarded by mu; closed and replaced when conn changes
	err     error         // guarded by mu; why the session ended
}

// OpenSession connects to serverURL and joins roomID; the first joined
// event is the first one Next returns. A failure of this first attempt is
// returned (no retry), so a wrong server or room is reported at once;
// later drops are retried until ctx ends or Close is called.
func OpenSession(ctx context.Context, serverURL, roomID string, opts SessionOptions) (*Session, error) {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	s := &Session{
		roomID:  roomID,
		opts:    opts,
		events:  make(chan Event),
		done:    make(chan struct{}),
		name:    opts.Name,
		resume:  opts.Resume,
		since:   opts.Since,
		changed: make(chan struct{}),
	}
	ctx, s.cancel = context.WithCancel(ctx)
	conn, first, err := s.connect(ctx, serverURL)
	if err != nil {
		s.cancel()
		return nil, err
	}
	go s.run(ctx, serverURL, conn, first)
	return s, nil
}

// RoomID returns the session's room.
func (s *Session) RoomID() string { return s.roomID }

// connect dials and joins once, bounded by DialTimeout, and returns the
// joined event to deliver.
func (s *Session) connect(ctx context.Context, serverURL string) (*Conn, []Event, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	o := s.opts.Options
	o.Resume = s.resume
	c, err := Dial(ctx, serverURL, o)
	if err != nil {
		return nil, nil, err
	}
	s.resume = c.Welcome().Resume
	evs, err := s.join(ctx, c)
	if err != nil {
		c.CloseNow()
		return nil, nil, err
	}
	return c, evs, nil
}

// join sends join with the right since and turns the reply into events.
//
// If the room's history was lost or reset on the server since the last
// join, it joins again without since (a since from the old epoch means
// nothing in the new one) and marks the event EpochChanged. That is known
// when the epoch differs from the one last seen, or when messages were
// delivered but the room now has no history at all (an empty room has the
// epoch ""). A room that was empty at the first join gets its epoch asked
// for when its first message arrives (see pump).
func (s *Session) join(ctx context.Context, c *Conn) ([]Event, error) {
	since := s.since
	env, raw, err := c.Request(ctx, protocol.TypeJoin, protocol.Join{RoomID: s.roomID, Name: s.name, Since: since})
	if err != nil {
		return nil, err
	}
	var j protocol.Joined
	if err := expect(env, protocol.TypeJoined, &j); err != nil {
		return nil, err
	}
	ev := Event{Envelope: env, Raw: raw, Joined: &j}
	if s.joined && (s.epoch != "" && j.Epoch != s.epoch || s.epoch == "" && j.Epoch == "" && s.lastSeq > 0) {
		since = nil
		env, raw, err = c.Request(ctx, protocol.TypeJoin, protocol.Join{RoomID: s.roomID, Name: s.name})
		if err != nil {
			return nil, err
		}
		j = protocol.Joined{}
		if err := expect(env, protocol.TypeJoined, &j); err != nil {
			return nil, err
		}
		ev = Event{Envelope: env, Raw: raw, Joined: &j, EpochChanged: true}
		s.lastSeq = 0
	}
	s.joined = true
	s.epoch = j.Epoch
	s.name = j.You.Name
	j.History = slices.DeleteFunc(j.History, func(m protocol.Message) bool { return m.Seq <= s.lastSeq })
	for _, m := range j.History {
		s.lastSeq = max(s.lastSeq, m.Seq)
	}
	if since == nil && len(j.History) == 0 {
		// Without since, the server's lastSeq is the room's own, and an
		// empty history means nothing is stored (or History is 0).
		s.lastSeq = max(s.lastSeq, j.LastSeq)
	}
	return []Event{ev}, nil
}

// learnEpoch joins the room again (silently: the server answers a member's
// join with joined and no presence) only to read the epoch, which a room
// that was empty at join did not have yet. The reply's history is dropped:
// as a member, the session gets every message live anyway.
func (s *Session) learnEpoch(ctx context.Context, c *Conn) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	since := s.lastSeq
	j, err := c.Join(ctx, s.roomID, s.name, &since)
	if err == nil {
		s.epoch = j.Epoch
	}
}

func (s *Session) run(ctx context.Context, serverURL string, conn *Conn, pending []Event) {
	err := s.loop(ctx, serverURL, conn, pending)
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	close(s.events)
	close(s.done)
}

func (s *Session) loop(ctx context.Context, serverURL string, conn *Conn, pending []Event) error {
	for {
		s.setConn(conn)
		err := s.pump(ctx, conn, pending)
		s.setConn(nil)
		if ctx.Err() != nil {
			conn.Close()
			return ErrClosed
		}
		conn.CloseNow()
		pending = nil
		for attempt := 1; ; attempt++ {
			d := Backoff(attempt, s.opts.MinBackoff, s.opts.MaxBackoff)
			if s.opts.OnState != nil {
				s.opts.OnState(State{Err: err, Attempt: attempt, RetryIn: d})
			}
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ErrClosed
			case <-t.C:
			}
			since := s.lastSeq
			s.since = &since
			conn, pending, err = s.connect(ctx, serverURL)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ErrClosed
			}
		}
		for i := range pending {
			pending[i].Reconnected = true
		}
		if s.opts.OnState != nil {
			s.opts.OnState(State{Connected: true})
		}
	}
}

// pump delivers pending, then conn's events, until the connection ends
// (its error) or ctx does.
func (s *Session) pump(ctx context.Context, conn *Conn, pending []Event) error {
	for _, ev := range pending {
		if !s.deliver(ctx, ev) {
			return ctx.Err()
		}
	}
	asked := false // learnEpoch was tried on this connection
	for {
		env, raw, err := conn.Next(ctx)
		if err != nil {
			return err
		}
		ev := Event{Envelope: env, Raw: raw}
		switch env.Type {
		case protocol.TypeMsg:
			var m protocol.Message
			if err := decode(env, &m); err != nil {
				return err
			}
			if m.RoomID == s.roomID {
				if m.Seq <= s.lastSeq {
					continue // already delivered
				}
				s.lastSeq = m.Seq
			}
			ev.Msg = &m
		case protocol.TypeJoined:
			var j protocol.Joined
			if err := decode(env, &j); err != nil {
				return err
			}
			ev.Joined = &j
		}
		if ev.Msg != nil && s.epoch == "" && !asked {
			// Before delivering, so that a caller who has seen the
			// message knows the session can tell its epoch.
			asked = true
			s.learnEpoch(ctx, conn)
		}
		if !s.deliver(ctx, ev) {
			return ctx.Err()
		}
	}
}

func (s *Session) deliver(ctx context.Context, ev Event) bool {
	select {
	case s.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Session) setConn(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = c
	close(s.changed)
	s.changed = make(chan struct{})
}

// current returns the live connection other than not, waiting for a
// reconnect if there is none.
func (s *Session) current(ctx context.Context, not *Conn) (*Conn, error) {
	for {
		s.mu.Lock()
		c, changed := s.conn, s.changed
		s.mu.Unlock()
		if c != nil && c != not {
			return c, nil
		}
		select {
		case <-changed:
		case <-s.done:
			return nil, s.Err()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Next returns the next event of the room, in order, without repeating a
// msg. It blocks until one arrives or ctx ends; after the session has ended
// it returns the reason (ErrClosed after Close or when the session's
// context ended).
func (s *Session) Next(ctx context.Context) (Event, error) {
	select {
	case ev, ok := <-s.events:
		if !ok {
			return Event{}, s.Err()
		}
		return ev, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Err returns why the session ended, or nil while it runs.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// SendMessage sends text to the room and waits for its ack. If the
// connection drops before the ack, it waits for the reconnect and sends
// again with the same id, which the server answers with the original ack
// instead of storing the message twice. Server errors (*protocol.Error) are
// returned at once.
func (s *Session) SendMessage(ctx context.Context, text string) (protocol.Ack, error) {
	id := NewID()
	var last *Conn
	for {
		c, err := s.current(ctx, last)
		if err != nil {
			return protocol.Ack{}, err
		}
		a, _, err := c.SendMessageID(ctx, id, s.roomID, text)
		if err == nil || !isDrop(err) || ctx.Err() != nil {
			return a, err
		}
		last = c
	}
}

// isDrop reports whether err is a lost or closed connection, after which a
// request may be retried on the session's next one.
func isDrop(err error) bool {
	_, ok := errors.AsType[*ConnError](err)
	return ok || errors.Is(err, ErrClosed)
}

// Typing tells the other members that this user is typing; it is dropped
// while reconnecting.
func (s *Session) Typing(ctx context.Context) error {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Typing(ctx, s.roomID)
}

// Leave leaves the room on the current connection (waiting for a
// reconnect if needed) and waits for left. Close should follow.
func (s *Session) Leave(ctx context.Context) error {
	c, err := s.current(ctx, nil)
	if err != nil {
		return err
	}
	return c.Leave(ctx, s.roomID)
}

// Close stops the session: it closes the connection cleanly and returns
// after the session's goroutine has exited.
func (s *Session) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// Backoff returns the delay before reconnect attempt n (1, 2, …): lo
// doubled per attempt up to hi, with "equal jitter" (a random point in the
// upper half), so clients dropped together by a restart do not return in
// lockstep and no delay is ever near zero.
func Backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	if d > hi {
		d = hi
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
