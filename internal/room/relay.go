package room

import (
	"bytes"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/protocol"
)

// typingInterval is the least time between two typing events of one user
// in one room (SPEC §4): a client that sends typing on every keystroke
// costs the room one event per interval.
const typingInterval = 2 * time.Second

// Typing tells the other live members of roomID ("" when u is in exactly
// one room) that u is typing, at most once per typingInterval; typing
// sent more often is dropped without an error.
func (reg *Registry) Typing(u *User, roomID string) error {
	r, err := u.resolve(roomID)
	if err != nil {
		return err
	}
	p, perr := reg.policyOf(r)
	if perr != nil {
		return perr
	}
	if perr := p.MayType(); perr != nil {
		return perr
	}
	now := time.Now()
	if perr := reg.currentMod(r, now).mutedError(r.id, u.id); perr != nil {
		return perr
	}
	r.mu.Lock()
	m := r.member(u)
	if m == nil {
		r.mu.Unlock()
		return protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", r.id)
	}
	if now.Sub(m.typed) < typingInterval {
		r.mu.Unlock()
		return nil
	}
	m.typed = now
	from := protocol.User{UserID: u.id, Name: m.name}
	r.mu.Unlock()
	frame := protocol.Encode(protocol.TypeTyping, "", protocol.Typing{RoomID: r.id, User: from})
	r.relay(frame, u)
	reg.broker.Relay(r.id, u.id, false, frame)
	return nil
}

// Event relays a custom event from u to the other live members of roomID
// ("" when u is in exactly one room). Nothing is stored. The caller has
// checked name and data (protocol.Limits.CheckEventName, CheckEventData);
// empty data is null.
func (reg *Registry) Event(u *User, roomID, name string, data jsontext.Value) error {
	r, err := u.resolve(roomID)
	if err != nil {
		return err
	}
	p, perr := reg.policyOf(r)
	if perr != nil {
		return perr
	}
	if perr := p.MayEvent(); perr != nil {
		return perr
	}
	granted := u.grantedRole(r.id)
	clock := time.Now()
	rm := reg.currentMod(r, clock)
	now := clock.UnixNano()
	r.mu.Lock()
	m := r.member(u)
	var from protocol.User
	over := budgetKinds
	var denied *protocol.Error
	if m != nil {
		if denied = reg.mayPost(r, p, rm, m, granted, now, false); denied == nil {
			from = protocol.User{UserID: u.id, Name: m.name}
			cost := eventFrameOverhead + len(r.id) + len(name) + len(data) + len(u.id) + len(m.name)
			over = r.spend(&reg.budgets, m, true, cost, now)
		}
	}
	r.mu.Unlock()
	if m == nil {
		return protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", r.id)
	}
	if denied != nil {
		return denied
	}
	if over != budgetKinds {
		return reg.overBudget(r.id, over)
	}
	frame := encodeEvent(r.id, name, data, from)
	r.relay(frame, u)
	reg.broker.Relay(r.id, u.id, false, frame)
	return nil
}

// PostEvent relays a custom event from the server side (HTTP API) to every
// live member of roomID and returns how many on this node it was queued
// to; a room nobody is in gets nothing. In a cluster the other nodes'
// members get it too (not counted).
func (reg *Registry) PostEvent(roomID, name string, data jsontext.Value) int {
	frame := encodeEvent(roomID, name, data, protocol.User{})
	reg.broker.Relay(roomID, "", false, frame)
	r := reg.lookup(roomID)
	if r == nil {
		return 0
	}
	return r.relay(frame, nil)
}

// relayed queues an event another node relayed to this node's members of
// roomID, except the user it is about; presence events are coalesced
// with the room's own.
func (reg *Registry) relayed(roomID, about string, presence bool, frame []byte) {
	r := reg.lookup(roomID)
	if r == nil {
		return
	}
	if presence {
		p := relayedPresence(about, frame)
		r.mu.Lock()
		r.announce(p, frame)
		r.mu.Unlock()
		return
	}
	if about != "" && reg.relayedToUser(roomID, about, frame) {
		return
	}
	if about == "" && bytes.HasPrefix(frame, configuredPrefix) {
		// Another node changed the room's post rule (SPEC §11): this
		// node's cached one is stale; its members get the notice.
		reg.forgetMod(roomID)
		r.notify(frame)
		return
	}
	var u *User
	if about != "" {
		reg.mu.RLock()
		u = reg.users[about]
		reg.mu.RUnlock()
	}
	r.relay(frame, u)
}

// relayedPresence decodes a presence frame another node relayed. One that
// does not decode (a node of another version) goes out as it is, to all
// but the user it is about, and collapses with no other.
func relayedPresence(about string, frame []byte) protocol.Presence {
	var p protocol.Presence
	if env, err := protocol.DecodeEnvelope(frame); err == nil && protocol.DecodePayload(env, &p) == nil && p.User.UserID == about {
		return p
	}
	return protocol.Presence{User: protocol.User{UserID: about}}
}

func encodeEvent(roomID, name string, data jsontext.Value, from protocol.User) []byte {
	if len(data) == 0 {
		data = jsontext.Value("null")
	}
	return protocol.Encode(protocol.TypeEvent, "", protocol.Event{RoomID: roomID, Name: name, Data: data, From: from})
}
