package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/broker/brokertest"
	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

func span(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// publishAll publishes n messages to room from node b, failing the test on
// any error, and returns the last seq.
func publishAll(t *testing.T, b broker.Broker, room string, n int) int64 {
	t.Helper()
	var last int64
	for i := range n {
		res := brokertest.Publish(t, b, storetest.Msg(room, fmt.Sprint(i)), "")
		if res.Err != nil {
			t.Fatalf("publish %d: %v", i, res.Err)
		}
		last = res.Msg.Seq
	}
	return last
}

// Pub/sub loses messages when Redis kills the subscriber's connection
// (CLIENT KILL TYPE pubsub) and when its output buffer overflows a tiny
// limit: every node still delivers 1..N in order, filling each gap from
// the stream.
func TestPubSubLossIsFilled(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Args: []string{"--client-output-buffer-limit", "pubsub 2kb 1kb 1"}})
	recs := []*brokertest.Recorder{brokertest.NewRecorder(), brokertest.NewRecorder()}
	bs, _ := nodes(t, srv, []broker.Handler{recs[0], recs[1]})
	for _, b := range bs {
		if err := b.Subscribe(context.Background(), "r"); err != nil {
			t.Fatal(err)
		}
	}
	const n = 600
	publishWhileKillingPubSub(t, srv, bs, n)
	for i, rec := range recs {
		if got := rec.WaitFor(t, "r", n); !slices.Equal(got, span(1, n)) {
			t.Errorf("node %d delivered %d seqs, not 1..%d in order", i, len(got), n)
		}
		st := bs[i].Stats()
		t.Logf("node %d: %+v", i, st)
		if st.Reconnects == 0 || st.Fills == 0 {
			t.Errorf("node %d: %+v: the test lost nothing to fill", i, st)
		}
	}
}

// epochRecorder records resets too.
type epochRecorder struct {
	*brokertest.Recorder
	mu     sync.Mutex
	resets []string
}

func (r *epochRecorder) Reset(room, epoch string) {
	r.Recorder.Reset(room, epoch)
	r.mu.Lock()
	r.resets = append(r.resets, room+":"+epoch)
	r.mu.Unlock()
}

func (r *epochRecorder) Resets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.resets)
}

// FLUSHALL loses every room's history: the next message is seq 1 of a new
// epoch, and the handler is told (Reset) before it gets it.
func TestFlushAllStartsNewEpoch(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rec := &epochRecorder{Recorder: brokertest.NewRecorder()}
	bs, sts := nodes(t, srv, []broker.Handler{rec})
	b := bs[0]
	if err := b.Subscribe(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	info, _ := sts[0].Room(context.Background(), "r")
	publishAll(t, b, "r", 5)
	rec.WaitFor(t, "r", 5)
	srv.Do(srv.Client(), "FLUSHALL")
	if last := publishAll(t, b, "r", 3); last != 3 {
		t.Fatalf("after FLUSHALL the seqs went on to %d, want 1..3 again", last)
	}
	after, _ := sts[0].Room(context.Background(), "r")
	if after.Epoch == info.Epoch || after.Epoch == "" {
		t.Fatalf("epoch %q after FLUSHALL, was %q: want a new one", after.Epoch, info.Epoch)
	}
	rec.WaitFor(t, "r", 3)
	if got := rec.Seqs("r"); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Fatalf("delivered %v since the reset, want 1..3", got)
	}
	if got := rec.Resets(); !slices.Equal(got, []string{"r:" + after.Epoch}) {
		t.Fatalf("resets %v, want one to %s", got, after.Epoch)
	}
}

