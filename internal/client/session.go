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

// refreshLead is how long before its token's exp a Session with a
// TokenSource sends a fresh one (at most a third of the token's
// remaining life, for short-lived tokens); refreshRetry is how long it
// waits after a failed refresh before it asks again.
const (
	refreshLead  = 30 * time.Second
	refreshRetry = time.Second
)

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
// ends the session with an error that is ErrTokenExpired, and a reconnect
// refused with 401 (ErrUnauthorized), forbidden or unknown_namespace ends
// it with that refusal (Err, and Next after the last event).
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
	s.resume = c.Resume()
	s.exp, s.retryAt = unixTime(c.Welcome().Exp), time.Time{}
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
	env, raw, err := c.Request(ctx, protocol.TypeJoin, protocol.Join{RoomID: s.roomID, Name: s.name, Since: since, Key: s.opts.Key})
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
		env, raw, err = c.Request(ctx, protocol.TypeJoin, protocol.Join{RoomID: s.roomID, Name: s.name, Key: s.opts.Key})
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
	if since != nil {
		// The reader has everything up to since (capped at the room's
		// last seq: a since from the future must not hide new messages),
		// so a catch-up starts there even if the history is empty.
		s.lastSeq = max(s.lastSeq, min(*since, j.LastSeq))
	}
	s.keepNew(&j.History)
	if since == nil && len(j.History) == 0 {
		// Without since, the server's lastSeq is the room's own, and an
		// empty history means nothing is stored (or History is 0).
		s.lastSeq = max(s.lastSeq, j.LastSeq)
	}
	return []Event{ev}, nil
}

// keepNew drops the messages already delivered from msgs and advances
// lastSeq past the rest.
func (s *Session) keepNew(msgs *[]protocol.Message) {
	*msgs = slices.DeleteFunc(*msgs, func(m protocol.Message) bool { return m.Seq <= s.lastSeq })
	for _, m := range *msgs {
		s.lastSeq = max(s.lastSeq, m.Seq)
	}
}

// rejoined takes in a joined the server sent without being asked (for a
// room whose stored history was reset, it comes with the new epoch). It
// reports whether the epoch changed, in which case the seq numbers
// restarted and nothing of the new epoch has been delivered yet.
func (s *Session) rejoined(j *protocol.Joined) bool {
	changed := s.epoch != "" && j.Epoch != "" && j.Epoch != s.epoch
	if changed {
		s.lastSeq = 0
	}
	if j.Epoch != "" {
		s.epoch = j.Epoch
	}
	s.keepNew(&j.History)
	return changed
}

