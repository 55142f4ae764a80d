// How a Session (re)connects and (re)joins: dial with the resume token,
// join with since, learn the room's epoch, and page through a backlog
// with history requests until the joiner has caught up.

package client

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

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
	s.resume, s.userID = c.Resume(), c.Welcome().UserID
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
