package cluster

import "context"

// Relay implements broker.Broker: one PUBLISH on the room's channel,
// which every subscribed node gets, marked with this node's ID so that it
// drops its own. A stored message's payload starts with its seq (a
// digit), a relayed event's with "r". Relays go out in order, through one
// goroutine (relay) that sends what is queued as one pipeline.
func (b *Broker) Relay(room, about string, presence bool, frame []byte) {
	kind := "e"
	if presence {
		kind = "p"
	}
	payload := "r\n" + b.node + "\n" + kind + "\n" + about + "\n" + string(frame)
	c := b.st.client
	cmd := c.B().Publish().Channel(b.st.channel(room)).Message(payload).Build()
	b.mu.Lock()
	if b.closed || len(b.outbox) >= maxOutbox {
		b.mu.Unlock()
		return // at most once: a relay that cannot go is dropped
	}
	b.outbox = append(b.outbox, cmd)
	b.mu.Unlock()
	select {
	case b.relayWake <- struct{}{}:
	default:
	}
}

// maxOutbox bounds the relays waiting for Redis: while it is unreachable,
// typing and events are dropped rather than kept.
const maxOutbox = 10000

// relay sends queued relays in order until Close.
func (b *Broker) relay() {
	defer close(b.relayDone)
	for {
		b.mu.Lock()
		cmds := b.outbox
		b.outbox = nil
		closed := b.closed
		b.mu.Unlock()
		if len(cmds) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), b.st.timeout)
			for _, r := range b.st.client.DoMulti(ctx, cmds...) {
				if err := r.Error(); err != nil {
					b.log.Warn("redis: relaying events failed", "n", len(cmds), "err", err)
					break
				}
			}
			cancel()
			continue
		}
		if closed {
			return
		}
		<-b.relayWake
	}
}
