package server

import (
	"errors"
	"runtime/debug"
	"strings"

	"github.com/roomchat/roomchat/internal/protocol"
)

var (
	errInternal     = protocol.Errorf(protocol.CodeInternal, "the server failed to handle this frame")
	errShuttingDown = protocol.Errorf(protocol.CodeShuttingDown, "the server is shutting down; reconnect in a moment")
)

// with an internal error: it ends neither the connection nor the process.
func (c *conn) handle(frame []byte) {
	var reqID string
	defer func() {
		if p := recover(); p != nil {
			c.srv.log.Error("panic handling frame", "user", c.user.ID(), "panic", p, "stack", string(debug.Stack()))
			c.reply(reqID, errInternal)
		}
	}()
	// Shutdown waits for frames being handled, so that a msg accepted here
	// is in the store's queue before Shutdown flushes it.
	c.srv.handling.RLock()
	if c.srv.shutting.Load() {
		c.srv.handling.RUnlock()
		c.reply("", errShuttingDown)
		return
	}
	defer c.srv.handling.RUnlock()
	// Decode first so that a rate_limited error can carry the request id;
	// every frame counts against the limit, valid or not.
	env, perr := protocol.DecodeEnvelope(frame)
	if perr == nil {
		if perr = c.srv.limits.CheckID(env.ID); perr != nil {
			env.ID = "" // not echoed: it is too long to be anyone's id
		}
	}
	reqID = env.ID
	// The connection's limit, then its user's over all its connections
	// (a resume gives each new connection a fresh limit).
	if !c.allow(reqID) {
		return
	}
	if !c.user.TakeFrame() {
		c.refuseFrame(reqID, protocol.Errorf(protocol.CodeRateLimited, "too many messages from your user over all its connections; the limit is %g per second", c.srv.limits.Rate))
		return
	}
	if perr != nil {
		c.reply("", perr)
		return
	}
	if err := c.dispatch(env); err != nil {
		c.reply(reqID, err)
	}
}

// dispatch runs one decoded frame and returns the error to answer with:
// one method per client frame type (protocol.ClientTypes).
func (c *conn) dispatch(env protocol.Envelope) error {
	switch env.Type {
	case protocol.TypeJoin:
		return c.join(env)
	case protocol.TypeHistory:
		return c.history(env)
	case protocol.TypeEvent:
		return c.event(env)
	case protocol.TypeMsg:
		return c.msg(env)
	case protocol.TypeLeave:
		return c.leave(env)
	case protocol.TypeCreate:
		return c.create(env)
	case protocol.TypeTyping:
		return c.typing(env)
	case protocol.TypePing:
		return c.ping(env)
	case protocol.TypeAuth:
		return c.auth(env)
	case protocol.TypeRedact, protocol.TypeKick, protocol.TypeBan, protocol.TypeUnban,
		protocol.TypeMute, protocol.TypeUnmute, protocol.TypeConfigure:
		return c.moderate(env)
	}
	return protocol.FieldErrorf(protocol.CodeUnknownType, "type", "unknown frame type %q; known types: %s", truncate(env.Type, 32), knownTypes)
}

// knownTypes lists the client frame types for the unknown_type error.
var knownTypes = strings.Join(protocol.ClientTypes, ", ")

// join joins a room (SPEC §4 join), answering with joined and the
// history the client asked for.
func (c *conn) join(env protocol.Envelope) error {
	var p protocol.Join
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	lim := c.srv.limits
	if err := lim.CheckRoomID("roomID", p.RoomID); err != nil {
		return err
	}
	name := ""
	if p.Name != "" {
		n, err := lim.CleanName("name", p.Name)
		if err != nil {
			return err
		}
		name = n
	}
	if p.Since != nil && *p.Since < 0 {
		return protocol.FieldErrorf(protocol.CodeBadPayload, "since", `"since" must be a whole number ≥ 0`)
	}
	ctx, done := c.readContext()
	defer done()
	return c.srv.reg.JoinWithKey(ctx, c.user, c, p.RoomID, name, p.Key, p.Since, env.ID)
}