// catchUp delivers the messages a joined with more left out: it asks for
// the page after the last seq delivered, delivers it, and asks for the
// next one, until a page reaches upTo (the joined's lastSeq) or the server
// says there is no more. Each request is bounded by DialTimeout; a timeout
// or a lost connection is returned, and the reconnect that follows re-joins
// with since = the last seq delivered. Every frame counts against the
// server's per-connection rate limit, so a reader fast enough to page past
// it gets rate_limited: the same page is asked for again after
// rateLimitedWait. A server that refuses to page (an older one answers
// unknown_type) gets its error delivered, and the session goes on with
// live events.
func (s *Session) catchUp(ctx context.Context, c *Conn, upTo int64) error {
	after := s.lastSeq
	limited := 0 // rate_limited answers in a row
	for after < upTo {
		rctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
		env, raw, err := c.Request(rctx, protocol.TypeHistory, protocol.HistoryRequest{RoomID: s.roomID, After: &after})
		cancel()
		if pe, ok := errors.AsType[*protocol.Error](err); ok && pe.Code == protocol.CodeRateLimited {
			limited++
			t := time.NewTimer(rateLimitedWait(c.Welcome().Limits.Rate, limited))
			select {
			case <-t.C:
				continue
			case <-c.Done():
				t.Stop()
				return c.Err()
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		limited = 0
		if err != nil {
			if pe, ok := errors.AsType[*protocol.Error](err); ok && !transient(pe.Code) {
				if !s.deliver(ctx, Event{Envelope: env, Raw: raw}) {
					return ctx.Err()
				}
				return nil
			}
			return err
		}
		var h protocol.History
		if err := expect(env, protocol.TypeHistory, &h); err != nil {
			return err
		}
		if len(h.Messages) == 0 {
			return nil
		}
		last := h.Messages[len(h.Messages)-1].Seq
		s.keepNew(&h.Messages)
		if len(h.Messages) > 0 && !s.deliver(ctx, Event{Envelope: env, Raw: raw, History: &h}) {
			return ctx.Err()
		}
		if !h.More || last <= after {
			return nil
		}
		after = last
	}
	return nil
}

// rateLimitedWait is how long to wait before asking again after the n-th
// rate_limited answer in a row, on a connection allowed rate frames per
// second: the time one frame's allowance takes to come back, doubled per
// repeated refusal, between 50 ms and 2 s. Each refused frame also counts
// towards the server's closing the connection for abuse, which needs
// refused frames faster than rate for a while, so waiting at least 1/rate
// keeps clear of it.
func rateLimitedWait(rate float64, n int) time.Duration {
	d := 50 * time.Millisecond
	if rate > 0 {
		d = max(d, time.Duration(float64(time.Second)/rate))
	}
	for i := 1; i < n && d < 2*time.Second; i++ {
		d *= 2
	}
	return min(d, 2*time.Second)
}

// transient reports whether an error code may go away by itself, so a
// request refused with it is worth retrying on a new connection.
func transient(code string) bool {
	switch code {
	case protocol.CodeRateLimited, protocol.CodeStoreUnavailable, protocol.CodeShuttingDown, protocol.CodeInternal:
		return true
	}
	return false
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
		s.resume = conn.Resume() // a resume event may have renewed it
		if ctx.Err() != nil {
			conn.Close()
			return ErrClosed
		}
		conn.CloseNow()
		if _, ok := errors.AsType[*KickedError](err); ok {
			return err
		}
		if errors.Is(err, ErrTokenExpired) && s.opts.TokenSource == nil {
			// The same token would be refused: only the caller can
			// get a new one (SPEC §10).
			return err
		}
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
			if final(err) {
				return err
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
		if err := s.deliverJoined(ctx, conn, ev); err != nil {
			return err
		}
	}
	asked := false // learnEpoch was tried on this connection
	for {
		env, raw, err := s.next(ctx, conn)
		if errors.Is(err, errRefresh) {
			s.refresh(ctx, conn)
			continue
		}
		if err != nil {
			return err
		}
		ev := Event{Envelope: env, Raw: raw}
		switch env.Type {
		case protocol.TypeError:
			var pe protocol.Error
			if decode(env, &pe) == nil && pe.Code == protocol.CodeTokenExpired {
				if s.opts.TokenSource != nil && s.refresh(ctx, conn) {
					continue
				}
				ev.TokenExpired = true
			}
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
			if j.RoomID == s.roomID {
				ev.EpochChanged = s.rejoined(&j)
			}
			ev.Joined = &j
		case protocol.TypeEvent:
			var e protocol.Event
			if err := decode(env, &e); err != nil {
				return err
			}
			ev.Event = &e
		case protocol.TypeKicked:
			var k protocol.Kicked
			if err := decode(env, &k); err != nil {
				return err
			}
			ev.Kicked = &k
			if k.RoomID == s.roomID {
				// Out of the room: rejoining would undo a kick and
				// cannot pass a ban. The reader gets the event, then
				// the session ends.
				if !s.deliver(ctx, ev) {
					return ctx.Err()
				}
				return &KickedError{Kicked: k}
			}
		case protocol.TypeMuted:
			var m protocol.Muted
			if err := decode(env, &m); err != nil {
				return err
			}
			ev.Muted = &m
		case protocol.TypeHistory:
			// Only a late reply to a page request that timed out (the
			// connection is dropped then); its messages are asked for again.
			continue
		case protocol.TypeResume:
			// A renewed token, which conn keeps (Conn.Resume) for the
			// next reconnect; a credential, not for the caller to print.
			continue
		}
		if ev.Msg != nil && s.epoch == "" && !asked {
			// Before delivering, so that a caller who has seen the
			// message knows the session can tell its epoch.
			asked = true
			s.learnEpoch(ctx, conn)
		}
		if ev.Joined != nil {
			if err := s.deliverJoined(ctx, conn, ev); err != nil {
				return err
			}
			continue
		}
		if !s.deliver(ctx, ev) {
			return ctx.Err()
		}
	}
}

// KickedError is why a Session ended when a moderator put its user out of
// the room (SPEC §11): a kick, or a ban (Kicked.Banned, until
// Kicked.Until or, when zero, until lifted).
type KickedError struct {
	Kicked protocol.Kicked
}

func (e *KickedError) Error() string {
	k := e.Kicked
	s := "kicked out of " + k.RoomID
	if k.Banned {
		s = "banned from " + k.RoomID
		if k.Until.IsZero() {
			s += " until lifted"
		} else {
			s += " until " + k.Until.UTC().Format(time.RFC3339)
		}
	}
	if k.By.Name != "" {
		s += " by " + k.By.Name
	}
	if k.Reason != "" {
		s += ": " + k.Reason
	}
	return s
}

// errRefresh is next's signal that the token is due for renewal.
var errRefresh = errors.New("client: token due for renewal")

// next is conn.Next until the time to renew the token, when the session
// has a TokenSource and the connection a token: then errRefresh.
func (s *Session) next(ctx context.Context, conn *Conn) (protocol.Envelope, []byte, error) {
	if s.opts.TokenSource == nil || s.exp.IsZero() {
		return conn.Next(ctx)
	}
	at := s.retryAt
	if at.IsZero() {
		at = s.exp.Add(-min(refreshLead, time.Until(s.exp)/3))
	}
	nctx, cancel := context.WithDeadline(ctx, at)
	defer cancel()
	env, raw, err := conn.Next(nctx)
	if err != nil && ctx.Err() == nil && nctx.Err() != nil {
		return env, raw, errRefresh
	}
	return env, raw, err
}

// refresh asks the TokenSource for a token and sends it in an auth frame,
// each bounded by DialTimeout. It reports whether the server took it; if
// not, it asks again refreshRetry later (the server's token_expired and
// its 4001 close stay the backstop, and a reconnect asks for a token too).
func (s *Session) refresh(ctx context.Context, conn *Conn) bool {
	ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	tok, err := s.opts.TokenSource(ctx)
	if err == nil {
		var a protocol.Authed
		if a, err = conn.Auth(ctx, tok); err == nil {
			s.exp, s.retryAt = unixTime(a.Exp), time.Time{}
			return true
		}
	}
	s.retryAt = time.Now().Add(refreshRetry)
	return false
}

// unixTime is a token's exp (Unix seconds) as a time; 0 is the zero time.
func unixTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}

// final reports whether a failed reconnect cannot succeed by retrying: the
// server refused the token (401), or refused the join for a reason that
// does not go away by itself (the room's policy, an unknown namespace, a
// ban: retrying would only knock on the door until it ends).
func final(err error) bool {
	if errors.Is(err, ErrUnauthorized) {
		return true
	}
	if pe, ok := errors.AsType[*protocol.Error](err); ok {
		switch pe.Code {
		case protocol.CodeForbidden, protocol.CodeUnknownNamespace, protocol.CodeUnauthorized, protocol.CodeBanned:
			return true
		}
	}
	return false
}

// deliverJoined delivers a joined event and, when it says more, the pages
// that complete it, before anything that arrived after it.
func (s *Session) deliverJoined(ctx context.Context, conn *Conn, ev Event) error {
	if !s.deliver(ctx, ev) {
		return ctx.Err()
	}
	if j := ev.Joined; j != nil && j.More && j.RoomID == s.roomID {
		return s.catchUp(ctx, conn, j.LastSeq)
	}
	return nil
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
