// A Session's loop: it pumps one connection's events to the reader, renews
// the resume token before it lapses, and on a lost connection backs off
// and reconnects until the session is closed or the loss is final.

package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// refreshLead is how long before its token's exp a Session with a
// TokenSource sends a fresh one (at most a third of the token's
// remaining life, for short-lived tokens); refreshRetry is how long it
// waits after a failed refresh before it asks again.
const (
	refreshLead  = 30 * time.Second
	refreshRetry = time.Second
)

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
		if err := s.replaced(err); err != nil {
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
			if err := s.replaced(err); err != nil {
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
		if skip, err := s.decodeEvent(&ev); err != nil {
			return err
		} else if skip {
			continue
		}
		if ev.TokenExpired && s.opts.TokenSource != nil && s.refresh(ctx, conn) {
			continue
		}
		if k := ev.Kicked; k != nil && k.RoomID == s.roomID {
			// Out of the room: rejoining would undo a kick and
			// cannot pass a ban. The reader gets the event, then
			// the session ends.
			if !s.deliver(ctx, ev) {
				return ctx.Err()
			}
			return &KickedError{Kicked: *k}
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

// decodeEvent decodes ev's payload into its field and keeps what the
// session tracks from it (the room's last seq, a new epoch). It reports
// skip for an event the reader does not get (a message already
// delivered, a late history page, a renewed token) and an error for an
// event it cannot decode, which ends the connection.
func (s *Session) decodeEvent(ev *Event) (skip bool, err error) {
	env := ev.Envelope
	switch env.Type {
	case protocol.TypeError:
		var pe protocol.Error
		if decode(env, &pe) == nil && pe.Code == protocol.CodeTokenExpired {
			ev.TokenExpired = true // pump renews the token, if it can
		}
	case protocol.TypeMsg:
		var m protocol.Message
		if err := decode(env, &m); err != nil {
			return false, err
		}
		if m.RoomID == s.roomID {
			if m.Seq <= s.lastSeq {
				return true, nil // already delivered
			}
			s.lastSeq = m.Seq
		}
		ev.Msg = &m
	case protocol.TypeJoined:
		var j protocol.Joined
		if err := decode(env, &j); err != nil {
			return false, err
		}
		if j.RoomID == s.roomID {
			ev.EpochChanged = s.rejoined(&j)
		}
		ev.Joined = &j
	case protocol.TypeEvent:
		var e protocol.Event
		if err := decode(env, &e); err != nil {
			return false, err
		}
		ev.Event = &e
	case protocol.TypeKicked:
		var k protocol.Kicked
		if err := decode(env, &k); err != nil {
			return false, err
		}
		ev.Kicked = &k // pump ends the session if it is from its room
	case protocol.TypeMuted:
		var m protocol.Muted
		if err := decode(env, &m); err != nil {
			return false, err
		}
		ev.Muted = &m
	case protocol.TypeConfigured:
		var c protocol.Configured
		if err := decode(env, &c); err != nil {
			return false, err
		}
		ev.Configured = &c
	case protocol.TypeHistory:
		// Only a late reply to a page request that timed out (the
		// connection is dropped then); its messages are asked for again.
		return true, nil
	case protocol.TypeResume:
		// A renewed token, which conn keeps (Conn.Resume) for the
		// next reconnect; a credential, not for the caller to print.
		return true, nil
	}
	return false, nil
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

// ReplacedError is why a Session with a signed identity ended when another
// connection of the same identity took it over (SPEC §10: the server keeps
// one connection per identity and closes the older one with 1000
// "resumed on another connection"). It is ErrReplaced (errors.Is). A
// Session without a token reconnects instead: its user was taken over
// with its resume token, and it carries on as a new user.
type ReplacedError struct {
	UserID string // the identity's userID, its token's sub
	Err    error  // the close, a *ConnError
}

func (e *ReplacedError) Error() string {
	return "another connection of " + e.UserID + " took over this session"
}

func (e *ReplacedError) Unwrap() error { return e.Err }

// replaced returns a *ReplacedError when err ended a connection of a
// signed identity because another connection of the same identity (a
// browser tab, another roomchat) took over, and nil otherwise. The server
// keeps one connection per identity (SPEC §10): reconnecting would take
// that one over, and it would take this one over again, for ever.
func (s *Session) replaced(err error) error {
	if !errors.Is(err, ErrReplaced) || (s.opts.Token == "" && s.opts.TokenSource == nil) {
		return nil
	}
	return &ReplacedError{UserID: s.userID, Err: err}
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
