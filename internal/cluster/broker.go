package cluster

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"
	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Broker is broker.Broker on Redis. Publishing runs publish.lua through
// the Store, which stores the message and PUBLISHes it on the room's
// channel in one step. Delivery comes from one pub/sub connection per
// node: Redis pub/sub may drop messages (a reconnect, an output buffer
// over its limit), so the broker tracks the last seq it delivered per
// room, drops repeats, fills a gap from the room's stream before it
// delivers anything newer, and checks each room's position periodically
// to catch a loss that no later message reveals.
//
// Goroutines: run (started by Start, ended by Close) owns the
// subscription state and is the only one that calls the handler; the
// pub/sub connection's hook only queues what arrives; connect (run's
// helper) dials, subscribes in batches and catches up after every
// reconnect; relay (also ended by Close) publishes relayed events in
// order.
type Broker struct {
	st    *Store
	node  string // this node's ID in relayed events: its own are dropped
	h     broker.Handler
	log   *slog.Logger
	check time.Duration

	mu      sync.Mutex // guards the fields below; never held across Redis calls or the handler
	events  []event    // for run, in order
	wake    chan struct{}
	rooms   map[string]*sub // subscriptions per room, as callers see them
	conn    rueidis.DedicatedClient
	ready   error // nil when subscribed and caught up
	started bool  // Start ran: run and relay must be waited for
	closed  bool

	// catchingUp is set from a (re)connect until every room's position
	// has been checked; Ready fails meanwhile. Owned by run.
	catchingUp bool

	done chan struct{} // closed when run has ended

	outbox    rueidis.Commands // relays for the relay goroutine; guarded by mu
	relayWake chan struct{}
	relayDone chan struct{} // closed when relay has ended

	reconnects, fills atomic.Uint64
}

// BrokerStats are a Broker's counters, for metrics and tests.
type BrokerStats struct {
	Reconnects uint64 // pub/sub connections made after the first
	Fills      uint64 // messages delivered from the stream, not pub/sub
}

// Stats returns the broker's counters.
func (b *Broker) Stats() BrokerStats {
	return BrokerStats{Reconnects: b.reconnects.Load(), Fills: b.fills.Load()}
}

// event is one thing for run to do, in order of arrival.
type event struct {
	kind     eventKind
	room     string
	seq      int64
	epoch    string
	body     string
	id       string        // evSubscribe: the message ID at seq
	about    string        // evRelay
	presence bool          // evRelay
	applied  chan struct{} // closed when run has applied a subscribe
}

type eventKind int

const (
	evMessage   eventKind = iota // a pub/sub message
	evSubscribe                  // a room's subscription is confirmed: start tracking it
	evForget                     // a room's last subscription went
	evCatchUp                    // after a (re)connect: fill every room from its stream
	evCheck                      // periodic: compare every room's position with Redis
	evRelay                      // an event another node relayed
	evServed                     // a read told a reader of a room's seq and its ID
)

// BrokerOptions configure a Broker.
type BrokerOptions struct {
	// Check is how often each room's position is compared with Redis (5 s).
	Check time.Duration
	// Logger receives connection errors and gaps; nil discards them.
	Logger *slog.Logger
}

// NewBroker returns a broker on st's Redis. It starts nothing: Start
// hands it the handler it delivers to (a room.Registry's Handler, which
// needs the broker first) and starts it.
func NewBroker(st *Store, opts BrokerOptions) *Broker {
	if opts.Check <= 0 {
		opts.Check = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = st.log
	}
	b := &Broker{
		node:  gonanoid.Must(12),
		st:    st,
		log:   opts.Logger,
		check: opts.Check,
		wake:  make(chan struct{}, 1),
		rooms: make(map[string]*sub),
		ready: errors.New("pub/sub not connected yet"),
		done:  make(chan struct{}),

		relayWake: make(chan struct{}, 1),
		relayDone: make(chan struct{}),
	}
	st.mu.Lock()
	st.subscriber = b.Ready
	st.served = b.served
	st.mu.Unlock()
	return b
}

// served records that a read told a reader of room's seq in epoch, with
// message ID id there: run compares what it delivers at seq with it.
func (b *Broker) served(room, epoch string, seq int64, id string) {
	b.mu.Lock()
	_, subscribed := b.rooms[room]
	b.mu.Unlock()
	if subscribed {
		b.push(event{kind: evServed, room: room, seq: seq, epoch: epoch, id: id})
	}
}

