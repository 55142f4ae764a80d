package room

import (
	"context"
	"errors"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Send stores text as a message from u in roomID ("" when u is in exactly
// one room). Once stored, every live member receives the msg event, and,
// when reqID is set, u gets an ack (the original one for a retried reqID).
// A store failure reaches u as a store_unavailable error with id reqID. Send
// returns before the message is stored; it fails at once for not_in_room
// and room_required.
func (reg *Registry) Send(u *User, roomID, text, reqID string) error {
	r, err := u.resolve(roomID)
	if err != nil {
		return err
	}
	p, perr := reg.policyOf(r)
	if perr != nil {
		return perr
	}
	granted := u.grantedRole(r.id)
	now := time.Now()
	rm := reg.currentMod(r, now)
	msg := protocol.Message{
		ID:      gonanoid.Must(),
		RoomID:  r.id,
		From:    protocol.User{UserID: u.id},
		Message: text,
		TS:      now.UTC().Truncate(time.Millisecond),
	}
	cost := 0
	if reg.budgets.RoomBytes > 0 {
		cost = protocol.EncodedSize(msg) + msgFrameOverhead
	}
	r.mu.Lock()
	m := r.member(u)
	over := budgetKinds
	var denied *protocol.Error
	if m != nil {
		if denied = reg.mayPost(r, p, rm, m, granted, now.UnixNano(), true); denied == nil {
			msg.From.Name = m.name
			msg.BelowModerator = max(m.role, granted) < policy.RoleModerator
			over = r.spend(&reg.budgets, m, false, cost+len(m.name), now.UnixNano())
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
	reg.broker.Publish(msg, store.DedupKey(u.id, r.id, reqID), func(stored protocol.Message, dup bool, err error) {
		if err != nil {
			u.queue(protocol.EncodeError(reqID, reg.storeRefusal(r.id, p, err)))
			return
		}
		if !dup {
			reg.stored.Add(1)
		}
		if reqID != "" {
			u.queue(protocol.Encode(protocol.TypeAck, reqID, protocol.Ack{MsgID: stored.ID, Seq: stored.Seq}))
		}
	})
	return nil
}

// Post stores a message from a bot (HTTP API) in roomID and delivers it to
// the room's live members. role is the caller's role in the room: below
// moderator, the room's run-time post rule of moderators refuses it
// (forbidden, naming the rule), as the store checks it. It blocks until
// the message is stored or ctx ends.
func (reg *Registry) Post(ctx context.Context, roomID, name, text string, role policy.Role) (protocol.Message, error) {
	return reg.PostAs(ctx, roomID, protocol.User{UserID: "bot-" + gonanoid.Must(12), Name: name}, text, role)
}

// PostAs is Post from a known user: the HTTP API's caller with a token
// (SPEC §10) posts as its sub.
func (reg *Registry) PostAs(ctx context.Context, roomID string, from protocol.User, text string, role policy.Role) (protocol.Message, error) {
	return reg.publishWait(ctx, protocol.Message{
		ID:             gonanoid.Must(),
		RoomID:         roomID,
		From:           from,
		Message:        text,
		TS:             time.Now().UTC().Truncate(time.Millisecond),
		BelowModerator: role < policy.RoleModerator,
	})
}

// publishWait publishes msg (not de-duplicated) and waits until it is
// stored or ctx ends: the HTTP API and the moderation actions block so.
// A refusal by the store (msg.BelowModerator under the room's moderators
// post rule, a mute) is what a msg frame would get (storeRefusal).
func (reg *Registry) publishWait(ctx context.Context, msg protocol.Message) (protocol.Message, error) {
	type result struct {
		m   protocol.Message
		err error
	}
	ch := make(chan result, 1)
	reg.broker.Publish(msg, "", func(stored protocol.Message, _ bool, err error) {
		if err == nil {
			reg.stored.Add(1)
		}
		ch <- result{stored, err}
	})
	select {
	case res := <-ch:
		if res.err != nil {
			return protocol.Message{}, reg.publishRefusal(msg.RoomID, res.err)
		}
		return res.m, nil
	case <-ctx.Done():
		return protocol.Message{}, ctx.Err()
	}
}

// publishRefusal is storeRefusal for publishWait, which has no policy at
// hand: the room's is looked up only for a refusal that names it.
func (reg *Registry) publishRefusal(roomID string, err error) *protocol.Error {
	var p *policy.Policy
	if errors.Is(err, store.ErrPostRule) {
		p, _ = reg.PolicyFor(roomID)
	}
	return reg.storeRefusal(roomID, p, err)
}

// deliver encodes m once and queues it to every live member of its room;
// members still joining keep it to merge with their history. The broker
// calls it in seq order per room; a room without members here ignores it.
func (reg *Registry) deliver(m protocol.Message) {
	r := reg.lookup(m.RoomID)
	if r == nil {
		return
	}
	frame := protocol.Encode(protocol.TypeMsg, "", m)
	r.mu.Lock()
	r.lastSeq = max(r.lastSeq, m.Seq)
	r.flushPresence()
	n := 0
	for _, mem := range r.members {
		switch {
		case mem.joining:
			mem.pending = append(mem.pending, delivery{seq: m.Seq, frame: frame})
		case mem.conn != nil && m.Seq > mem.seqSeen:
			mem.conn.Queue(frame)
			n++
		}
	}
	r.mu.Unlock()
	reg.deliveries.Add(uint64(n))
}
