package chattest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/protocol"
)

// Timeout bounds the waits of the helpers that take no duration (Next,
// Expect, Await, Join…), a dial and a write: generous, because the tests
// run with -race on a shared machine, and only a failing test waits it out.
const Timeout = 10 * time.Second

// AckTimeout bounds AckOf: under a burst from many senders an ack waits for
// the store's group commit behind everyone else's.
const AckTimeout = 20 * time.Second

// ErrNoEvent is Read's error when no event arrived in time.
var ErrNoEvent = errors.New("no event arrived in time")

// Client is a raw WebSocket client that speaks frames. Its reader goroutine
// reads the socket into an unbounded queue of events, so that waiting with
// a timeout never touches the connection (coder/websocket closes a
// connection whose Read context ends) and a client nobody reads never
// holds the server up. The reader ends when the connection does; Close
// (registered with t.Cleanup by Dial) drops the connection and waits for
// it.
//
// One goroutine at a time should read (Read and the helpers built on it);
// any goroutine may write.
type Client struct {
	// WS is the connection, for what the helpers do not do: a binary or
	// invalid frame, a close frame with a code, a drop without one
	// (WS.CloseNow). Only the reader goroutine calls WS.Read.
	WS *websocket.Conn
	// Welcome is the server's first event, as Dial read it.
	Welcome protocol.Welcome

	done   chan struct{} // closed when readLoop has returned, after err is set
	notify chan struct{} // capacity 1, never closed: wakes Read when queue grows

	mu    sync.Mutex
	queue []Frame // guarded by mu
	err   error   // guarded by mu; why readLoop ended, set once
}

// Frame is one server event: its envelope and its exact bytes (one line of
// a batched frame, without the newline).
type Frame struct {
	protocol.Envelope
	Raw []byte
}

func (f Frame) String() string { return string(f.Raw) }

// Dial connects to the /ws endpoint of the server at base (http://HOST:PORT)
// with query ("" or "?batch=1…") and reads the welcome into c.Welcome.
func Dial(t testing.TB, base, query string) *Client {
	t.Helper()
	c := DialNoWelcome(t, base, query, nil)
	Decode(t, c.Expect(t, protocol.TypeWelcome), &c.Welcome)
	return c
}

// DialNoWelcome is Dial that sends the handshake headers h and leaves the
// welcome to be read like any other event.
func DialNoWelcome(t testing.TB, base, query string, h http.Header) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws" + query
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	return Wrap(t, ws)
}

// Wrap makes a Client of a connection the test dialed itself (from
// another local address, through a custom HTTP client), leaving the
// welcome to be read like any other event.
func Wrap(t testing.TB, ws *websocket.Conn) *Client {
	ws.SetReadLimit(-1)
	c := &Client{WS: ws, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	go c.readLoop()
	t.Cleanup(c.Close)
	return c
}

// readLoop owns WS.Read. It ends when the connection ends or the server
// sends something that is not a text frame of events.
func (c *Client) readLoop() {
	err := c.read()
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	close(c.done)
}

func (c *Client) read() error {
	for {
		typ, b, err := c.WS.Read(context.Background())
		if err != nil {
			return err
		}
		if typ != websocket.MessageText {
			return fmt.Errorf("got a %v frame", typ)
		}
		for _, p := range protocol.SplitBatch(b) {
			env, perr := protocol.DecodeEnvelope(p)
			if perr != nil {
				return fmt.Errorf("server sent an undecodable event %q: %v", p, perr)
			}
			c.mu.Lock()
			c.queue = append(c.queue, Frame{env, p})
			c.mu.Unlock()
			select {
			case c.notify <- struct{}{}:
			default:
			}
		}
	}
}

// Close drops the connection (no close frame) and returns once the reader
// has ended. It may be called more than once.
func (c *Client) Close() {
	c.WS.CloseNow()
	<-c.done
}

// Done is closed when the connection has ended; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection ended (websocket.CloseStatus gives its close
// code), or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Read returns the next event; once the queue is empty and the connection
// has ended, the reason it ended; ErrNoEvent if nothing came within d. It
// fails no test, so any goroutine may call it.
func (c *Client) Read(d time.Duration) (Frame, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			f := c.queue[0]
			c.queue[0] = Frame{}
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return f, nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return Frame{}, err
		}
		select {
		case <-c.notify:
		case <-c.done:
		case <-timer.C:
			return Frame{}, ErrNoEvent
		}
	}
}

// Write writes b as one text frame, as it is. It fails no test, so any
// goroutine may call it.
func (c *Client) Write(b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	return c.WS.Write(ctx, websocket.MessageText, b)
}