// history answers a page of a room's history (SPEC §4 history).
func (c *conn) history(env protocol.Envelope) error {
	var p protocol.HistoryRequest
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	if err := c.checkOptionalRoom(p.RoomID); err != nil {
		return err
	}
	if p.After == nil || *p.After < 0 {
		return protocol.FieldErrorf(protocol.CodeBadPayload, "after", `"after" is required: a whole number ≥ 0, the last seq the client has`)
	}
	if err := c.srv.limits.CheckPageLimit("limit", p.Limit); err != nil {
		return err
	}
	ctx, done := c.readContext()
	defer done()
	h, err := c.srv.reg.History(ctx, c.user, p.RoomID, *p.After, p.Limit)
	if err != nil {
		return err
	}
	c.Queue(protocol.Encode(protocol.TypeHistory, env.ID, h))
	return nil
}

// event relays a custom event to a room (SPEC §4 event).
func (c *conn) event(env protocol.Envelope) error {
	var p protocol.SendEvent
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	if err := c.checkOptionalRoom(p.RoomID); err != nil {
		return err
	}
	lim := c.srv.limits
	if err := lim.CheckEventName("name", p.Name); err != nil {
		return err
	}
	if err := lim.CheckEventData("data", p.Data); err != nil {
		return err
	}
	return c.srv.reg.Event(c.user, p.RoomID, p.Name, p.Data)
}

// msg sends a message to a room (SPEC §4 msg); the registry acks it.
func (c *conn) msg(env protocol.Envelope) error {
	var p protocol.Send
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	if err := c.checkOptionalRoom(p.RoomID); err != nil {
		return err
	}
	if err := c.srv.limits.CheckMessage("message", p.Message); err != nil {
		return err
	}
	c.srv.metrics.msgsIn.Inc()
	return c.srv.reg.Send(c.user, p.RoomID, p.Message, env.ID)
}

// leave leaves a room (SPEC §4 leave).
func (c *conn) leave(env protocol.Envelope) error {
	var p protocol.RoomRef
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	if err := c.checkOptionalRoom(p.RoomID); err != nil {
		return err
	}
	return c.srv.reg.Leave(c.user, c, p.RoomID, env.ID)
}

// create answers a new room's ID and share link (SPEC §4 create).
func (c *conn) create(env protocol.Envelope) error {
	var p protocol.Create
	if len(env.Payload) > 0 {
		if err := protocol.DecodePayload(env, &p); err != nil {
			return err
		}
	}
	id, perr := c.srv.newRoomID(p.Namespace)
	if perr != nil {
		return perr
	}
	c.Queue(protocol.Encode(protocol.TypeCreated, env.ID, protocol.Created{RoomID: id, URL: c.linkBase + "/r/" + id, OwnerKey: c.srv.reg.OwnerKey(id)}))
	return nil
}

// typing tells a room that the user is typing (SPEC §4 typing).
func (c *conn) typing(env protocol.Envelope) error {
	var p protocol.RoomRef
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	if err := c.checkOptionalRoom(p.RoomID); err != nil {
		return err
	}
	return c.srv.reg.Typing(c.user, p.RoomID)
}

// ping answers pong (SPEC §4 ping).
func (c *conn) ping(env protocol.Envelope) error {
	c.Queue(protocol.Encode(protocol.TypePong, env.ID, nil))
	return nil
}

func (c *conn) checkOptionalRoom(id string) error {
	if id == "" {
		return nil
	}
	if err := c.srv.limits.CheckRoomID("roomID", id); err != nil {
		return err
	}
	return nil
}

// is; anything else is logged and the client sees only "internal".
func (c *conn) reply(reqID string, err error) {
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		c.srv.log.Error("handling frame", "user", c.user.ID(), "err", err)
		pe = errInternal
	}
	c.srv.metrics.errors.WithLabelValues(pe.Code).Inc()
	c.Queue(protocol.EncodeError(reqID, pe))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
