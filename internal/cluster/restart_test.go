package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// restartRooms is how many active rooms the node is subscribed to.
const restartRooms = 1000

// restartTraffic is the background traffic, in messages per second over
// all the rooms (one per room per second), sent by another node.
const restartTraffic = 1000

// roomTracker is the node's broker.Handler: the last seq delivered per
// room, and any gap or reset. Its map is filled before the broker starts
// and only read after.
type roomTracker struct {
	last   map[string]*atomic.Int64
	gaps   atomic.Int64
	resets atomic.Int64
}

func (r *roomTracker) Deliver(m protocol.Message) {
	p := r.last[m.RoomID]
	if p == nil {
		return
	}
	if prev := p.Swap(m.Seq); m.Seq != prev+1 {
		r.gaps.Add(1)
	}
}

func (r *roomTracker) Reset(room, epoch string) {
	r.resets.Add(1)
	if p := r.last[room]; p != nil {
		p.Store(0)
	}
}

// Relayed implements broker.Handler: relayed events do not concern it.
func (r *roomTracker) Relayed(room, about string, presence bool, frame []byte) {}

// BenchmarkRedisRestartCatchUp measures what a node goes through when
// Redis is killed (SIGKILL) and restarted from its append-only file while
// the node is subscribed to 1,000 active rooms (SPEC §8: "within 10 s of
// Redis coming back it serves again by itself"). Another node keeps
// sending 1,000 messages/s round the rooms throughout (failing while
// Redis is down). Each iteration kills Redis, restarts it (restart-ms:
// until it answers PING, its AOF loaded), and at once sends one message
// to every room from the other node; then it measures, from Redis
// answering, until the node's broker reports ready (ready-ms: pub/sub
// reconnected, 1,000 channels resubscribed in batches, every room's
// position checked and caught up from its stream) and until every room's
// new message has been delivered on the node (caughtup-ms). Gaps and
// resets would be bugs: the benchmark fails on either.
//
//	go test -run '^$' -bench RedisRestart -benchtime 1x -count 5 ./internal/cluster/
func BenchmarkRedisRestartCatchUp(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	prefix := redistest.Prefix(b)
	open := func() *cluster.Store {
		st, err := cluster.Open(context.Background(), cluster.Options{URL: srv.URL(), Prefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	rooms := make([]string, restartRooms)
	tr := &roomTracker{last: make(map[string]*atomic.Int64, restartRooms)}
	for i := range rooms {
		rooms[i] = fmt.Sprintf("room-%d", i)
		tr.last[rooms[i]] = new(atomic.Int64)
	}
	// The node under test: its store and broker as roomchatd sets them up.
	nodeStore := open()
	node := cluster.NewBroker(nodeStore, cluster.BrokerOptions{})
	node.Start(tr)
	// The other node, which sends.
	sender := open()
	b.Cleanup(func() { node.Close(); nodeStore.Close(); sender.Close() })
	ctx, cancel := context.WithTimeout(b.Context(), 2*time.Minute)
	defer cancel()
	if err := node.WaitReady(ctx); err != nil {
		b.Fatalf("broker not ready: %v", err)
	}
	subscribeAll(b, node, rooms)

	// Every room gets a message, then the background traffic starts.
	if _, err := sendToAll(ctx, sender, rooms, "first"); err != nil {
		b.Fatal(err)
	}
	ones := make(map[string]int64, len(rooms))
	for _, room := range rooms {
		ones[room] = 1
	}
	waitDelivered(ctx, b, tr, ones, nil)
	stop := make(chan struct{})
	var traffic sync.WaitGroup
	var sent, failed atomic.Int64
	traffic.Go(func() { sendTraffic(sender, rooms, stop, &sent, &failed) })
	defer func() {
		close(stop)
		traffic.Wait()
	}()
	time.Sleep(200 * time.Millisecond)

	var restart, ready, caught time.Duration
	n := 0
	for b.Loop() {
		killed := time.Now()
		srv.Kill()
		srv.Restart()
		up := time.Now()
		targets, err := sendToAll(ctx, sender, rooms, "next")
		if err != nil {
			b.Fatal(err)
		}
		var readyAt time.Time
		caughtAt := waitDelivered(ctx, b, tr, targets, func() {
			if readyAt.IsZero() && node.Ready() == nil {
				readyAt = time.Now()
			}
		})
		for readyAt.IsZero() {
			if node.Ready() == nil {
				readyAt = time.Now()
				break
			}
			if ctx.Err() != nil {
				b.Fatal("the broker was not ready again within 2 minutes")
			}
			time.Sleep(time.Millisecond)
		}
		restart += up.Sub(killed)
		ready += readyAt.Sub(up)
		caught += caughtAt.Sub(up)
		n++
		b.Logf("restart %v, ready %v, caught up %v after Redis answered; broker %+v",
			up.Sub(killed).Round(time.Millisecond), readyAt.Sub(up).Round(time.Millisecond), caughtAt.Sub(up).Round(time.Millisecond), node.Stats())
	}
	b.Logf("background traffic: %d messages acked, %d failed (while Redis was down)", sent.Load(), failed.Load())
	if g, r := tr.gaps.Load(), tr.resets.Load(); g != 0 || r != 0 {
		b.Fatalf("the node delivered %d gaps and %d resets; want none (the AOF keeps every acked message)", g, r)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(n) / float64(time.Millisecond) }
	b.ReportMetric(ms(restart), "restart-ms")
	b.ReportMetric(ms(ready), "ready-ms")
	b.ReportMetric(ms(caught), "caughtup-ms")
	b.ReportMetric(float64(restartRooms), "rooms")
}

// subscribeAll subscribes b to every room, 50 at a time.
func subscribeAll(tb testing.TB, b *cluster.Broker, rooms []string) {
	tb.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	var failed atomic.Int64
	for _, room := range rooms {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := b.Subscribe(context.Background(), room); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		tb.Fatalf("%d of %d subscriptions failed", n, len(rooms))
	}
}

// sendToAll appends one message to every room and returns each room's
// acked seq. Appends that fail (Redis just came back: a connection is
// being remade) are sent again, until ctx ends.
func sendToAll(ctx context.Context, st *cluster.Store, rooms []string, text string) (map[string]int64, error) {
	seqs := make(map[string]int64, len(rooms))
	todo := rooms
	for len(todo) > 0 {
		type result struct {
			room string
			seq  int64
			err  error
		}
		results := make(chan result, len(todo))
		for _, room := range todo {
			st.Append(protocol.Message{ID: text, RoomID: room, From: protocol.User{UserID: "sender", Name: "sender"}, Message: text, TS: time.Now().UTC()}, "",
				func(m protocol.Message, _ bool, err error) { results <- result{room, m.Seq, err} })
		}
		var again []string
		var last error
		for range todo {
			r := <-results
			if r.err != nil {
				again, last = append(again, r.room), r.err
				continue
			}
			seqs[r.room] = r.seq
		}
		if len(again) > 0 {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%d rooms not sent to: %w", len(again), last)
			}
			time.Sleep(10 * time.Millisecond)
		}
		todo = again
	}
	return seqs, nil
}

// waitDelivered waits until every room's delivered seq reaches want[room]
// and returns when that happened, polling every millisecond (and calling
// poll, when not nil, at each).
func waitDelivered(ctx context.Context, tb testing.TB, tr *roomTracker, want map[string]int64, poll func()) time.Time {
	tb.Helper()
	for {
		if poll != nil {
			poll()
		}
		done := true
		for room, seq := range want {
			if tr.last[room].Load() < seq {
				done = false
				break
			}
		}
		if done {
			return time.Now()
		}
		if ctx.Err() != nil {
			tb.Fatal("rooms not caught up within 2 minutes")
		}
		time.Sleep(time.Millisecond)
	}
}

// sendTraffic appends restartTraffic messages a second round the rooms,
// in ticks of 10 ms, until stop is closed; it does not wait for acks.
func sendTraffic(st *cluster.Store, rooms []string, stop <-chan struct{}, sent, failed *atomic.Int64) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	const perTick = restartTraffic / 100
	i := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		for range perTick {
			room := rooms[i%len(rooms)]
			i++
			st.Append(protocol.Message{ID: "t", RoomID: room, From: protocol.User{UserID: "traffic", Name: "traffic"}, Message: "traffic", TS: time.Now().UTC()}, "",
				func(_ protocol.Message, _ bool, err error) {
					if err != nil {
						failed.Add(1)
					} else {
						sent.Add(1)
					}
				})
		}
	}
}
