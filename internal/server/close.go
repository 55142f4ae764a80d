package server

import (
	"context"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/protocol"
)

// closeWith closes the connection with code, once, without blocking the
// caller: the close handshake can take seconds.
func (c *conn) closeWith(cl protocol.Close, why string) {
	if !c.startClose(why, cl.Code, true) {
		return
	}
	go func() {
		defer c.wg.Done()
		c.ws.Close(websocket.StatusCode(cl.Code), cl.Reason)
	}()
}

// Replaced implements room.Replaceable: the user resumed on another node
// of the cluster, and this connection ends with 1000 (SPEC §8).
func (c *conn) Replaced() { c.closeWith(protocol.CloseReplaced, "resumed on another node") }

// Disconnected implements room.Disconnectable: a moderator disconnected
// the user (SPEC §11), on this node or another.
func (c *conn) Disconnected() { c.closeWith(protocol.CloseDisconnected, "disconnected by a moderator") }

// closeSync is closeWith for a caller that bounds its own concurrency
// (Shutdown): it returns when the close handshake is over.
func (c *conn) closeSync(cl protocol.Close, why string) {
	if c.startClose(why, cl.Code, false) {
		c.ws.Close(websocket.StatusCode(cl.Code), cl.Reason)
	}
}

// startClose marks the connection closing by the server and drops what is
// queued; with async it adds the closing goroutine to wg, under mu so that
// serve cannot have waited yet. It reports false if the connection was
// already closing. It logs once mu is unlocked: the registry takes mu to
// queue a frame, under a room's lock, and no delivery should wait for a
// log line to be written.
func (c *conn) startClose(why string, code int, async bool) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing, c.byServer = true, true
	c.queue, c.queued = nil, 0
	c.stopReading()
	c.wire.Closing()
	if async {
		c.wg.Add(1)
	}
	user := c.userID() // under mu: start may be setting it
	c.mu.Unlock()
	c.srv.log.Info("closing", "user", user, "code", code, "why", why)
	return true
}

// closeDrained closes the connection with 1001 once the writer has
// written what is already queued (acks, deliveries), or when ctx ends,
// whichever comes first. No frame is queued after it starts. For
// Shutdown, which bounds its concurrency.
func (c *conn) closeDrained(ctx context.Context) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing, c.byServer = true, true
	c.stopReading()
	c.wire.Closing()
	var idle chan struct{}
	if c.writing {
		idle = make(chan struct{})
		c.idle = idle
	}
	user, queued := c.userID(), c.queued
	c.mu.Unlock()
	// Logged once mu is unlocked, as in startClose.
	c.srv.log.Info("closing", "user", user, "code", protocol.CloseShutdown.Code, "why", "shutdown", "queued", queued)
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
		}
	}
	c.ws.Close(websocket.StatusCode(protocol.CloseShutdown.Code), protocol.CloseShutdown.Reason)
}