// Writef writes a text frame built with fmt.Sprintf; see Write.
func (c *Client) Writef(format string, args ...any) error {
	return c.Write(fmt.Appendf(nil, format, args...))
}

// Send writes raw as one text frame and fails t if it cannot.
func (c *Client) Send(t testing.TB, raw string) {
	t.Helper()
	if err := c.Write([]byte(raw)); err != nil {
		t.Fatalf("write %s: %v", raw, err)
	}
}

// Sendf is Send with a frame built with fmt.Sprintf.
func (c *Client) Sendf(t testing.TB, format string, args ...any) {
	t.Helper()
	c.Send(t, fmt.Sprintf(format, args...))
}

// Next returns the next event, failing t after Timeout.
func (c *Client) Next(t testing.TB) Frame {
	t.Helper()
	f, err := c.Read(Timeout)
	if err != nil {
		t.Fatalf("reading the next event: %v", err)
	}
	return f
}

// Expect reads the next event and fails t unless it has type typ.
func (c *Client) Expect(t testing.TB, typ string) Frame {
	t.Helper()
	f, err := c.Read(Timeout)
	if err != nil {
		t.Fatalf("waiting for a %q event: %v", typ, err)
	}
	if f.Type != typ {
		t.Fatalf("got event %s, want type %q", f, typ)
	}
	return f
}

// Await reads events until one of type typ arrives, skipping others; it
// fails t after Timeout or when the connection ends, listing what it
// skipped.
func (c *Client) Await(t testing.TB, typ string) Frame {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	var skipped []string
	for {
		f, err := c.Read(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for a %q event: %v; skipped %v", typ, err, skipped)
		}
		if f.Type == typ {
			return f
		}
		skipped = append(skipped, f.String())
	}
}

// Quiet fails t if an event arrives within d.
func (c *Client) Quiet(t testing.TB, d time.Duration) {
	t.Helper()
	if f, err := c.Read(d); err == nil {
		t.Fatalf("got unexpected event %s", f)
	}
}

// ExpectError reads the next event and fails t unless it is an error with
// code and a message.
func (c *Client) ExpectError(t testing.TB, code string) protocol.Error {
	t.Helper()
	f := c.Expect(t, protocol.TypeError)
	var e protocol.Error
	Decode(t, f, &e)
	if e.Code != code {
		t.Fatalf("got error %s, want code %q", f, code)
	}
	if e.Message == "" {
		t.Fatalf("error %s has no message", f)
	}
	return e
}

// CloseCode waits up to timeout for the connection to end, leaving the
// events before the end unread, and returns its close code (-1 if it ended
// without a close frame). It fails t if the connection is still up.
func (c *Client) CloseCode(t testing.TB, timeout time.Duration) websocket.StatusCode {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("connection still open %v later", timeout)
	}
	return websocket.CloseStatus(c.Err())
}

// ExpectClose fails t unless the connection ends within Timeout with close
// code code.
func (c *Client) ExpectClose(t testing.TB, code websocket.StatusCode) {
	t.Helper()
	if got := c.CloseCode(t, Timeout); got != code {
		t.Fatalf("connection ended with %v (status %d), want close code %d", c.Err(), got, code)
	}
}

// Join joins roomID and returns joined, which must be the next event.
func (c *Client) Join(t testing.TB, roomID string) protocol.Joined {
	t.Helper()
	c.Sendf(t, `{"type":"join","payload":{"roomID":%q}}`, roomID)
	var j protocol.Joined
	Decode(t, c.Expect(t, protocol.TypeJoined), &j)
	return j
}

// JoinSince joins roomID with since (none if nil) and returns joined,
// skipping the presence and msg events of rooms the client is in that
// arrive before it; any other event fails t.
func (c *Client) JoinSince(t testing.TB, roomID string, since *int64) protocol.Joined {
	t.Helper()
	if since == nil {
		c.Sendf(t, `{"type":"join","payload":{"roomID":%q}}`, roomID)
	} else {
		c.Sendf(t, `{"type":"join","payload":{"roomID":%q,"since":%d}}`, roomID, *since)
	}
	for {
		f, err := c.Read(Timeout)
		if err != nil {
			t.Fatalf("waiting for joined: %v", err)
		}
		switch f.Type {
		case protocol.TypePresence, protocol.TypeMsg:
			continue
		case protocol.TypeJoined:
			var j protocol.Joined
			Decode(t, f, &j)
			return j
		}
		t.Fatalf("got %s, want joined", f)
	}
}

