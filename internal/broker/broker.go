// Package broker is the seam between the room registry and the place a
// room's messages are ordered (SPEC §8): a Broker appends a room's message
// and delivers every subscribed room's messages, in seq order, to this
// node's registry. Local is the single-node broker, on the node's own
// store.Store; a cluster broker (on Redis) orders each room's messages
// for every node that has members there.
//
// A node's own members receive a message only through Deliver, like
// everyone else's: the registry never delivers from the publisher's
// callback. store.Store stays the history interface: joins and history
// requests read it directly.
package broker

import (
	"context"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Handler receives the messages of the rooms a Broker has subscriptions
// for.
type Handler interface {
	// Deliver is called once for each stored message of every subscribed
	// room, in seq order per room, on a goroutine of the broker's. It may
	// also be called for rooms without a subscription (the handler
	// ignores those). It must not block or call the Broker.
	Deliver(m protocol.Message)
	// Reset tells that roomID's stored history was lost or replaced: the
	// room has a new epoch, and Deliver goes on from its first message.
	// It is called before any message of the new epoch is delivered, on
	// the same goroutine as Deliver, and must not block either. (A
	// single-node broker never calls it: its store keeps the epoch.)
	Reset(roomID, epoch string)
	// Relayed is an event of roomID that another node relayed (Relay):
	// the handler queues frame to its members there, except the user it
	// is about; presence events go with the room's other presence
	// events. Same goroutine and rules as Deliver.
	Relayed(roomID, about string, presence bool, frame []byte)
}

// Broker orders and fans out rooms' messages. Methods are safe for
// concurrent use.
type Broker interface {
	// Publish appends m to room m.RoomID (store.Store.Append's contract:
	// the next seq, de-duplication by key), then delivers it to every
	// subscribed node, this one included. done is called once, when m is
	// stored (it is then the ack) or failed; a duplicate calls done with
	// the original and dup = true and delivers nothing again. done is not
	// ordered with Deliver: a client may get its ack before or after the
	// msg event. done must not block.
	Publish(m protocol.Message, key string, done store.DoneFunc)

	// Subscribe asks for roomID's messages. It returns once the
	// subscription is in place: every message stored after it returns is
	// delivered, so a history read made after Subscribe, merged with
	// deliveries by seq, misses nothing. Subscriptions are counted: each
	// Subscribe that returned nil needs one Unsubscribe.
	Subscribe(ctx context.Context, roomID string) error

	// Unsubscribe drops one subscription to roomID; with none left,
	// deliveries of the room stop. It does not block.
	Unsubscribe(roomID string)

	// Relay sends frame, an event of roomID that is not stored (typing, a
	// custom event, presence), to every other node subscribed to the
	// room, whose handler gets it through Relayed; about is the userID it
	// comes from or is about ("" for none). This node's members are the
	// caller's to serve. Delivery is at most once and unordered with
	// messages. It does not block.
	Relay(roomID, about string, presence bool, frame []byte)
}
