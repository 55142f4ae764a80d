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
// bytes. A ping is queued to the connection's writer (pingMarker); the
// slot pinged PingTimeout ago is checked at the same tick, and a
// connection that has sent no byte since its ping is dropped (any byte
// will do: a pong, or a frame that came before it). No goroutine waits
// for a pong.
type wheel struct {
	tick  time.Duration
	check int // slots between a ping and its check: PingTimeout in ticks

	mu      sync.Mutex        // guards the fields below and every conn's ka* fields
	slots   [wheelSlots]*conn // heads of doubly linked lists
	cur     int               // the slot the next tick pings
	buf     []*conn           // the slot being pinged; reused
	started bool              // the ticking goroutine was started (or close ran)

	stop     chan struct{} // closed by close
	stopOnce sync.Once
	done     chan struct{} // closed when the goroutine ends
}

func newWheel(interval, timeout time.Duration) *wheel {
	tick := max(interval/wheelSlots, time.Millisecond)
	return &wheel{
		tick:  tick,
		check: min(max(int((timeout+tick-1)/tick), 1), wheelSlots-1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
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
	var dead []*conn
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		// Check the slot pinged w.check ticks ago: no byte since its ping
		// means the peer is gone.
		for c := w.slots[(w.cur+wheelSlots-w.check)%wheelSlots]; c != nil; c = c.kaNext {
			if c.kaPinged && c.peek.reads.Load() == c.kaReads {
				dead = append(dead, c)
			}
			c.kaPinged = false
		}
		w.buf = w.buf[:0]
		for c := w.slots[w.cur]; c != nil; c = c.kaNext {
			c.kaPinged, c.kaReads = true, c.peek.reads.Load()
			w.buf = append(w.buf, c)
		}
		w.cur = (w.cur + 1) % wheelSlots
		conns := w.buf
		w.mu.Unlock()
		for _, c := range dead {
			c.keepaliveTimeout()
		}
		clear(dead)
		dead = dead[:0]
		for _, c := range conns {
			c.Queue(pingMarker)
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
