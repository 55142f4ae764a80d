package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
)

// The churn scenario: connect/join/leave/close cycles, Par at a time,
// against one server; its goroutines and heap before, at the peak and
// after, and whether they return to their start.
type churnScenario struct {
	cfg    churnConfig
	server string
	relay  bool
	t      *target // from the flags, by check
}

func (s *churnScenario) flags(fs *flag.FlagSet) {
	cfg := &s.cfg
	fs.StringVar(&s.server, "server", "", "server (ws://127.0.0.1:PORT) with /metrics")
	fs.BoolVar(&s.relay, "relay", false, "the server is the baseline relay, not roomchat")
	fs.IntVar(&cfg.Cycles, "cycles", 10000, "connect/join/leave/close cycles")
	fs.IntVar(&cfg.Par, "par", 16, "cycles in flight")
	fs.IntVar(&cfg.Rooms, "rooms", 16, "rooms the cycles join, round robin")
	fs.DurationVar(&cfg.MaxTime, "max-time", 5*time.Minute, "stop cycling after this long")
	fs.DurationVar(&cfg.Settle, "settle", 30*time.Second, "longest wait for the server to return to its start")
	fs.IntVar(&cfg.Slack, "slack", 2, "goroutines allowed above the start")
	fs.Float64Var(&cfg.HeapSlack, "heap-slack", 0.25, "fraction of heap in use allowed above the start (plus 1 MiB)")
}

func (s *churnScenario) check() error {
	t, err := parseTarget(s.server, targetKind(s.relay))
	s.t = t
	return err
}

func (s *churnScenario) measure(ctx context.Context, e *env, emit func(any)) error {
	res, err := runChurn(ctx, s.t, s.cfg)
	emit(res) // also when it failed: it says how far it got
	if err != nil {
		return fmt.Errorf("churn: %w", err)
	}
	return nil
}

type churnConfig struct {
	Cycles  int
	Par     int
	Rooms   int
	MaxTime time.Duration // bound on the cycling phase
	Settle  time.Duration // bound on waiting for the server to return to baseline
	// Slack is how far above its start the goroutine count may stay; heap
	// may stay HeapSlack (fraction) + 1 MiB above: the GC runs when it
	// likes, and nothing here forces it.
	Slack     int
	HeapSlack float64
}

// heapMetric names the heap gauge read from /metrics (client_golang's Go
// collector and the relay both export it).
const heapMetric = "go_memstats_heap_inuse_bytes"

// gcMetric counts completed GC cycles (client_golang's summary count).
const gcMetric = "go_gc_duration_seconds_count"

// runChurn checks cfg, samples the server's start (baseline), runs the
// cycles (churnCycles), then waits for the server to return to its start
// (settle).
func runChurn(ctx context.Context, t *target, cfg churnConfig) (report.Churn, error) {
	res := report.Churn{Kind: "churn", Target: t.name()}
	if cfg.Cycles < 1 || cfg.Cycles > 10_000_000 || cfg.Par < 1 || cfg.Par > 1000 {
		return res, errors.New("-cycles must be in [1, 1e7] and -par in [1, 1000]")
	}
	if cfg.MaxTime <= 0 || cfg.MaxTime > 2*time.Hour || cfg.Settle < 0 || cfg.Settle > time.Hour {
		return res, errors.New("-max-time must be in (0, 2h] and -settle in [0, 1h]")
	}
	if len(t.nodes) > 1 {
		return res, errors.New("churn measures one server: give -server one URL")
	}
	m := &churnMetrics{url: t.httpURL(0, "/metrics")}
	g0, h0, err := m.baseline(ctx)
	if err != nil {
		return res, fmt.Errorf("before: %w", err)
	}
	res.GoBefore, res.HeapBefore = g0, h0

	churnCycles(ctx, t, cfg, m, &res)

	if err := m.settle(ctx, cfg, &res); err != nil {
		return res, fmt.Errorf("after: %w", err)
	}
	for _, k := range []string{"roomchat_connections", "roomchat_rooms"} {
		if v, ok := m.last[k]; ok {
			if res.Gauges == nil {
				res.Gauges = map[string]float64{}
			}
			res.Gauges[k] = v
		}
	}
	if !res.Returned {
		res.Why = fmt.Sprintf("after %v: goroutines %.0f (start %.0f, slack %d), heap in use %.1f MiB (start %.1f MiB)",
			cfg.Settle, res.GoAfter, g0, cfg.Slack, res.HeapAfter/(1<<20), h0/(1<<20))
	}
	if res.Cycles == 0 {
		return res, fmt.Errorf("no cycle completed: %s", res.FirstError)
	}
	return res, ctx.Err()
}

