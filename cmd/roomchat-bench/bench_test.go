package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/relay"
	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
	"github.com/roomchat/roomchat/internal/protocol"
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

func TestFanoutRoomchatProtocol(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "batch"}[batch], func(t *testing.T) {
			fs := newFakeRoomchat(t)
			tg, err := parseTarget(fs.URL, kindRoomchat)
			if err != nil {
				t.Fatal(err)
			}
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
	fs := newFakeRoomchat(t)
	tg, err := parseTarget(fs.URL, kindRoomchat)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := runChurn(t.Context(), tg, churnConfig{Cycles: 30, Par: 3, Rooms: 2, MaxTime: 20 * time.Second, Settle: time.Second, Slack: 1000, HeapSlack: 10})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Cycles != 30 || ch.Failed != 0 {
		t.Errorf("churn = %+v", ch)
	}
}

// newFakeRoomchat serves the part of SPEC §4 the bench speaks: welcome,
// join → joined, msg → a msg event to every member, leave → left, with
// ?batch=1 packing queued events into one frame. It stands in for roomchatd
// so that the tool's roomchat path is tested without the server package.
func newFakeRoomchat(t *testing.T) *httptest.Server {
	t.Helper()
	return newFakeCluster(t, 1)[0].srv
}

// fakeNode is one server of a fake cluster.
type fakeNode struct {
	srv   *httptest.Server
	conns atomic.Int64 // WebSocket connections accepted
}

// newFakeCluster starts n fake roomchat servers that share their rooms,
// as the nodes of a cluster do: a message sent to one node reaches the
// room's members on every node.
func newFakeCluster(t *testing.T, n int) []*fakeNode {
	t.Helper()
	var (
		mu    sync.Mutex
		rooms = map[string]map[chan []byte]bool{}
		seq   int64
	)
	var nodes []*fakeNode
	for range n {
		node := &fakeNode{}
		h := http.NewServeMux()
		h.HandleFunc("GET /metrics", relay.New().ServeHTTP)
		h.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
			node.conns.Add(1)
			batch := r.URL.Query().Get("batch") == "1"
			ws, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer ws.CloseNow()
			q := make(chan []byte, 1024)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					var b []byte
					select {
					case b = <-q:
					case <-ctx.Done():
						return
					}
					if batch {
					more:
						for {
							select {
							case nb := <-q:
								b = append(append(append([]byte(nil), b...), '\n'), nb...)
							default:
								break more
							}
						}
					}
					if ws.Write(ctx, websocket.MessageText, b) != nil {
						return
					}
				}
			})
			room := ""
			q <- protocol.Encode(protocol.TypeWelcome, "", protocol.Welcome{UserID: "u", Limits: protocol.DefaultLimits()})
			for {
				_, data, err := ws.Read(ctx)
				if err != nil {
					break
				}
				env, perr := protocol.DecodeEnvelope(data)
				if perr != nil {
					q <- protocol.EncodeError(env.ID, perr)
					continue
				}
				switch env.Type {
				case protocol.TypeJoin:
					var j protocol.Join
					protocol.DecodePayload(env, &j)
					room = j.RoomID
					mu.Lock()
					if rooms[room] == nil {
						rooms[room] = map[chan []byte]bool{}
					}
					rooms[room][q] = true
					mu.Unlock()
					q <- protocol.Encode(protocol.TypeJoined, env.ID, protocol.Joined{RoomID: room})
				case protocol.TypeMsg:
					var s protocol.Send
					protocol.DecodePayload(env, &s)
					mu.Lock()
					seq++
					ev := protocol.Encode(protocol.TypeMsg, "", protocol.Message{ID: "m", RoomID: room, Seq: seq, Message: s.Message, TS: time.Now()})
					for o := range rooms[room] {
						o <- ev
					}
					mu.Unlock()
				case protocol.TypeLeave:
					mu.Lock()
					delete(rooms[room], q)
					mu.Unlock()
					q <- protocol.Encode(protocol.TypeLeft, env.ID, protocol.Left{RoomID: room})
				}
			}
			mu.Lock()
			delete(rooms[room], q)
			mu.Unlock()
			// Let the writer flush what is queued before the close handshake.
			for i := 0; i < 100 && len(q) > 0; i++ {
				time.Sleep(time.Millisecond)
			}
			cancel()
			wg.Wait()
			ws.Close(websocket.StatusNormalClosure, "")
		})
		node.srv = httptest.NewServer(h)
		t.Cleanup(node.srv.Close)
		nodes = append(nodes, node)
	}
	return nodes
}
