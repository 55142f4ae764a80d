package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/roomchat/roomchat/internal/store"
)

// health is what Ready reports: the outcome of the store's last write, a
// batch of Appends or, when none was recent, a probe.
type health struct {
	mu    sync.Mutex
	err   error         // nil when the last write succeeded; guarded by mu
	at    time.Time     // when it ended (Options.now); guarded by mu
	probe chan struct{} // closed when the probe in flight is answered; nil if none; guarded by mu
}

// record sets the outcome of a write that ended at at; probe says that
// the write carried Ready's probe, whose waiters it then wakes. Called by
// the committer.
func (h *health) record(err error, at time.Time, probe bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err, h.at = err, at
	if probe && h.probe != nil {
		close(h.probe)
		h.probe = nil
	}
}

// Ready implements store.Store: nil when the store can serve reads and
// writes, else an error wrapping store.ErrUnavailable. It answers from the
// outcome of the store's last write while that is recent: a batch of
// Appends that succeeded less than ReadyInterval ago, or one that failed
// less than ReadyInterval/5 ago. Then it does no I/O. Otherwise it makes
// one probe, which it waits for at most until ctx ends: the committer
// commits a one-row write (behind the Appends already queued) and reads the
// database. Concurrent callers share the probe in flight, so however often
// Ready is called the store writes at most one probe per ReadyInterval (one
// per ReadyInterval/5 while failing), and none while Appends are being
// written. A /readyz that anyone may ask is no write amplifier.
func (s *Store) Ready(ctx context.Context) error {
	if s.isClosed() {
		return unavailable(store.ErrClosed)
	}
	h := &s.health
	h.mu.Lock()
	age := s.opts.now().Sub(h.at)
	if h.err == nil && age < s.opts.ReadyInterval || h.err != nil && age < s.opts.ReadyInterval/5 {
		err := h.err
		h.mu.Unlock()
		return err
	}
	if h.probe == nil {
		// Queued while holding h.mu, so that the committer cannot record
		// the probe's outcome before h.probe is there to be closed.
		if err := s.queueProbe(); err != nil {
			h.mu.Unlock()
			return err
		}
		h.probe = make(chan struct{})
	}
	answered := h.probe
	h.mu.Unlock()
	select {
	case <-answered:
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.err
	case <-ctx.Done():
		return unavailable(fmt.Errorf("write probe: %w", ctx.Err()))
	}
}

// queueProbe queues a probe request for the committer.
func (s *Store) queueProbe() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return unavailable(store.ErrClosed)
	}
	select {
	case s.queue <- request{probe: true}:
		return nil
	default:
		return unavailable(errors.New("append queue full"))
	}
}

// readCheck is the read half of a probe: one row of meta, from the pool
// that Messages and Room use.
func (s *Store) readCheck() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.BusyTimeout)
	defer cancel()
	var app string
	if err := s.readyRead.QueryRowContext(ctx).Scan(&app); err != nil {
		return unavailable(fmt.Errorf("read: %w", err))
	}
	return nil
}

// LastError returns the error of the store's last write (as Ready would
// report it), nil if it succeeded. For metrics and logs; Ready is the
// health check.
func (s *Store) LastError() error {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return s.health.err
}
