// Package brokertest is the conformance suite every broker.Broker must
// pass: the single-node Local and the cluster broker run the same tests
// through Run. A message to publish and the outcome of a publish are
// storetest's (Msg, Result): the broker's done reports what a store's
// Append does.
package brokertest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// Factory starts len(hs) nodes' brokers on one fresh, shared backing,
// node i delivering to hs[i], and returns them with the history store the
// nodes read. The suite asks for more than one node only when Run's nodes
// allows it. It closes nothing: the factory registers its own cleanup.
type Factory func(t *testing.T, hs []broker.Handler) ([]broker.Broker, store.Store)

// Run runs the suite. nodes is how many nodes the broker supports sharing
// one backing (1 for a single-node broker).
func Run(t *testing.T, nodes int, newBrokers Factory) {
	t.Run("SeqOrder", func(t *testing.T) { testSeqOrder(t, newBrokers) })
	t.Run("RoomsIndependent", func(t *testing.T) { testRooms(t, newBrokers) })
	t.Run("Dedup", func(t *testing.T) { testDedup(t, newBrokers) })
	t.Run("SubscribeThenRead", func(t *testing.T) { testSubscribeThenRead(t, newBrokers) })
	t.Run("ConcurrentSubscribe", func(t *testing.T) { testConcurrentSubscribe(t, newBrokers) })
	if nodes > 1 {
		t.Run("AcrossNodes", func(t *testing.T) { testAcrossNodes(t, min(nodes, 3), newBrokers) })
		t.Run("RelayAcrossNodes", func(t *testing.T) { testRelay(t, min(nodes, 3), newBrokers) })
	}
}

// Recorder is a broker.Handler that keeps what it is given, per room.
type Recorder struct {
	mu     sync.Mutex
	rooms  map[string][]int64
	relays []string // room|about|presence|frame
	wake   chan struct{}
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{rooms: make(map[string][]int64), wake: make(chan struct{}, 1)}
}

// Deliver implements broker.Handler.
func (r *Recorder) Deliver(m protocol.Message) {
	r.mu.Lock()
	r.rooms[m.RoomID] = append(r.rooms[m.RoomID], m.Seq)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Reset implements broker.Handler: the room's deliveries start over.
func (r *Recorder) Reset(room, epoch string) {
	r.mu.Lock()
	r.rooms[room] = nil
	r.mu.Unlock()
}

// Relayed implements broker.Handler.
func (r *Recorder) Relayed(room, about string, presence bool, frame []byte) {
	r.mu.Lock()
	r.relays = append(r.relays, fmt.Sprintf("%s|%s|%v|%s", room, about, presence, frame))
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Relays returns the relayed events so far, as room|about|presence|frame.
func (r *Recorder) Relays() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.relays)
}

// Seqs returns the seqs delivered for room so far, in delivery order.
func (r *Recorder) Seqs(room string) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.rooms[room])
}

// WaitFor waits up to 10 s for room's deliveries to reach seq last, and
// returns them.
func (r *Recorder) WaitFor(t testing.TB, room string, last int64) []int64 {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		got := r.Seqs(room)
		if len(got) > 0 && got[len(got)-1] >= last {
			return got
		}
		select {
		case <-r.wake:
		case <-deadline:
			t.Fatalf("room %s: delivered %v within 10 s, want up to seq %d", room, tail(got), last)
			return nil
		}
	}
}

func tail(s []int64) []int64 { return s[max(0, len(s)-10):] }

// Publish publishes m (storetest.Msg makes one) and waits up to 10 s for
// its done, whose outcome is an Append's.
func Publish(t testing.TB, b broker.Broker, m protocol.Message, key string) storetest.Result {
	t.Helper()
	ch := make(chan storetest.Result, 1)
	b.Publish(m, key, func(stored protocol.Message, dup bool, err error) {
		ch <- storetest.Result{Msg: stored, Dup: dup, Err: err}
	})
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("Publish(%q) did not complete within 10 s", m.Message)
		return storetest.Result{}
	}
}

func one(t *testing.T, newBrokers Factory) (broker.Broker, store.Store, *Recorder) {
	rec := NewRecorder()
	bs, st := newBrokers(t, []broker.Handler{rec})
	return bs[0], st, rec
}

