// Frames a Conn sends: Send writes one, Request waits for the reply that
// carries its id, and one helper a frame type (SPEC §4) on top of them.

package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/protocol"
)

// Send writes one frame {"type", "id"?, "payload"?}. payload is one of
// protocol's payload structs or nil. It does not wait for a reply. If ctx
// ends while the frame is being written, the connection is closed (that is
// how coder/websocket abandons a partial frame).
func (c *Conn) Send(ctx context.Context, typ, id string, payload any) error {
	b, err := json.Marshal(protocol.Frame{Type: typ, ID: id, Payload: payload})
	if err != nil {
		return fmt.Errorf("encode %s: %w", typ, err)
	}
	if err := c.Err(); err != nil {
		return err
	}
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		if cerr := c.Err(); cerr != nil {
			return cerr
		}
		return &ConnError{Err: err}
	}
	return nil
}

// Request sends a frame with a fresh id and waits for the server's direct
// reply carrying that id. An error reply is returned as a *protocol.Error
// together with its envelope and bytes. It returns ctx's error if ctx ends
// first (a late reply then goes to Next), and the connection's error if the
// connection ends first.
func (c *Conn) Request(ctx context.Context, typ string, payload any) (protocol.Envelope, []byte, error) {
	return c.request(ctx, NewID(), typ, payload)
}

func (c *Conn) request(ctx context.Context, id, typ string, payload any) (protocol.Envelope, []byte, error) {
	// The server answers a longer id with an error that cannot carry it,
	// so the reply would never be matched: refuse it here.
	if perr := c.welcome.Limits.WithDefaults().CheckID(id); perr != nil {
		return protocol.Envelope{}, nil, perr
	}
	w := c.await(id)
	defer c.forget(id)
	if err := c.Send(ctx, typ, id, payload); err != nil {
		return protocol.Envelope{}, nil, err
	}
	select {
	case ev := <-w:
		return reply(ev)
	case <-c.done:
		return protocol.Envelope{}, nil, c.Err()
	case <-ctx.Done():
		return protocol.Envelope{}, nil, ctx.Err()
	}
}

// await registers a waiter for the reply carrying id; forget removes it.
// The channel has capacity 1 and receives at most one event.
func (c *Conn) await(id string) chan event {
	w := make(chan event, 1)
	c.mu.Lock()
	c.waiters[id] = w
	c.mu.Unlock()
	return w
}

func (c *Conn) forget(id string) {
	c.mu.Lock()
	delete(c.waiters, id)
	c.mu.Unlock()
}

// reply returns a reply event, turning an error reply into a *protocol.Error.
func reply(ev event) (protocol.Envelope, []byte, error) {
	if ev.env.Type == protocol.TypeError {
		var pe protocol.Error
		if err := decode(ev.env, &pe); err != nil {
			return ev.env, ev.raw, err
		}
		return ev.env, ev.raw, &pe
	}
	return ev.env, ev.raw, nil
}

// expect checks that a reply has the wanted type and decodes its payload.
func expect(env protocol.Envelope, want string, v any) error {
	if env.Type != want {
		return fmt.Errorf("server answered %s with %q", want, env.Type)
	}
	if v == nil {
		return nil
	}
	return decode(env, v)
}

func decode(env protocol.Envelope, v any) error {
	if perr := protocol.DecodePayload(env, v); perr != nil {
		return fmt.Errorf("decode %s: %s", env.Type, perr.Message)
	}
	return nil
}

// Join joins roomID (created implicitly by the server if new) and returns
// the joined reply. name "" lets the server pick a guest name; since, when
// not nil, asks for every stored message with seq > *since.
func (c *Conn) Join(ctx context.Context, roomID, name string, since *int64) (protocol.Joined, error) {
	j, _, err := c.JoinRaw(ctx, roomID, name, since)
	return j, err
}

// JoinRaw is Join that also returns the joined event's exact bytes.
func (c *Conn) JoinRaw(ctx context.Context, roomID, name string, since *int64) (protocol.Joined, []byte, error) {
	var j protocol.Joined
	env, raw, err := c.Request(ctx, protocol.TypeJoin, protocol.Join{RoomID: roomID, Name: name, Since: since})
	if err != nil {
		return j, raw, err
	}
	return j, raw, expect(env, protocol.TypeJoined, &j)
}

