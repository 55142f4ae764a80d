package server

import (
	"errors"

	"github.com/roomchat/roomchat/internal/protocol"
)

// Queue implements room.Conn: it appends frame for the writer, starting
// one if none runs. A connection already holding more than MaxQueue bytes
// is too slow: it is closed with 1013 and frame is dropped, as is any
// frame queued once the connection is closing.
func (c *conn) Queue(frame []byte) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.queued > c.srv.cfg.MaxQueue {
		c.mu.Unlock()
		c.srv.metrics.slow.Inc()
		c.closeWith(protocol.CloseSlow, "slow consumer")
		return
	}
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	if !c.writing {
		c.writing = true
		c.wg.Add(1)
		go c.writer()
	}
	c.mu.Unlock()
}

// writeLoop drains the queue until it is empty, then exits. Each drain is
// one write to the socket: with batching one frame holding every queued
// event, without it one frame per event.
func (c *conn) writeLoop() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.closing && !c.byServer {
			c.stopWriting()
			c.mu.Unlock()
			return
		}
		q := c.queue
		// Swap in the emptied slice of the last drain: queueing a frame
		// allocates nothing once a connection has had traffic. Both
		// slices stay with the connection between wakes.
		c.queue, c.spare, c.queued = c.spare, nil, 0
		c.mu.Unlock()
		if err := c.write(q); err != nil {
			c.mu.Lock()
			c.stopWriting()
			c.mu.Unlock()
			if errors.Is(err, errTimeout) {
				c.srv.metrics.slow.Inc()
				c.closeWith(protocol.CloseSlow, "write timeout")
			} else {
				c.ws.CloseNow()
			}
			return
		}
		events := len(q)
		for _, f := range q {
			if isPing(f) {
				events--
			}
		}
		c.srv.metrics.framesOut.Add(float64(events))
		c.srv.metrics.writes.Inc()
		clear(q)
		c.mu.Lock()
		c.spare = q[:0]
		c.mu.Unlock()
	}
}

// stopWriting marks the writer gone and wakes a Shutdown waiting for it.
// Guarded by c.mu.
func (c *conn) stopWriting() {
	c.writing = false
	if c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

var errTimeout = errors.New("write timed out")

// write sends one drain of the queue in one write to the socket. The
// writer frames its events itself (wsconn's Text): with batching one
// frame holds every event between two keepalive pings, a line each;
// without it each event is a frame of its own.
func (c *conn) write(q [][]byte) error {
	c.wire.Hold()
	var err error
	if c.batch && len(q) > 1 {
		start := 0
		for i, f := range q {
			if isPing(f) {
				if err == nil && i > start {
					err = c.wire.Text(q[start:i], true)
				}
				c.wire.Ping()
				start = i + 1
			}
		}
		if err == nil && start < len(q) {
			err = c.wire.Text(q[start:], true)
		}
	} else {
		for i, f := range q {
			if isPing(f) {
				c.wire.Ping()
				continue
			}
			if err = c.wire.Text(q[i:i+1], false); err != nil {
				break
			}
		}
	}
	if rerr := c.wire.Release(c.srv.cfg.WriteTimeout); err == nil && rerr != nil {
		err = rerr
		var ne interface{ Timeout() bool }
		if errors.As(rerr, &ne) && ne.Timeout() {
			err = errTimeout
		}
	}
	return err
}

// pingMarker, queued like a frame, makes the writer send a WebSocket
// ping (wsconn's Ping) in its place: the keepalive wheel pings each
// connection through its own writer, so a ping never blocks the wheel and
// never goes into the middle of another frame.
var pingMarker = []byte{0}

func isPing(f []byte) bool { return len(f) == 1 && &f[0] == &pingMarker[0] }