func subscribe(t testing.TB, b broker.Broker, room string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Subscribe(ctx, room); err != nil {
		t.Fatalf("Subscribe(%s): %v", room, err)
	}
}

func span(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// Publishes from many goroutines at once: every done gets its own seq,
// 1..N between them, and the subscriber is given 1..N in order, each once.
func testSeqOrder(t *testing.T, newBrokers Factory) {
	b, _, rec := one(t, newBrokers)
	subscribe(t, b, "r")
	const writers, each = 8, 25
	var mu sync.Mutex
	var acked []int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				res := Publish(t, b, storetest.Msg("r", fmt.Sprintf("%d-%d", w, i)), "")
				if res.Err != nil || res.Dup {
					t.Errorf("publish: %+v", res)
					return
				}
				mu.Lock()
				acked = append(acked, res.Msg.Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	const n = writers * each
	slices.Sort(acked)
	if !slices.Equal(acked, span(1, n)) {
		t.Fatalf("acked seqs %v…, want 1..%d each once", tail(acked), n)
	}
	if got := rec.WaitFor(t, "r", n); !slices.Equal(got, span(1, n)) {
		t.Fatalf("delivered %d seqs, not 1..%d in order: %v…", len(got), n, tail(got))
	}
}

// Rooms have their own seqs and orders.
func testRooms(t *testing.T, newBrokers Factory) {
	b, _, rec := one(t, newBrokers)
	const rooms, each = 10, 20
	for i := range rooms {
		subscribe(t, b, fmt.Sprint("room-", i))
	}
	var wg sync.WaitGroup
	for i := range rooms {
		wg.Go(func() {
			for k := range each {
				if res := Publish(t, b, storetest.Msg(fmt.Sprint("room-", i), fmt.Sprint(k)), ""); res.Err != nil || res.Msg.Seq != int64(k+1) {
					t.Errorf("room-%d message %d: %+v", i, k, res)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range rooms {
		room := fmt.Sprint("room-", i)
		if got := rec.WaitFor(t, room, each); !slices.Equal(got, span(1, each)) {
			t.Errorf("%s delivered %v, want 1..%d", room, got, each)
		}
	}
}

// A retried key is acked with the original and delivered once.
func testDedup(t *testing.T, newBrokers Factory) {
	b, _, rec := one(t, newBrokers)
	subscribe(t, b, "r")
	first := Publish(t, b, storetest.Msg("r", "once"), "u1\x00r\x00k1")
	again := Publish(t, b, storetest.Msg("r", "once, retried"), "u1\x00r\x00k1")
	other := Publish(t, b, storetest.Msg("r", "another"), "u1\x00r\x00k2")
	if first.Err != nil || first.Dup || first.Msg.Seq != 1 {
		t.Fatalf("first: %+v", first)
	}
	if again.Err != nil || !again.Dup || again.Msg.Seq != 1 || again.Msg.ID != first.Msg.ID {
		t.Fatalf("retry: %+v, want a dup of seq 1 (%s)", again, first.Msg.ID)
	}
	if other.Err != nil || other.Dup || other.Msg.Seq != 2 {
		t.Fatalf("another key: %+v", other)
	}
	if got := rec.WaitFor(t, "r", 2); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("delivered %v, want [1 2]", got)
	}
}

// A join subscribes, then reads history: with messages published all the
// while, the read's LastSeq and the deliveries after it leave no gap.
func testSubscribeThenRead(t *testing.T, newBrokers Factory) {
	b, st, rec := one(t, newBrokers)
	const n = 300
	stop := make(chan struct{})
	published := make(chan int64, 1)
	go func() {
		var last int64
		defer func() { published <- last }()
		for i := range n {
			if i == n/2 {
				close(stop) // halfway: let the reader subscribe
			}
			res := Publish(t, b, storetest.Msg("r", fmt.Sprint(i)), "")
			if res.Err != nil {
				t.Errorf("publish %d: %v", i, res.Err)
				return
			}
			last = res.Msg.Seq
		}
	}()
	<-stop
	subscribe(t, b, "r")
	info, err := st.Room(context.Background(), "r")
	if err != nil {
		t.Fatal(err)
	}
	last := <-published
	if last != n {
		t.Fatalf("last seq %d, want %d", last, n)
	}
	got := rec.WaitFor(t, "r", n)
	after := slices.DeleteFunc(got, func(s int64) bool { return s <= info.LastSeq })
	if !slices.Equal(after, span(info.LastSeq+1, n)) {
		t.Fatalf("read lastSeq %d, then delivered %v…: a gap or repeat", info.LastSeq, tail(after))
	}
}

// Messages published on any node reach every node subscribed, in one
// order.
func testAcrossNodes(t *testing.T, nodes int, newBrokers Factory) {
	recs := make([]*Recorder, nodes)
	hs := make([]broker.Handler, nodes)
	for i := range recs {
		recs[i] = NewRecorder()
		hs[i] = recs[i]
	}
	bs, _ := newBrokers(t, hs)
	for _, b := range bs {
		subscribe(t, b, "r")
	}
	const each = 50
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Go(func() {
			for k := range each {
				if res := Publish(t, b, storetest.Msg("r", fmt.Sprintf("%d-%d", i, k)), ""); res.Err != nil {
					t.Errorf("node %d publish: %v", i, res.Err)
					return
				}
			}
		})
	}
	wg.Wait()
	n := int64(nodes * each)
	for i, rec := range recs {
		if got := rec.WaitFor(t, "r", n); !slices.Equal(got, span(1, n)) {
			t.Errorf("node %d delivered %v…, want 1..%d in order", i, tail(got), n)
		}
	}
}

// A relayed event reaches every other node subscribed to the room, not the
// one that relayed it, nor a node without a subscription.
func testRelay(t *testing.T, nodes int, newBrokers Factory) {
	recs := make([]*Recorder, nodes)
	hs := make([]broker.Handler, nodes)
	for i := range recs {
		recs[i] = NewRecorder()
		hs[i] = recs[i]
	}
	bs, _ := newBrokers(t, hs)
	for _, b := range bs[:nodes-1] {
		subscribe(t, b, "r")
	}
	bs[0].Relay("r", "u1", false, []byte(`{"type":"typing"}`))
	bs[0].Relay("r", "u1", true, []byte(`{"type":"presence"}`))
	want := []string{`r|u1|false|{"type":"typing"}`, `r|u1|true|{"type":"presence"}`}
	for i := 1; i < nodes-1; i++ {
		deadline := time.Now().Add(10 * time.Second)
		for len(recs[i].Relays()) < 2 && time.Now().Before(deadline) {
			select {
			case <-recs[i].wake:
			case <-time.After(10 * time.Millisecond):
			}
		}
		if got := recs[i].Relays(); !slices.Equal(got, want) {
			t.Errorf("node %d got relays %q, want %q", i, got, want)
		}
	}
	// A message after the relays: once it is delivered everywhere, any
	// relay that was going to the others has arrived too.
	Publish(t, bs[0], storetest.Msg("r", "fence"), "")
	for i := range nodes - 1 {
		recs[i].WaitFor(t, "r", 1)
	}
	if got := recs[0].Relays(); len(got) != 0 {
		t.Errorf("the relaying node got its own relays: %q", got)
	}
	if got := recs[nodes-1].Relays(); len(got) != 0 {
		t.Errorf("a node without a subscription got relays: %q", got)
	}
}

// Several joins subscribe to a new room at once while it gets messages:
// each may read history as soon as its own Subscribe returns, so none may
// return before the room's messages are delivered.
func testConcurrentSubscribe(t *testing.T, newBrokers Factory) {
	b, st, rec := one(t, newBrokers)
	const n, subscribers = 300, 8
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if res := Publish(t, b, storetest.Msg("r", fmt.Sprint(i)), ""); res.Err != nil {
				t.Errorf("publish %d: %v", i, res.Err)
				return
			}
		}
	}()
	var mu sync.Mutex
	low := int64(n)
	var wg sync.WaitGroup
	for range subscribers {
		wg.Go(func() {
			subscribe(t, b, "r")
			info, err := st.Room(context.Background(), "r")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			low = min(low, info.LastSeq)
			mu.Unlock()
		})
	}
	wg.Wait()
	<-done
	got := rec.WaitFor(t, "r", n)
	after := slices.DeleteFunc(got, func(s int64) bool { return s <= low })
	if !slices.Equal(after, span(low+1, n)) {
		t.Fatalf("a subscriber read lastSeq %d, then %d of the %d later seqs were delivered", low, len(after), n-low)
	}
}
