package server

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logEvery is how often a throttled line is logged at most: while the
// store is down every message fails, and under a flood of upgrades every
// refusal would be a line; one line per 10 s, with the count of those
// left out, tells the same story without filling the disk (which may be
// the one that is full).
const logEvery = 10 * time.Second

// throttledLines are the lines that can come once per request or message
// when something is wrong, and so are throttled: a failed store append
// (internal/room, one per message), a failed store read (one per join,
// history or HTTP request), a refused WebSocket upgrade and a connection
// refused at accept (one per attempt; their "why" tells the kinds apart).
var throttledLines = []string{"store append", "store", "refused websocket", "refused connection"}

// Throttled returns l with the lines that can come once per message or
// request throttled, as the server throttles its own (Config.Logger):
// give it to a registry built for the server, whose failed store appends
// and reads are such lines. Throttled of a throttled logger returns it.
func Throttled(l *slog.Logger) *slog.Logger {
	if _, ok := l.Handler().(*throttle); ok {
		return l
	}
	return slog.New(newThrottle(l.Handler(), logEvery, throttledLines...))
}

// throttle is an slog.Handler that passes at most one record per
// interval for each line it throttles, and drops the others, counting
// them: the next record of that line that passes carries suppressed=N,
// the number dropped since the last one logged (the way the kernel's
// printk_ratelimit reports "N callbacks suppressed"). A line is a message
// and the value of its "why" attribute, if any, so that different reasons
// do not hide each other. Other records pass untouched.
type throttle struct {
	next  slog.Handler
	every time.Duration
	lines map[string]bool
	state *throttleState // shared by the handlers WithAttrs and WithGroup derive
}

type throttleState struct {
	mu    sync.Mutex
	lines map[string]*lineState // guarded by mu; one per line and why seen
}

type lineState struct {
	last       time.Time // when the last record of the line passed
	suppressed int       // records dropped since
}

// newThrottle returns h with the lines named by messages throttled to one
// record per every.
func newThrottle(h slog.Handler, every time.Duration, messages ...string) *throttle {
	t := &throttle{next: h, every: every, lines: map[string]bool{}, state: &throttleState{lines: map[string]*lineState{}}}
	for _, m := range messages {
		t.lines[m] = true
	}
	return t
}

func (t *throttle) Enabled(ctx context.Context, l slog.Level) bool { return t.next.Enabled(ctx, l) }

func (t *throttle) Handle(ctx context.Context, r slog.Record) error {
	if !t.lines[r.Message] {
		return t.next.Handle(ctx, r)
	}
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "why" {
			key += "\x00" + a.Value.String()
			return false
		}
		return true
	})
	now := time.Now()
	t.state.mu.Lock()
	st := t.state.lines[key]
	if st == nil {
		st = &lineState{}
		t.state.lines[key] = st
	} else if now.Sub(st.last) < t.every {
		st.suppressed++
		t.state.mu.Unlock()
		return nil
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	t.state.mu.Unlock()
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", n))
	}
	return t.next.Handle(ctx, r)
}

func (t *throttle) WithAttrs(as []slog.Attr) slog.Handler {
	c := *t
	c.next = t.next.WithAttrs(as)
	return &c
}

func (t *throttle) WithGroup(name string) slog.Handler {
	c := *t
	c.next = t.next.WithGroup(name)
	return &c
}
