package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// fleet is a scenario's set of joined connections, each read by its own
// goroutine from the moment it has joined (see connectAll): fanout's
// members and idle's connections.
type fleet struct {
	conns   []*conn
	readers sync.WaitGroup
	closing atomic.Bool // set before the fleet closes its connections: a reader that ends then is no drop
}

// openFleet opens n connections, up to par handshakes at once, spot(i)
// naming connection i's room and node. Each connection's reader hands
// every frame to onFrame (nil: discard it); when reading or onFrame fails
// before the fleet closes, the reader calls onDrop with the error and
// ends. On an error, openFleet has closed what it opened and waited for
// the readers.
func openFleet(ctx context.Context, d *dialer, t *target, n, par int, spot func(i int) (room string, node int),
	onFrame func(c *conn, frame []byte) error, onDrop func(err error)) (*fleet, error) {
	fl := new(fleet)
	conns, err := connectAll(ctx, d, t, n, par, spot, func(c *conn) {
		fl.readers.Go(func() { fl.read(c, onFrame, onDrop) })
	})
	if err != nil {
		fl.closing.Store(true)
		fl.readers.Wait() // connectAll closed what it opened
		return nil, err
	}
	fl.conns = conns
	return fl, nil
}

// read is c's only reader; it ends when the connection does.
func (fl *fleet) read(c *conn, onFrame func(c *conn, frame []byte) error, onDrop func(err error)) {
	ctx := context.Background() // no per-read timer; close ends the read
	for {
		f, err := c.readFrame(ctx)
		if err == nil && onFrame != nil {
			err = onFrame(c, f)
		}
		if err != nil {
			if !fl.closing.Load() {
				onDrop(err)
			}
			return
		}
	}
}

// close closes every connection with a close frame (so a roomchat server
// announces the leave at once instead of after its grace period), drops
// what is still open after limit, and waits for the readers.
func (fl *fleet) close(limit time.Duration) {
	fl.closing.Store(true)
	closeAllClean(fl.conns, 64, limit)
	fl.readers.Wait()
	fl.conns = nil
}

// closeAllClean closes conns with status 1000, up to par at a time, and
// drops whatever is still open after limit.
func closeAllClean(conns []*conn, par int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for _, c := range conns {
		if c == nil {
			continue
		}
		if time.Now().After(deadline) {
			c.ws.CloseNow()
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = c.ws.Close(websocket.StatusNormalClosure, "bench done")
		})
	}
	wg.Wait()
}