// SendMessage sends text to roomID ("" for the only room the connection is
// in) with a fresh id and waits for its ack, i.e. until the message is
// stored. The msg event for it arrives through Next like any other.
func (c *Conn) SendMessage(ctx context.Context, roomID, text string) (protocol.Ack, error) {
	a, _, err := c.SendMessageID(ctx, NewID(), roomID, text)
	return a, err
}

// SendMessageID is SendMessage with a caller-chosen id, and it also returns
// the reply's bytes. Re-sending the same id after a lost reply (from the
// same user, e.g. after resuming) gets the original ack and stores nothing.
// An id longer than the server's Limits.MaxID (64) is a bad_envelope
// *protocol.Error, returned without sending anything.
func (c *Conn) SendMessageID(ctx context.Context, id, roomID, text string) (protocol.Ack, []byte, error) {
	var a protocol.Ack
	env, raw, err := c.request(ctx, id, protocol.TypeMsg, protocol.Send{Message: text, RoomID: roomID})
	if err != nil {
		return a, raw, err
	}
	return a, raw, expect(env, protocol.TypeAck, &a)
}

// History asks for a page of roomID's stored messages with seq > after,
// oldest first, and waits for it. The connection must be in the room
// (not_in_room otherwise); roomID "" means the only room it is in. limit 0
// asks for the server's maximum (Limits.MaxPage, 200); the server also cuts
// a page at Limits.MaxPageBytes (256 KiB) of messages, but a page holds at
// least one message when there is one. More is true when the page stopped
// before the room's last message: ask again with after = the last seq of
// this page. A bad after or limit is a bad_payload *protocol.Error.
//
// Send one history request at a time on a connection and wait for its
// reply: a Session does this after a joined with more (see Session).
func (c *Conn) History(ctx context.Context, roomID string, after int64, limit int) (protocol.History, error) {
	h, _, err := c.HistoryRaw(ctx, roomID, after, limit)
	return h, err
}

// HistoryRaw is History that also returns the reply's exact bytes.
func (c *Conn) HistoryRaw(ctx context.Context, roomID string, after int64, limit int) (protocol.History, []byte, error) {
	var h protocol.History
	env, raw, err := c.Request(ctx, protocol.TypeHistory, protocol.HistoryRequest{RoomID: roomID, After: &after, Limit: limit})
	if err != nil {
		return h, raw, err
	}
	return h, raw, expect(env, protocol.TypeHistory, &h)
}

