package server

import (
	"sync"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// The keepalive wheel has PingInterval/wheelTick slots (250 by default),
// at least minWheelSlots and at most maxWheelSlots. Connections are dealt
// in turn to the slots half a turn to a whole turn ahead (add), and one
// slot's connections are pinged per tick. Each ping is a write to the socket, so the pings of
// a wave of connections made within a second or two must not all fall in
// one tick: with 25 slots of 1 s, the pings of 10,000 connections made at
// once came in two or three bursts of thousands of writes every 25 s, each
// holding up every delivery behind it for tens of milliseconds (seen in
// the execution trace of a fixed-rate run: the wheel's goroutine ran for
// 17 ms at a time). Dealt over 125 of 250 slots of 100 ms, they are 80
// pings a tick.
const (
	wheelTick     = 100 * time.Millisecond
	minWheelSlots = 25
	maxWheelSlots = 1000
)

// wheel pings every connection once per PingInterval from one goroutine,
// instead of a timer per connection: a connection holds two list pointers
// and a slot number for it, where a runtime timer costs a few hundred
// bytes. A ping is queued to the connection's writer (pingMarker); the
// slot pinged PingTimeout ago is checked at the same tick, and a
// connection that has sent no byte since its ping is dropped (any byte
// will do: a pong, or a frame that came before it). No goroutine waits
// for a pong. When it pings a connection whose resume token is renew old
// (half ResumeMaxAge), it also has the token renewed (conn.renewToken):
// one comparison per ping, no timer for that either.
type wheel struct {
	tick  time.Duration
	check int   // slots between a ping and its check: PingTimeout in ticks
	renew int64 // how old a token is renewed (ns); 0: never

	mu              sync.Mutex // guards the fields below and every conn's ka* fields
	slots           []*conn    // heads of doubly linked lists
	cur             int        // the slot the next tick pings
	deal            int        // the slot the next connection goes to
	buf             []*conn    // the slot being pinged; reused
	startedOrClosed bool       // the ticking goroutine was started, or close ran: add starts none

	stop     chan struct{} // closed by close
	stopOnce sync.Once
	done     chan struct{} // closed when the goroutine ends
}

func newWheel(interval, timeout, renew time.Duration) *wheel {
	n := int(min(max(interval/wheelTick, minWheelSlots), maxWheelSlots))
	tick := max(interval/time.Duration(n), time.Millisecond)
	return &wheel{
		tick:  tick,
		renew: int64(renew),
		check: min(max(int((timeout+tick-1)/tick), 1), n-1),
		slots: make([]*conn, n),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
}

// add deals c, in turn, to one of the slots that the wheel reaches between
// half a turn and a whole turn from now, starting the ticking goroutine on
// first use. Its first ping comes between PingInterval/2 and PingInterval
// after it connected: a client is never pinged (and dropped for not
// answering) right after its handshake, and a wave of connections made at
// once is spread over half the slots.
func (w *wheel) add(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.startedOrClosed {
		w.startedOrClosed = true
		go w.loop()
	}
	n := len(w.slots)
	half := max(n/2, 1)
	slot := (w.cur + n - half + w.deal%half) % n
	w.deal = (w.deal + 1) % half
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
	var dead, renew []*conn
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		var now int64
		if w.renew > 0 {
			now = time.Now().UnixNano()
		}
		w.mu.Lock()
		// Check the slot pinged w.check ticks ago: no byte since its ping
		// means the peer is gone, unless a frame's handler still holds the
		// socket (the server is the one not reading).
		n := len(w.slots)
		for c := w.slots[(w.cur+n-w.check)%n]; c != nil; c = c.kaNext {
			if c.kaPinged && c.wire.Reads() == c.kaReads && !c.handling.Load() {
				dead = append(dead, c)
			}
			c.kaPinged = false
		}
		w.buf = w.buf[:0]
		for c := w.slots[w.cur]; c != nil; c = c.kaNext {
			c.kaPinged, c.kaReads = true, c.wire.Reads()
			w.buf = append(w.buf, c)
			if w.renew > 0 && now-c.kaIssued >= w.renew {
				c.kaIssued = now
				renew = append(renew, c)
			}
		}
		w.cur = (w.cur + 1) % n
		conns := w.buf
		w.mu.Unlock()
		for _, c := range dead {
			c.keepaliveTimeout()
		}
		clear(dead)
		dead = dead[:0]
		for _, c := range renew {
			c.renewToken()
		}
		clear(renew)
		renew = renew[:0]
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
	started := w.startedOrClosed
	w.startedOrClosed = true // no start after close
	w.mu.Unlock()
	w.stopOnce.Do(func() {
		close(w.stop)
		if !started {
			close(w.done) // no goroutine will
		}
	})
	<-w.done
}

// renewToken gives the connection's user a new resume token and sends it
// in a resume event (SPEC §4 "Identity across reconnects"): the keepalive
// wheel calls it for a connection whose token is half ResumeMaxAge old, so
// that the client holds a token that resumes when the connection drops,
// however long it was open. Nothing is sent if the user has moved to
// another connection.
func (c *conn) renewToken() {
	if tok := c.srv.reg.Reissue(c.user, c); tok != "" {
		c.Queue(protocol.Encode(protocol.TypeResume, "", protocol.Resume{Resume: tok}))
	}
}

// keepaliveTimeout drops a connection whose peer sent nothing within
// PingTimeout of a ping, unless it is closing anyway.
func (c *conn) keepaliveTimeout() {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if !closing {
		c.srv.log.Info("keepalive timeout", "user", c.user.ID())
		c.ws.CloseNow()
	}
}
