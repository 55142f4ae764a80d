package main

import (
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/relay"
	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
	"github.com/roomchat/roomchat/internal/chattest"
)

// These tests check the tool's bookkeeping, never timing: no assertion
// depends on how fast this machine is.

func newRelayServer(t *testing.T) *target {
	t.Helper()
	srv := httptest.NewServer(relay.New())
	t.Cleanup(srv.Close)
	tg, err := parseTarget(srv.URL, kindRelay)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// newRoomchatServer starts the real server in-process on the in-memory
// store, with no per-connection rate limit (as make bench runs roomchatd:
// -rate 0).
func newRoomchatServer(t *testing.T) *target {
	t.Helper()
	ts := chattest.StartInProcess(t, chattest.NoRate)
	tg, err := parseTarget(ts.URL, kindRoomchat)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func smallFanout() fanoutConfig {
	return fanoutConfig{
		Rooms: 2, Members: 3, Senders: 1, Rate: 20,
		Duration: time.Second, Warmup: 200 * time.Millisecond, Drain: 5 * time.Second,
		Step: 1.25, MaxSteps: 3, MaxP99: 250 * time.Millisecond, Par: 4, Label: "2x3",
	}
}

// checkCounts asserts what holds however fast the machine is: nothing lost,
// and every measured message reached every member of its room.
func checkCounts(t *testing.T, res report.Fanout, cfg fanoutConfig) {
	t.Helper()
	sent := res.Sent
	if sent == 0 {
		t.Fatalf("nothing sent: %+v", res)
	}
	if res.Expected != sent*int64(cfg.Members) {
		t.Errorf("expected = %d, want sent %d × members %d", res.Expected, sent, cfg.Members)
	}
	if res.Loss != 0 || res.Received != res.Expected {
		t.Errorf("received %d of %d (loss %d), want all", res.Received, res.Expected, res.Loss)
	}
	if res.Disconnects != 0 || res.ServerErrors != 0 {
		t.Errorf("disconnects %d, server errors %d, want 0 (%s)", res.Disconnects, res.ServerErrors, res.Why)
	}
	if res.P50 <= 0 || res.P50 > res.P99 || res.P99 > res.P999 || res.P999 > res.Max {
		t.Errorf("latency not ordered: p50 %v p99 %v p99.9 %v max %v", res.P50, res.P99, res.P999, res.Max)
	}
	if res.OfferedDeliveries != res.OfferedMsgs*float64(cfg.Members) {
		t.Errorf("offered deliveries %v, want %v × %d", res.OfferedDeliveries, res.OfferedMsgs, cfg.Members)
	}
}

func TestFanoutBaseline(t *testing.T) {
	tg := newRelayServer(t)
	cfg := smallFanout()
	var emitted []any
	res, err := runFanout(t.Context(), tg, cfg, func(v any) { emitted = append(emitted, v) })
	if err != nil {
		t.Fatal(err)
	}
	if len(emitted) != 1 {
		t.Errorf("emitted %d results, want 1", len(emitted))
	}
	checkCounts(t, res, cfg)
}

// TestLatencyFromSchedule stalls one sender for a known time at its first
// measured message. The messages it owed meanwhile go out late, so their
// latency, taken from their scheduled send time, includes the stall: max
// must be at least the stall. Latency taken from the moment of writing
// would hide it (coordinated omission) and fail this test.
func TestLatencyFromSchedule(t *testing.T) {
	tg := newRelayServer(t)
	cfg := smallFanout()
	cfg.Duration = 2 * time.Second
	const stall = time.Second
	var once sync.Once
	cfg.beforeWrite = func(sender int, measured bool) {
		if sender == 0 && measured {
			once.Do(func() { time.Sleep(stall) })
		}
	}
	res, err := runFanout(t.Context(), tg, cfg, func(any) {})
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, res, cfg)
	if want := ms(stall); res.Max < want {
		t.Errorf("max latency %.1f ms after a %v stall of the sender, want at least %.0f ms", res.Max, stall, want)
	}
}

// TestFindMaxConfirms stalls one sender in find-max's first window only:
// that window fails, and the same rate runs again and passes, so the
// search does not take the stall for the server's limit.
func TestFindMaxConfirms(t *testing.T) {
	tg := newRelayServer(t)
	cfg := smallFanout()
	cfg.FindMax, cfg.MaxSteps, cfg.Confirm = true, 2, 1
	var once sync.Once
	cfg.beforeWrite = func(sender int, measured bool) {
		if sender == 0 && measured {
			once.Do(func() { time.Sleep(3 * cfg.MaxP99) })
		}
	}
	var windows []report.Fanout
	var sum report.Fanout
	_, err := runFanout(t.Context(), tg, cfg, func(v any) {
		if r := v.(report.Fanout); r.Kind == "fanout" {
			windows = append(windows, r)
		} else {
			sum = r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(windows) != 2 {
		t.Fatalf("%d windows, want 2", len(windows))
	}
	if w := windows[0]; w.Pass || w.Rate != cfg.Rate {
		t.Errorf("first window at %v msgs/s passed %v (p99 %.1f ms), want a failure at %v", w.Rate, w.Pass, w.P99, cfg.Rate)
	}
	if w := windows[1]; !w.Pass || w.Rate != cfg.Rate {
		t.Errorf("second window at %v msgs/s passed %v (%s), want the same rate, passed", w.Rate, w.Pass, w.Why)
	}
	if sum.MaxDelivered == 0 {
		t.Errorf("summary %+v: no rate passed", sum)
	}
}

func TestFanoutRoomchatProtocol(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "batch"}[batch], func(t *testing.T) {
			tg := newRoomchatServer(t)
			tg.batch = batch
			cfg := smallFanout()
			res, err := runFanout(t.Context(), tg, cfg, func(any) {})
			if err != nil {
				t.Fatal(err)
			}
			checkCounts(t, res, cfg)
		})
	}
}

func TestFindMaxBounded(t *testing.T) {
	tg := newRelayServer(t)
	cfg := smallFanout()
	cfg.FindMax, cfg.Duration, cfg.Warmup, cfg.MaxSteps = true, 300*time.Millisecond, 100*time.Millisecond, 2
	var steps int
	var sum report.Fanout
	_, err := runFanout(t.Context(), tg, cfg, func(v any) {
		r := v.(report.Fanout)
		if r.Kind == "fanout" {
			steps++
		} else {
			sum = r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if steps > cfg.MaxSteps {
		t.Errorf("ran %d steps, want at most %d", steps, cfg.MaxSteps)
	}
	if sum.Kind != "fanout-max" {
		t.Errorf("no fanout-max summary")
	}
}

func TestIdleAndChurnBaseline(t *testing.T) {
	tg := newRelayServer(t)
	res, err := runIdle(t.Context(), tg, idleConfig{Conns: 20, Rooms: 2, PIDs: []int{os.Getpid()}, Par: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Conns != 20 || res.Rate <= 0 || res.Dropped != 0 || res.Source != "VmRSS" {
		t.Errorf("idle = %+v", res)
	}
	ch, err := runChurn(t.Context(), tg, churnConfig{Cycles: 50, Par: 4, Rooms: 2, MaxTime: 20 * time.Second, Settle: time.Second, Slack: 1000, HeapSlack: 10})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Cycles != 50 || ch.Failed != 0 || ch.GoBefore <= 0 {
		t.Errorf("churn = %+v", ch)
	}
}

func TestChurnRoomchatProtocol(t *testing.T) {
	tg := newRoomchatServer(t)
	ch, err := runChurn(t.Context(), tg, churnConfig{Cycles: 30, Par: 3, Rooms: 2, MaxTime: 20 * time.Second, Settle: time.Second, Slack: 1000, HeapSlack: 10})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Cycles != 30 || ch.Failed != 0 {
		t.Errorf("churn = %+v", ch)
	}
}