// Event sends the custom event name with data to the other members of
// roomID ("" for the only room the connection is in) and waits until the
// server has handled it. The server relays an event to the other members
// only (never back to the sender), stores nothing and sends no reply on
// success, so Event follows it with a ping: the server handles a
// connection's frames in order, so the pong means the event was accepted,
// and an error carrying the event's id means it was refused (a
// *protocol.Error: bad_payload with field "name" for a bad name, too_long
// with field "data" for data over Limits.MaxEventData, not_in_room,
// rate_limited).
//
// data is encoded with github.com/go-json-experiment/json, maps with
// their keys sorted; a jsontext.Value (or an encoding/json.RawMessage) is
// sent as it is, and nil sends no data (the members see null).
func (c *Conn) Event(ctx context.Context, roomID, name string, data any) error {
	d, err := encodeData(data)
	if err != nil {
		return err
	}
	evID, pingID := NewID(), NewID()
	ew := c.await(evID)
	defer c.forget(evID)
	pw := c.await(pingID)
	defer c.forget(pingID)
	if err := c.Send(ctx, protocol.TypeEvent, evID, protocol.SendEvent{Name: name, Data: d, RoomID: roomID}); err != nil {
		return err
	}
	if err := c.Send(ctx, protocol.TypePing, pingID, nil); err != nil {
		return err
	}
	select {
	case ev := <-ew:
		// The pong still follows; wait for it, so that it does not
		// turn up in Next.
		select {
		case <-pw:
		case <-c.done:
		case <-ctx.Done():
		}
		return eventReply(ev)
	case ev := <-pw:
		// Replies are routed in the order they arrive, so an error for
		// the event, which the server sent before the pong, is already
		// waiting if there is one.
		select {
		case ev := <-ew:
			return eventReply(ev)
		default:
		}
		env, _, err := reply(ev)
		if err != nil {
			return err
		}
		return expect(env, protocol.TypePong, nil)
	case <-c.done:
		return c.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// eventReply turns a reply carrying an event's id (only an error is
// expected) into Event's result.
func eventReply(ev event) error {
	env, _, err := reply(ev)
	if err != nil {
		return err
	}
	return fmt.Errorf("server answered event with %q", env.Type)
}

// encodeData encodes an event's data; nil and an empty jsontext.Value
// mean no data.
func encodeData(data any) (jsontext.Value, error) {
	switch d := data.(type) {
	case nil:
		return nil, nil
	case jsontext.Value:
		if len(d) == 0 {
			return nil, nil
		}
		if !d.IsValid() {
			return nil, errors.New("encode event data: not valid JSON")
		}
		return d, nil
	}
	b, err := json.Marshal(data, json.Deterministic(true)) // map keys sorted
	if err != nil {
		return nil, fmt.Errorf("encode event data: %w", err)
	}
	return jsontext.Value(b), nil
}

// Create asks the server for a new room (it does not join it).
func (c *Conn) Create(ctx context.Context) (protocol.Created, error) {
	cr, _, err := c.CreateRaw(ctx)
	return cr, err
}

// CreateIn asks the server for a new room in namespace ns (SPEC §9: its
// ID is "ns:<nanoid>"); ns "" is Create.
func (c *Conn) CreateIn(ctx context.Context, ns string) (protocol.Created, error) {
	cr, _, err := c.CreateInRaw(ctx, ns)
	return cr, err
}

// CreateRaw is Create that also returns the created event's exact bytes.
func (c *Conn) CreateRaw(ctx context.Context) (protocol.Created, []byte, error) {
	return c.CreateInRaw(ctx, "")
}

// CreateInRaw is CreateIn that also returns the created event's exact bytes.
func (c *Conn) CreateInRaw(ctx context.Context, ns string) (protocol.Created, []byte, error) {
	var cr protocol.Created
	env, raw, err := c.Request(ctx, protocol.TypeCreate, protocol.Create{Namespace: ns})
	if err != nil {
		return cr, raw, err
	}
	return cr, raw, expect(env, protocol.TypeCreated, &cr)
}

// Leave leaves roomID ("" for the only room) and waits for left.
func (c *Conn) Leave(ctx context.Context, roomID string) error {
	env, _, err := c.Request(ctx, protocol.TypeLeave, protocol.RoomRef{RoomID: roomID})
	if err != nil {
		return err
	}
	return expect(env, protocol.TypeLeft, nil)
}

// Typing tells the other members of roomID ("" for the only room) that
// this user is typing. The server sends no reply.
func (c *Conn) Typing(ctx context.Context, roomID string) error {
	return c.Send(ctx, protocol.TypeTyping, "", protocol.RoomRef{RoomID: roomID})
}

// Auth renews the connection's signed identity (SPEC §10): it sends token
// in an auth frame and waits for authed, whose exp it returns (Unix
// seconds). The token must be for the connection's user (forbidden
// otherwise); an invalid one is unauthorized, a *protocol.Error. Send it
// before the token in force expires, or within the grace period after
// the server's token_expired error (Next returns that error event), or
// the server closes the connection with 4001 (ErrTokenExpired).
func (c *Conn) Auth(ctx context.Context, token string) (protocol.Authed, error) {
	var a protocol.Authed
	env, _, err := c.Request(ctx, protocol.TypeAuth, protocol.Auth{Token: token})
	if err != nil {
		return a, err
	}
	return a, expect(env, protocol.TypeAuthed, &a)
}

// Ping sends an application-level ping and waits for the pong.
func (c *Conn) Ping(ctx context.Context) error {
	env, _, err := c.Request(ctx, protocol.TypePing, nil)
	if err != nil {
		return err
	}
	return expect(env, protocol.TypePong, nil)
}