// baseline samples the server until its goroutine count is unchanged over
// three samples half a second apart (at most 20 samples, 10 s), and
// returns the last goroutines and heap in use.
func (m *churnMetrics) baseline(ctx context.Context) (g0, h0 float64, err error) {
	prev, same := -1.0, 0
	for i := 0; i < 20 && same < 2; i++ {
		g, h, err := m.sample(ctx)
		if err != nil {
			return 0, 0, err
		}
		if g == prev {
			same++
		} else {
			same = 0
		}
		prev, g0, h0 = g, g, h
		if same < 2 {
			sleepUntil(ctx, time.Now().Add(500*time.Millisecond))
		}
	}
	return g0, h0, nil
}

// settle polls the server once a second, at most cfg.Settle, until its
// goroutines and heap are back within slack of res's start, recording in
// res the last sample, the GCs meanwhile, whether it returned and how long
// it took.
func (m *churnMetrics) settle(ctx context.Context, cfg churnConfig, res *report.Churn) error {
	g0, h0 := res.GoBefore, res.HeapBefore
	s0 := time.Now()
	gc0 := -1.0
	okG := func(g float64) bool { return g <= g0+float64(cfg.Slack) }
	okH := func(h float64) bool { return h <= h0*(1+cfg.HeapSlack)+(1<<20) }
	for {
		g, h, err := m.sample(ctx)
		if err != nil {
			return err
		}
		res.GoAfter, res.HeapAfter = g, h
		if gc0 < 0 {
			gc0 = m.last[gcMetric]
		}
		res.GCs = m.last[gcMetric] - gc0
		if okG(g) && okH(h) {
			res.Returned = true
			break
		}
		if time.Since(s0) >= cfg.Settle || ctx.Err() != nil {
			break
		}
		sleepUntil(ctx, time.Now().Add(time.Second))
	}
	res.SettleS = round3(time.Since(s0).Seconds())
	return nil
}

// churnMetrics samples the churned server's /metrics.
type churnMetrics struct {
	url  string
	last map[string]float64 // the last sample; one goroutine samples at a time
}

// sample scrapes the server and returns its goroutines and heap in use.
func (m *churnMetrics) sample(ctx context.Context) (g, h float64, err error) {
	s, err := scrapeMetrics(ctx, m.url)
	if err != nil {
		return 0, 0, err
	}
	m.last = s
	g, ok1 := s["go_goroutines"]
	h, ok2 := s[heapMetric]
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("%s lacks go_goroutines or %s", m.url, heapMetric)
	}
	return g, h, nil
}

// churnCycles runs the cycles: Par workers take cycle numbers until Cycles
// or MaxTime, while the server's peak goroutines and heap are sampled once
// a second. It records what was done, failed and at what rate in res.
func churnCycles(ctx context.Context, t *target, cfg churnConfig, m *churnMetrics, res *report.Churn) {
	// Round robin over 8 source addresses: each closed connection leaves a
	// TIME_WAIT entry that a later connect() from the same address must
	// search past.
	d := newDialerAddrs(8, 1)
	var (
		next, failed atomic.Int64
		firstErr     atomic.Pointer[string]
		wg           sync.WaitGroup
	)
	cctx, cancel := context.WithTimeout(ctx, cfg.MaxTime)
	defer cancel()
	runID := randID()
	rooms := max(1, cfg.Rooms)
	t0 := time.Now()
	for range cfg.Par {
		wg.Go(func() {
			for cctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(cfg.Cycles) {
					return
				}
				if err := churnCycle(cctx, d, t, int(i), fmt.Sprintf("churn-%s-r%d", runID, i%int64(rooms))); err != nil {
					if cctx.Err() != nil {
						return
					}
					failed.Add(1)
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
				}
			}
		})
	}
	stopWatching := m.watchPeak(ctx, res)
	wg.Wait()
	stopWatching()
	el := time.Since(t0)
	done := min(next.Load(), int64(cfg.Cycles))
	res.Cycles = done - failed.Load()
	res.Failed = failed.Load()
	if e := firstErr.Load(); e != nil {
		res.FirstError = *e
	}
	res.Seconds = round3(el.Seconds())
	res.Rate = round1(float64(res.Cycles) / el.Seconds())
}

// watchPeak samples the server once a second, keeping the peak goroutines
// and heap in use in res, until the returned stop is called; stop waits for
// the sampler. It is the only sampler meanwhile: call it while cycling.
func (m *churnMetrics) watchPeak(ctx context.Context, res *report.Churn) (stop func()) {
	done := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Go(func() {
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				if g, h, err := m.sample(ctx); err == nil {
					res.GoPeak, res.HeapPeak = math.Max(res.GoPeak, g), math.Max(res.HeapPeak, h)
				}
			}
		}
	})
	return func() {
		close(done)
		watcher.Wait()
	}
}

// churnCycle is one connect → join → leave → close (roomchat) or connect
// → close (relay), bounded to 10 s.
func churnCycle(ctx context.Context, d *dialer, t *target, i int, room string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := connect(ctx, d, t, i, room, 0)
	if err != nil {
		return err
	}
	if t.kind == kindRoomchat {
		if err := c.leave(ctx); err != nil {
			c.ws.CloseNow()
			return err
		}
	}
	// Close waits for the server's close frame, reading past anything
	// still queued for us.
	if err := c.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}