// With Redis killed, a publish fails within the timeout (store
// unavailable) and the node is not ready; once Redis is back (its AOF
// keeps everything acked), the node is ready again within 10 s by itself,
// nothing acked is lost, and deliveries go on in order.
func TestRedisDownAndBack(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rec := brokertest.NewRecorder()
	bs, sts := nodes(t, srv, []broker.Handler{rec})
	b := bs[0]
	if err := b.Subscribe(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	publishAll(t, b, "r", 10)
	srv.Kill()

	start := time.Now()
	res := brokertest.Publish(t, b, storetest.Msg("r", "while down"), "")
	if !errors.Is(res.Err, store.ErrUnavailable) {
		t.Fatalf("publish with Redis down: %+v, want ErrUnavailable", res)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("publish took %v to fail, want under 5 s", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	chattest.Eventually(t, 5*time.Second, func() bool { return sts[0].Ready(ctx) != nil }, "the store to say not ready after Redis died")
	cancel()
	if err := b.Subscribe(context.Background(), "other"); err == nil {
		t.Fatal("a new subscription succeeded with Redis down")
	}

	srv.Restart()
	back := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	chattest.Eventually(t, 10*time.Second, func() bool { return sts[0].Ready(ctx) == nil }, "ready after Redis came back")
	t.Logf("ready %v after Redis came back", time.Since(back).Round(time.Millisecond))
	if last := publishAll(t, b, "r", 5); last != 15 {
		t.Fatalf("after the restart the seqs went on to %d, want 15: acked messages were lost", last)
	}
	if got := rec.WaitFor(t, "r", 15); !slices.Equal(got, span(1, 15)) {
		t.Fatalf("delivered %v, want 1..15", got)
	}
	msgs, err := sts[0].Messages(context.Background(), "r", store.Query{})
	if err != nil || len(msgs) != 15 {
		t.Fatalf("history after restart: %d messages, %v", len(msgs), err)
	}
}

// A room whose policy stores nothing (SPEC §9 history size 0) cannot fill
// what pub/sub lost: each node goes on delivering the room's later
// messages, in order, instead of waiting for the missed ones forever.
func TestPubSubLossInRoomThatKeepsNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Args: []string{"--client-output-buffer-limit", "pubsub 2kb 1kb 1"}})
	keepNothing := store.Retention{Room: func(string) (int, time.Duration) { return 0, 0 }}
	recs := []*brokertest.Recorder{brokertest.NewRecorder(), brokertest.NewRecorder()}
	bs, _ := nodesWith(t, srv, redistest.Prefix(t), []broker.Handler{recs[0], recs[1]}, func(o *cluster.Options) { o.Retention = keepNothing })
	for _, b := range bs {
		if err := b.Subscribe(context.Background(), "r"); err != nil {
			t.Fatal(err)
		}
	}
	publishWhileKillingPubSub(t, srv, bs, 600)
	// One more message, after the faults: every node must deliver it.
	last := brokertest.Publish(t, bs[0], storetest.Msg("r", "after"), "")
	if last.Err != nil {
		t.Fatal(last.Err)
	}
	for i, rec := range recs {
		chattest.Eventually(t, 10*time.Second, func() bool {
			got := rec.Seqs("r")
			return len(got) > 0 && got[len(got)-1] == last.Msg.Seq
		}, "node %d delivers seq %d, the message after the faults", i, last.Msg.Seq)
		got := rec.Seqs("r")
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("node %d delivered seqs out of order or twice", i)
		}
		t.Logf("node %d delivered %d of %d seqs", i, len(got), last.Msg.Seq)
	}
}

// publishWhileKillingPubSub publishes n messages of 200+ bytes to room r
// through bs in turn while killing every pub/sub connection five times:
// with a 2 KB pub/sub buffer, the nodes miss messages.
func publishWhileKillingPubSub(t *testing.T, srv *redistest.Server, bs []*cluster.Broker, n int) {
	t.Helper()
	admin := srv.Client()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			res := brokertest.Publish(t, bs[i%len(bs)], storetest.Msg("r", fmt.Sprint(i, strings.Repeat("x", 200))), "")
			if res.Err != nil {
				t.Errorf("publish %d: %v", i, res.Err)
				return
			}
		}
	})
	for range 5 {
		time.Sleep(20 * time.Millisecond)
		srv.Do(admin, "CLIENT", "KILL", "TYPE", "pubsub")
	}
	wg.Wait()
}
