// The read side of a Conn: one goroutine reads every frame, splits
// batches, and routes each event to the request waiting for its id or to
// the queue Next reads.

package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/protocol"
)

// event is one server event: its decoded envelope and its exact bytes.
type event struct {
	env protocol.Envelope
	raw []byte
}

// readLoop owns ws.Read. It ends when the connection does, records why, and
// wakes every waiter.
func (c *Conn) readLoop(ctx context.Context) {
	err := c.read(ctx)
	c.mu.Lock()
	if c.closing {
		err = ErrClosed
	}
	c.err = err
	c.mu.Unlock()
	close(c.done)
}

func (c *Conn) read(ctx context.Context) error {
	for {
		typ, frame, err := c.ws.Read(ctx)
		if err != nil {
			return &ConnError{Err: err}
		}
		if typ != websocket.MessageText {
			c.ws.Close(websocket.StatusUnsupportedData, "binary frames are not expected")
			return &ConnError{Err: errors.New("server sent a binary frame")}
		}
		for _, raw := range protocol.SplitBatch(frame) {
			env, perr := protocol.DecodeEnvelope(raw)
			if perr != nil {
				c.ws.Close(websocket.StatusInvalidFramePayloadData, "bad event")
				return &ConnError{Err: fmt.Errorf("server sent a bad event: %s", perr.Message)}
			}
			c.route(event{env, raw})
		}
	}
}

func (c *Conn) route(ev event) {
	var renewed protocol.Resume
	if ev.env.Type == protocol.TypeResume {
		decode(ev.env, &renewed) // an undecodable one is only queued
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if renewed.Resume != "" {
		c.resume = renewed.Resume
	}
	if ev.env.ID != "" {
		if w, ok := c.waiters[ev.env.ID]; ok {
			delete(c.waiters, ev.env.ID)
			w <- ev // capacity 1, one send per waiter: never blocks
			return
		}
	}
	c.queue = append(c.queue, ev)
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Next returns the next server event that is not a reply to a pending
// request, with its exact bytes as the server sent them (one line of a
// batched frame, without the newline). It blocks until an event arrives,
// ctx ends (the Conn stays usable) or the connection ends; events already
// received are returned before the connection's error.
func (c *Conn) Next(ctx context.Context) (protocol.Envelope, []byte, error) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			ev := c.queue[0]
			c.queue[0] = event{}
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return ev.env, ev.raw, nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return protocol.Envelope{}, nil, err
		}
		select {
		case <-c.notify:
		case <-c.done:
		case <-ctx.Done():
			return protocol.Envelope{}, nil, ctx.Err()
		}
	}
}

// ConnError is a connection that ended other than by Close: a network
// error, or a close frame from the server (then websocket.CloseStatus(err)
// gives its code, e.g. 1001 at server shutdown).
type ConnError struct{ Err error }

func (e *ConnError) Error() string {
	if ce, ok := errors.AsType[websocket.CloseError](e.Err); ok {
		if ce.Reason != "" {
			return fmt.Sprintf("connection closed by server (%d): %s", int(ce.Code), ce.Reason)
		}
		return fmt.Sprintf("connection closed by server (%d)", int(ce.Code))
	}
	return "connection lost: " + e.Err.Error()
}

func (e *ConnError) Unwrap() error { return e.Err }

// Is makes a 4001 close match ErrTokenExpired, and the close of a
// replaced connection (protocol.CloseReplaced, code and reason: 1000
// alone is any normal close) match ErrReplaced.
func (e *ConnError) Is(target error) bool {
	switch target {
	case ErrTokenExpired:
		return websocket.CloseStatus(e.Err) == websocket.StatusCode(protocol.CloseTokenExpired.Code)
	case ErrReplaced:
		ce, ok := errors.AsType[websocket.CloseError](e.Err)
		return ok && int(ce.Code) == protocol.CloseReplaced.Code && ce.Reason == protocol.CloseReplaced.Reason
	}
	return false
}
