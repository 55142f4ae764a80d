package main

import (
	"context"
	"time"
)

// pace writes message i = 0, 1, 2, … of one sender, due at its slot
// start + i/rate. A ticker wakes it every 1/rate (at least 1 ms), and each
// wake writes every message due by then, so the offered rate holds even
// when a wake comes late. write gets each message's slot (Unix ns), not
// the moment it is written: a sender held up (by the scheduler, or by a
// server that stops reading or acking, which blocks the write) shows the
// delay as latency of the messages it owed instead of quietly sending
// fewer (coordinated omission). pace returns at its first wake at or after
// end (each wake before it writes all that is due, however long that
// takes; zero end: no end), when write fails, or when ctx ends; what the
// sender still owed then is not written.
func pace(ctx context.Context, start time.Time, rate float64, end time.Time, write func(slot int64) error) {
	interval := time.Duration(float64(time.Second) / rate)
	interval = max(interval, time.Millisecond)
	if !sleepUntil(ctx, start) {
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	t0, to := start.UnixNano(), end.UnixNano()
	if end.IsZero() {
		to = 1<<63 - 1
	}
	var i int64 // the next message to write
	for {
		now := time.Now().UnixNano()
		if now >= to {
			return
		}
		for ; ; i++ {
			slot := t0 + int64(float64(i)*float64(time.Second)/rate)
			if slot > now {
				break // not due yet; slot ≤ now < end below
			}
			if err := write(slot); err != nil {
				return
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// sleepUntil sleeps until t or ctx ends; it reports whether t was reached.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}
