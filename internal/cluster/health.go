// Health of the Redis store: the keeper that probes an unreachable Redis
// and re-reads the shared keys, the per-call deadline, readiness, and the
// wording of errors (store_unavailable, URLs with their secrets removed).

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/store"
)

// Timings of the store's keeper (watchRedis): while Redis answers, it reads
// the shared keys every keepEvery; once a call got no answer, it probes
// every probeEvery, and Appends fail at once until a probe succeeds.
const (
	keepEvery  = time.Second
	probeEvery = 200 * time.Millisecond
)

// setDown takes Redis for down: Appends and reads fail at once until the
// keeper's probe succeeds, and what is queued fails now (its flushes stay
// in place for the writer, behind the batch it may be sending).
func (s *Store) setDown(err error) {
	s.mu.Lock()
	was := s.down
	s.down = err
	s.downs++
	var failed []request
	kept := s.queue[:0]
	for _, r := range s.queue {
		if r.flush != nil {
			kept = append(kept, r)
		} else {
			failed = append(failed, r)
		}
	}
	clear(s.queue[len(kept):])
	s.queue = kept
	s.mu.Unlock()
	if was == nil {
		s.log.Warn("redis does not answer; refusing messages until it does", "err", err)
	}
	for _, r := range failed {
		r.done(r.msg, false, unavailable(err))
	}
	signal(s.probe)
}

// watchRedis is the keeper goroutine: while Redis answers it reads the shared
// keys every keepEvery (readKeys); once a call got no answer (setDown), it
// probes every probeEvery, and clears the failure once Redis answers
// again. An error that Redis answers with (a full Redis refusing to write
// the epoch, or still loading its data) is an answer: it is logged, and
// the calls that meet it fail on their own. It ends with Close.
func (s *Store) watchRedis() {
	defer close(s.keepEnded)
	t := time.NewTimer(keepEvery)
	defer t.Stop()
	var warned time.Time
	for {
		select {
		case <-s.keepStop:
			return
		case <-t.C:
		case <-s.probe:
		}
		s.mu.Lock()
		downs := s.downs
		s.mu.Unlock()
		before := s.key.Load()
		ctx, cancel := s.callContext(min(s.timeout, time.Second))
		err := s.readKeys(ctx)
		cancel()
		if after := s.key.Load(); after != before {
			s.log.Warn("redis: the token key changed (another node put its own back after Redis lost it); resume tokens signed before may not work on this node until it restarts")
		}
		_, answered := rueidis.IsRedisErr(err)
		answered = answered || err == nil
		if err != nil && answered && time.Since(warned) > time.Minute {
			s.log.Warn("redis: reading the shared keys failed", "err", err)
			warned = time.Now()
		}
		s.mu.Lock()
		down, again := s.down, s.downs != downs
		if answered && down != nil && !again {
			s.down = nil
		}
		s.mu.Unlock()
		switch {
		case answered && down != nil && !again:
			s.log.Info("redis answers again")
			t.Reset(keepEvery)
		case answered && down == nil:
			t.Reset(keepEvery)
		case !answered && down == nil && s.base.Err() == nil:
			s.setDown(err) // signals probe: the next round comes at once
			t.Reset(probeEvery)
		default:
			t.Reset(probeEvery)
		}
	}
}

// callContext is a context for a Redis call that ends after d or when
// Close gives up (abort). A context with a deadline would make rueidis
// wait on the connection's own deadline, deaf to cancelling.
func (s *Store) callContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(s.base)
	timer := time.AfterFunc(d, cancel)
	return ctx, func() {
		timer.Stop()
		cancel()
	}
}

// usable returns why the store cannot serve now: closed, or Redis taken
// for down.
func (s *Store) usable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	return s.down
}

// Ready implements store.Store: Redis answers, and the node's pub/sub is
// subscribed and caught up. While Redis is taken for down it answers at
// once.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.usable(); err != nil {
		return unavailable(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.client.Do(ctx, s.client.B().Ping().Build()).Error(); err != nil {
		return unavailable(err)
	}
	s.mu.Lock()
	sub := s.subscriber
	s.mu.Unlock()
	if sub != nil {
		if err := sub(); err != nil {
			return unavailable(err)
		}
	}
	return nil
}

func unavailable(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// RedactURL returns the Redis URL without its password (and user).
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	return redactQuery(u.String(), u)
}

// Redact removes the URL's password and user name from text (an error
// message that may quote them).
func Redact(text, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return text
	}
	text = redactQuery(text, u)
	if u.User == nil {
		return text
	}
	if p, ok := u.User.Password(); ok && p != "" {
		text = strings.ReplaceAll(text, p, "xxxxx")
	}
	if n := u.User.Username(); n != "" {
		text = strings.ReplaceAll(text, n, "xxxxx")
	}
	return text
}