// JoinAll joins roomID with since and pages with history while more is
// true (SPEC §4 catch-up), returning joined with every page's messages
// appended to History as they came (a duplicate stays, for the caller to
// find). Live msg and presence events are skipped: for rooms without live
// traffic. An empty page with more fails t.
func (c *Client) JoinAll(t testing.TB, roomID string, since int64) protocol.Joined {
	t.Helper()
	j := c.JoinSince(t, roomID, &since)
	more := j.More
	for n := 0; more; n++ {
		after := since
		if len(j.History) > 0 {
			after = j.History[len(j.History)-1].Seq
		}
		id := fmt.Sprint("page-", n)
		c.Sendf(t, `{"type":"history","id":%q,"payload":{"roomID":%q,"after":%d}}`, id, roomID, after)
		for {
			f, err := c.Read(Timeout)
			if err != nil {
				t.Fatalf("waiting for history %s: %v", id, err)
			}
			if f.Type == protocol.TypePresence || f.Type == protocol.TypeMsg {
				continue
			}
			if f.Type != protocol.TypeHistory || f.ID != id {
				t.Fatalf("got %s, want history %s", f, id)
			}
			var h protocol.History
			Decode(t, f, &h)
			if len(h.Messages) == 0 && h.More {
				t.Fatalf("history after %d: empty page with more", after)
			}
			j.History = append(j.History, h.Messages...)
			more = h.More
			break
		}
	}
	return j
}

// AckOf waits up to AckTimeout for the ack with id, skipping msg and
// presence events; any other event is an error. It fails no test, so any
// goroutine may call it.
func (c *Client) AckOf(id string) (protocol.Ack, error) {
	deadline := time.Now().Add(AckTimeout)
	for {
		f, err := c.Read(time.Until(deadline))
		if err != nil {
			return protocol.Ack{}, fmt.Errorf("waiting for the ack of %q: %w", id, err)
		}
		switch {
		case f.Type == protocol.TypeAck && f.ID == id:
			var a protocol.Ack
			if err := json.Unmarshal(f.Payload, &a); err != nil {
				return a, fmt.Errorf("ack %s: %w", f, err)
			}
			return a, nil
		case f.Type == protocol.TypeMsg, f.Type == protocol.TypePresence:
		default:
			return protocol.Ack{}, fmt.Errorf("waiting for the ack of %q, got %s", id, f)
		}
	}
}

// AwaitAck is AckOf that fails t.
func (c *Client) AwaitAck(t testing.TB, id string) protocol.Ack {
	t.Helper()
	a, err := c.AckOf(id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// SendAck sends a msg with id and text to the client's only room and
// waits for its ack.
func (c *Client) SendAck(t testing.TB, id, text string) protocol.Ack {
	t.Helper()
	c.Send(t, string(protocol.Encode(protocol.TypeMsg, id, protocol.Send{Message: text})))
	return c.AwaitAck(t, id)
}

// Fill stores n messages in roomID from a member named "filler" on a
// connection of its own, each acked before the next is sent, so that
// message i (1…n) has the text text(i) and seq first+i-1; then it leaves
// the room and closes, so that the filler is no member afterwards.
func Fill(t testing.TB, base, roomID string, n int, text func(i int) string) {
	t.Helper()
	c := Dial(t, base, "")
	defer c.Close()
	c.Sendf(t, `{"type":"join","payload":{"roomID":%q,"name":"filler"}}`, roomID)
	c.Expect(t, protocol.TypeJoined)
	for i := 1; i <= n; i++ {
		id := fmt.Sprint("fill-", i)
		c.Send(t, string(protocol.Encode(protocol.TypeMsg, id, protocol.Send{RoomID: roomID, Message: text(i)})))
		if _, err := c.AckOf(id); err != nil {
			t.Fatalf("store message %d: %v", i, err)
		}
	}
	c.Sendf(t, `{"type":"leave","id":"fill-leave","payload":{"roomID":%q}}`, roomID)
	for {
		switch f := c.Next(t); f.Type {
		case protocol.TypeMsg, protocol.TypePresence:
		case protocol.TypeLeft:
			return
		default:
			t.Fatalf("leaving %s: got %s, want left", roomID, f)
		}
	}
}

// Decode decodes f's payload into v, failing t if it cannot.
func Decode(t testing.TB, f Frame, v any) {
	t.Helper()
	if err := json.Unmarshal(f.Payload, v); err != nil {
		t.Fatalf("decoding payload of %s: %v", f, err)
	}
}

// MsgOf decodes a msg event, failing t if f is another event.
func MsgOf(t testing.TB, f Frame) protocol.Message {
	t.Helper()
	if f.Type != protocol.TypeMsg {
		t.Fatalf("got %s, want a msg event", f)
	}
	var m protocol.Message
	Decode(t, f, &m)
	return m
}
