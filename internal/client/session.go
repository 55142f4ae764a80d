package client

import (
	"context"
	"errors"
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
	// Key is the room's owner key (SPEC §11): every join of the session
	// presents it, so the connection is the room's owner.
	Key string
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
//
// The room's messages reach the reader in three kinds of event: the
// history of a joined (Joined.History), a page of catch-up history
// (History.Messages) and a live msg (Msg). Taken together, in the order
// Next returns them, they hold every seq once, in order; Messages returns
// an event's messages whichever kind it is.
type Event struct {
	protocol.Envelope
	// Raw is the event exactly as the server sent it.
	Raw []byte
	// Joined is the decoded payload of a joined event. Its History holds
	// only messages not delivered before (Raw is untouched). When More is
	// set, the history events that complete it follow at once.
	Joined *protocol.Joined
	// History is the decoded payload of a history event: a page of the
	// messages a joined with More left out, which the Session asked for.
	// Its Messages hold only messages not delivered before.
	History *protocol.History
	// Msg is the decoded payload of a msg event.
	Msg *protocol.Message
	// Event is the decoded payload of a custom event (type "event"),
	// relayed from another member or posted through the HTTP API (then
	// From.UserID is "").
	Event *protocol.Event
	// Kicked is the decoded payload of a kicked event (SPEC §11): a
	// moderator put this user out of the room, for a while if Banned.
	// After a kicked for its room the Session ends; Err is a
	// *KickedError.
	Kicked *protocol.Kicked
	// Muted is the decoded payload of a muted event: the user's msg,
	// event and typing are refused until Muted.Until (zero: until
	// lifted), or, with Lifted, they are allowed again.
	Muted *protocol.Muted
	// Configured is the decoded payload of a configured event: the room's
	// post rule is now Configured.Post, set at run time by Configured.By
	// (SPEC §11). Under "moderators" a member's messages are refused.
	Configured *protocol.Configured
	// Reconnected marks the joined event that follows a reconnect.
	Reconnected bool
	// EpochChanged marks a joined event whose epoch differs from the
	// previous one: the room's stored history was lost or reset on the
	// server, its seq numbers restarted, and messages may have been missed.
	EpochChanged bool
	// TokenExpired marks the server's token_expired error (SPEC §10):
	// the connection's token expired and the server closes it with 4001
	// after its grace period unless a fresh token comes in an auth frame
	// (Session.Auth). A Session with a TokenSource renews the token
	// itself and delivers this event only when that failed.
	TokenExpired bool
}

// Messages returns the chat messages ev delivers, oldest first: a joined's
// history, a history page or the one msg; nil for other events.
func (ev Event) Messages() []protocol.Message {
	switch {
	case ev.Joined != nil:
		return ev.Joined.History
	case ev.History != nil:
		return ev.History.Messages
	case ev.Msg != nil:
		return []protocol.Message{*ev.Msg}
	}
	return nil
}

// Session is a reconnecting membership of one room, for readers that must
// not miss or repeat a message (roomchat join and tail, bots). It dials,
// joins, and delivers the room's events through Next. When the connection
// drops it reconnects with exponential backoff and jitter, resumes its
// userID with the welcome's token and re-joins with since = the last seq it
// delivered, and it drops any msg whose seq it has already delivered.
//
// Catching up is paged. A joined holds at most one page of history (200
// messages, 256 KiB); when it says More, the Session asks for the rest with
// history requests, one at a time, and delivers each page as an Event with
// History set, until it has delivered every seq up to the joined's LastSeq.
// Live events that arrive meanwhile wait, in order, and follow the last
// page; a msg that a page already delivered is dropped. The next page is
// asked for only after Next has returned the previous one, so a slow reader
// slows the catch-up down instead of piling pages up in memory. A drop in
// the middle is like any other: the Session re-joins with since = the last
// seq it delivered and pages on from there. So a bot that reads Next gets a
// whole room's backlog, from SessionOptions.Since on, without paging itself:
//
//	since := int64(0) // from the room's first message
//	s, err := client.OpenSession(ctx, server, room, client.SessionOptions{Since: &since})
//	…
//	for {
//		ev, err := s.Next(ctx)
//		if err != nil {
//			return err
//		}
//		for _, m := range ev.Messages() {
//			handle(m) // every seq once, in order
//		}
//	}
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
	userID  string // the newest connection's, from its welcome
	lastSeq int64
	epoch   string
	since   *int64
	joined  bool      // a join has succeeded once
	exp     time.Time // when the connection's token expires; zero without one
	retryAt time.Time // after a failed refresh, when to try again

	mu      sync.Mutex
	conn    *Conn         // guarded by mu; nil while reconnecting
	changed chan struct{} // guarded by mu; closed and replaced when conn changes
	err     error         // guarded by mu; why the session ended
}

// OpenSession connects to serverURL and joins roomID; the first joined
// event is the first one Next returns. A failure of this first attempt is
// returned (no retry), so a wrong server or room is reported at once;
// later drops are retried until ctx ends or Close is called, except when
// retrying cannot help (SPEC §10): a 4001 close without a TokenSource
// ends the session with an error that is ErrTokenExpired; with a token,
// a close because another connection of the same identity took over ends
// it with a *ReplacedError (ErrReplaced); and a reconnect refused with
// 401 (ErrUnauthorized), forbidden or unknown_namespace ends it with that
// refusal (Err, and Next after the last event).
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

// Event sends a custom event to the other members of the room and waits
// until the server has accepted it (see Conn.Event for the errors). It
// waits for a reconnect if the connection is down, but it does not resend
// after a drop: the server does not de-duplicate events, and one that
// reached it before the drop would be relayed twice.
func (s *Session) Event(ctx context.Context, name string, data any) error {
	c, err := s.current(ctx, nil)
	if err != nil {
		return err
	}
	return c.Event(ctx, s.roomID, name, data)
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

// Auth renews the session's signed identity on the current connection
// (waiting for a reconnect if needed): see Conn.Auth. A session without a
// TokenSource calls it when Next delivers an Event with TokenExpired, or
// before its token's exp. The next reconnect still uses Options.Token.
func (s *Session) Auth(ctx context.Context, token string) (protocol.Authed, error) {
	c, err := s.current(ctx, nil)
	if err != nil {
		return protocol.Authed{}, err
	}
	return c.Auth(ctx, token)
}

// Close stops the session: it closes the connection cleanly and returns
// after the session's goroutine has exited.
func (s *Session) Close() error {
	s.cancel()
	<-s.done
	return nil
}