// Start makes h the handler the broker delivers to and starts it: it
// connects to pub/sub and delivers from then on. Call it once, before the
// first Subscribe; after Close it does nothing.
func (b *Broker) Start(h broker.Handler) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return
	}
	b.started = true
	b.h = h
	go b.run()
	go b.relay()
}

// Ready reports whether the pub/sub connection is up and caught up.
func (b *Broker) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ready
}

// WaitReady waits until Ready is nil or ctx ends.
func (b *Broker) WaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := b.Ready()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-t.C:
		}
	}
}

// Publish implements broker.Broker. The ack (done) comes from the store;
// delivery, to this node's members too, from the room's channel.
func (b *Broker) Publish(m protocol.Message, key string, done store.DoneFunc) {
	b.st.Append(m, key, done)
}

// sub is a room's subscriptions as callers see them. Guarded by b.mu,
// except ready and err: err is written once, before ready is closed.
type sub struct {
	n     int           // Subscribe calls that hold (or wait for) it
	ready chan struct{} // closed once the first Subscribe has its outcome
	err   error         // that outcome
}

// Subscribe implements broker.Broker: the first subscription to a room
// SUBSCRIBEs its channel and waits for Redis to confirm, then reads the
// room's position, so that every message stored after Subscribe returns
// is delivered; a concurrent Subscribe to the same room waits for that.
func (b *Broker) Subscribe(ctx context.Context, room string) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errors.New("broker closed")
	}
	s := b.rooms[room]
	if s != nil && isClosed(s.ready) && s.err != nil {
		s = nil // a failed first attempt: start over (its waiters let go of it)
	}
	first := s == nil
	if first {
		s = &sub{ready: make(chan struct{})}
		b.rooms[room] = s
	}
	s.n++
	conn, ready := b.conn, b.ready
	b.mu.Unlock()
	if !first {
		select {
		case <-s.ready:
			if s.err != nil {
				b.release(room, s)
			}
			return s.err
		case <-ctx.Done():
			b.release(room, s)
			return ctx.Err()
		}
	}
	err := b.subscribe(ctx, room, conn, ready)
	s.err = err
	close(s.ready)
	if err != nil {
		b.release(room, s)
	}
	return err
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// subscribe makes the first subscription to room: SUBSCRIBE, confirmed,
// then the room's position for run.
func (b *Broker) subscribe(ctx context.Context, room string, conn rueidis.DedicatedClient, ready error) error {
	if conn == nil || ready != nil {
		return errors.New("redis pub/sub is not connected")
	}
	ctx, cancel := context.WithTimeout(ctx, b.st.timeout)
	defer cancel()
	if err := conn.Do(ctx, conn.B().Subscribe().Channel(b.st.channel(room)).Build()).Error(); err != nil {
		return err
	}
	// The first join of a room on this node fixes its epoch (the room's
	// keys are created if it has none) and reads its position.
	p, err := b.st.join(ctx, room)
	if err != nil {
		return err
	}
	applied := make(chan struct{})
	b.push(event{kind: evSubscribe, room: room, seq: p.last, epoch: p.epoch, id: p.id, applied: applied})
	select {
	case <-applied:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unsubscribe implements broker.Broker. It does not block: run sends the
// last subscription's UNSUBSCRIBE.
func (b *Broker) Unsubscribe(room string) {
	b.mu.Lock()
	s := b.rooms[room]
	b.mu.Unlock()
	if s != nil {
		b.release(room, s)
	}
}

// release drops one hold on s; the last one forgets the room.
func (b *Broker) release(room string, s *sub) {
	b.mu.Lock()
	s.n--
	last := s.n <= 0 && b.rooms[room] == s
	if last {
		delete(b.rooms, room)
	}
	b.mu.Unlock()
	if last {
		b.push(event{kind: evForget, room: room})
	}
}

func (b *Broker) push(e event) {
	b.mu.Lock()
	b.events = append(b.events, e)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Close stops the broker: no delivery happens after it returns. It
// returns nil.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
	<-b.done
	select {
	case b.relayWake <- struct{}{}:
	default:
	}
	<-b.relayDone
	return nil
}

// run owns the rooms' delivery state: it applies events in order,
// delivers, fills gaps, and keeps the pub/sub connection up.
func (b *Broker) run() {
	defer close(b.done)
	states := make(map[string]*roomState)
	lost := make(chan error, 1) // the pub/sub connection ended
	var cancelConn func()
	reconnect := time.NewTimer(0) // connect at once
	defer reconnect.Stop()
	tick := time.NewTicker(b.check)
	defer tick.Stop()
	backoff := 100 * time.Millisecond
	connected := false
	for {
		select {
		case <-b.wake:
		case err := <-lost:
			b.log.Warn("redis pub/sub connection lost; reconnecting", "err", errString(err))
			for _, st := range states {
				st.verify = true
			}
			b.setConn(nil, errors.New("redis pub/sub connection lost"))
			if cancelConn != nil {
				cancelConn()
				cancelConn = nil
			}
			reconnect.Reset(backoff)
		case <-reconnect.C:
			cancel, err := b.connect(lost)
			if err != nil {
				b.log.Warn("redis pub/sub: connect failed", "err", err.Error(), "retry_in", backoff)
				reconnect.Reset(backoff)
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
			if connected {
				b.reconnects.Add(1)
			}
			connected = true
			backoff = 100 * time.Millisecond
			cancelConn = cancel
			b.push(event{kind: evCatchUp})
		case <-tick.C:
			b.push(event{kind: evCheck})
		}
		b.mu.Lock()
		events := b.events
		b.events = nil
		closed := b.closed
		b.mu.Unlock()
		if closed {
			if cancelConn != nil {
				cancelConn()
			}
			return
		}
		for _, e := range events {
			b.apply(states, e)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}

func (b *Broker) setConn(conn rueidis.DedicatedClient, ready error) {
	b.mu.Lock()
	b.conn, b.ready = conn, ready
	b.mu.Unlock()
}

// connect opens a pub/sub connection and subscribes every room the node
// has, in batches; the catch-up that follows it (evCatchUp) makes the
// node ready. lost receives the connection's end.
func (b *Broker) connect(lost chan<- error) (cancel func(), err error) {
	conn, release := b.st.client.Dedicate()
	wait := conn.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: b.onMessage})
	b.mu.Lock()
	rooms := make([]string, 0, len(b.rooms))
	for r := range b.rooms {
		rooms = append(rooms, b.st.channel(r))
	}
	b.mu.Unlock()
	for len(rooms) > 0 {
		n := min(len(rooms), 500)
		ctx, c := context.WithTimeout(context.Background(), b.st.timeout)
		err = conn.Do(ctx, conn.B().Subscribe().Channel(rooms[:n]...).Build()).Error()
		c()
		if err != nil {
			conn.Close()
			release()
			return nil, err
		}
		rooms = rooms[n:]
	}
	b.setConn(conn, errors.New("redis pub/sub catching up"))
	go func() {
		err, ok := <-wait
		if !ok {
			err = errors.New("closed")
		}
		select {
		case lost <- err:
		default:
		}
	}()
	return func() { conn.Close(); release() }, nil
}

// onMessage is the pub/sub hook: it parses and queues, nothing more.
func (b *Broker) onMessage(m rueidis.PubSubMessage) {
	room, ok := b.roomOf(m.Channel)
	if !ok {
		return
	}
	if rest, ok := strings.CutPrefix(m.Message, "r\n"); ok {
		parts := strings.SplitN(rest, "\n", 4)
		if len(parts) != 4 {
			b.log.Error("redis pub/sub: malformed relay", "channel", m.Channel)
			return
		}
		if parts[0] == b.node {
			return
		}
		b.push(event{kind: evRelay, room: room, about: parts[2], presence: parts[1] == "p", body: parts[3]})
		return
	}
	seq, rest, ok1 := strings.Cut(m.Message, "\n")
	epoch, body, ok2 := strings.Cut(rest, "\n")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok1 || !ok2 || err != nil {
		b.log.Error("redis pub/sub: malformed message", "channel", m.Channel)
		return
	}
	b.push(event{kind: evMessage, room: room, seq: n, epoch: epoch, body: body})
}

// roomOf returns the room of a channel name (prefix:{room}).
func (b *Broker) roomOf(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, b.st.prefix+":{")
	if !ok || !strings.HasSuffix(rest, "}") {
		return "", false
	}
	return rest[:len(rest)-1], true
}
