package broker

import (
	"context"
	"sync/atomic"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Local is the single-node broker: the store orders each room's messages
// (it assigns seqs and calls back in seq order), and Local hands each
// stored message to the handler from the store's callback, before the
// publisher's done. It keeps no state per room.
type Local struct {
	store   store.Store
	handler Handler
	subs    atomic.Int64 // subscriptions held, over all rooms
}

// NewLocal returns a broker that appends to st. It delivers nothing
// until Start hands it its handler.
func NewLocal(st store.Store) *Local {
	return &Local{store: st}
}

// Start makes h the handler Local delivers to. Call it once, before the
// first Publish; it starts no goroutine.
func (b *Local) Start(h Handler) { b.handler = h }

// Publish implements Broker. The store calls back in seq order per room,
// so delivering from its callback keeps each room's order.
func (b *Local) Publish(m protocol.Message, key string, done store.DoneFunc) {
	b.store.Append(m, key, func(stored protocol.Message, dup bool, err error) {
		if err == nil && !dup {
			b.handler.Deliver(stored)
		}
		done(stored, dup, err)
	})
}

// Subscribe implements Broker. On one node every stored message is
// delivered already, so a subscription is only counted.
func (b *Local) Subscribe(ctx context.Context, roomID string) error {
	b.subs.Add(1)
	return nil
}

// Unsubscribe implements Broker.
func (b *Local) Unsubscribe(roomID string) { b.subs.Add(-1) }

// Relay implements Broker: there is no other node.
func (b *Local) Relay(roomID, about string, presence bool, frame []byte) {}

// Subscriptions returns how many subscriptions are held: 0 once every
// room's members have gone, if the registry balances them.
func (b *Local) Subscriptions() int64 { return b.subs.Load() }
