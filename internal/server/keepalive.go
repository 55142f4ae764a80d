package server

import (
	"sync"
	"time"
)

// wheelSlots is how many slots the keepalive wheel has: connections are
// spread over them, and one slot's connections are pinged per tick, so a
// tick is PingInterval/wheelSlots (1 s by default).
const wheelSlots = 25

// wheel pings every connection once per PingInterval from one goroutine,
// instead of a timer per connection: a connection holds two list pointers
// and a slot number for it, where a runtime timer costs a few hundred
// bytes. Each ping runs on a short-lived goroutine (conn.keepalive), so an
// idle connection holds none.
type wheel struct {
	tick time.Duration

	mu      sync.Mutex        // guards the fields below and every conn's ka* fields
	slots   [wheelSlots]*conn // heads of doubly linked lists
	cur     int               // the slot the next tick pings
	buf     []*conn           // the slot being pinged; reused
	started bool              // the ticking goroutine was started (or close ran)

	stop     chan struct{} // closed by close
	stopOnce sync.Once
	done     chan struct{} // closed when the goroutine ends
}

func newWheel(interval time.Duration) *wheel {
	return &wheel{
		tick: max(interval/wheelSlots, time.Millisecond),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
}

// add puts c in the slot pinged one full turn from now, starting the
// ticking goroutine on first use.
func (w *wheel) add(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started {
		w.started = true
		go w.loop()
	}
	slot := (w.cur + wheelSlots - 1) % wheelSlots
	c.kaSlot, c.kaPrev, c.kaNext = slot, nil, w.slots[slot]
	if c.kaNext != nil {
		c.kaNext.kaPrev = c
	}
	w.slots[slot] = c
	c.kaIn = true
}

// remove takes c out of the wheel; it may be called more than once.
func (w *wheel) remove(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !c.kaIn {
		return
	}
	if c.kaPrev != nil {
		c.kaPrev.kaNext = c.kaNext
	} else {
		w.slots[c.kaSlot] = c.kaNext
	}
	if c.kaNext != nil {
		c.kaNext.kaPrev = c.kaPrev
	}
	c.kaPrev, c.kaNext, c.kaIn = nil, nil, false
}

func (w *wheel) loop() {
	defer close(w.done)
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		w.buf = w.buf[:0]
		for c := w.slots[w.cur]; c != nil; c = c.kaNext {
			w.buf = append(w.buf, c)
		}
		w.cur = (w.cur + 1) % wheelSlots
		conns := w.buf
		w.mu.Unlock()
		for _, c := range conns {
			c.startKeepalive()
		}
		clear(conns)
	}
}

// close stops the ticking goroutine and waits for it. It may be called
// more than once.
func (w *wheel) close() {
	w.mu.Lock()
	started := w.started
	w.started = true // no start after close
	w.mu.Unlock()
	w.stopOnce.Do(func() { close(w.stop) })
	if started {
		<-w.done
	}
}
