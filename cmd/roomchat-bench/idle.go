package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/proc"
	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
)

type idleConfig struct {
	Conns int
	Rooms int // 0: one room per 100 connections
	PID   int // server PID: memory from /proc/<pid>/status VmRSS
	Hold  time.Duration
	Par   int
}

// fdReserve is what this process keeps for itself besides the benchmark
// connections (stdio, metrics scrapes, the runtime).
const fdReserve = 500

func runIdle(ctx context.Context, t *target, cfg idleConfig) (report.Idle, error) {
	if cfg.Conns < 1 || cfg.Conns > 1_000_000 {
		return report.Idle{}, errors.New("-conns must be in [1, 1000000]")
	}
	if cfg.Hold < 0 || cfg.Hold > time.Hour {
		return report.Idle{}, errors.New("-hold must be in [0, 1h]")
	}
	res := report.Idle{Kind: "idle", Target: t.name(), Requested: cfg.Conns, Conns: cfg.Conns}
	lim := proc.RaiseFDLimit()
	if max := lim - fdReserve; res.Conns > max {
		res.Conns = max
		res.Capped = fmt.Sprintf("capped by this process's open-files limit (RLIMIT_NOFILE %d, %d kept in reserve)", lim, fdReserve)
	}
	if cfg.PID > 0 {
		if sl := proc.FDLimit(cfg.PID); sl > 0 && res.Conns > sl-100 {
			res.Conns = sl - 100
			res.Capped = fmt.Sprintf("capped by the server's open-files limit (%d)", sl)
		}
	}
	if res.Conns < 1 {
		return res, errors.New("open-files limit leaves no room for connections")
	}
	res.Rooms = cfg.Rooms
	if res.Rooms <= 0 {
		res.Rooms = max(1, res.Conns/100)
	}

	mem := func() (int64, error) {
		if cfg.PID > 0 {
			res.Source = "VmRSS"
			return proc.Status(cfg.PID, "VmRSS")
		}
		res.Source = "/metrics"
		m, err := scrapeMetrics(ctx, t.httpURL("/metrics"))
		if err != nil {
			return 0, err
		}
		v, ok := m["process_resident_memory_bytes"]
		if !ok {
			return 0, errors.New("/metrics has no process_resident_memory_bytes")
		}
		return int64(v), nil
	}
	gauges := func() map[string]float64 {
		m, _ := scrapeMetrics(ctx, t.httpURL("/metrics"))
		return m
	}

	before, err := mem()
	if err != nil {
		return res, fmt.Errorf("server memory before: %w", err)
	}
	res.Before = before
	res.GoBefore = gauges()["go_goroutines"]

	d := newDialer(res.Conns)
	res.SrcAddrs = len(d.clients)
	runID := randID()
	cpu0 := proc.SelfCPU()
	srv0 := proc.CPU(cfg.PID)
	t0 := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	conns, err := connectAll(cctx, d, t, res.Conns, cfg.Par, func(i int) string {
		return fmt.Sprintf("idle-%s-r%d", runID, i%res.Rooms)
	})
	cancel()
	if err != nil {
		return res, fmt.Errorf("connect %d: %w", res.Conns, err)
	}
	res.ConnectS = round3(time.Since(t0).Seconds())
	res.Rate = round1(float64(res.Conns) / time.Since(t0).Seconds())
	res.GenCPU = round3((proc.SelfCPU() - cpu0).Seconds())
	if srv1 := proc.CPU(cfg.PID); srv0 >= 0 && srv1 >= 0 {
		res.SrvCPU = round3((srv1 - srv0).Seconds())
	}

	// One reader per connection discards presence events and answers the
	// server's pings, as a real idle client does.
	var (
		readers sync.WaitGroup
		mu      sync.Mutex
		closing bool
	)
	for _, c := range conns {
		readers.Go(func() {
			for {
				if _, err := c.readFrame(context.Background()); err != nil {
					mu.Lock()
					if !closing {
						res.Dropped++
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	sleepUntil(ctx, time.Now().Add(cfg.Hold))
	after, err := mem()
	g := gauges()
	mu.Lock()
	closing = true
	mu.Unlock()
	closeAllClean(conns, 64, 60*time.Second)
	readers.Wait()
	if err != nil {
		return res, fmt.Errorf("server memory after: %w", err)
	}
	res.After = after
	res.GoAfter = g["go_goroutines"]
	res.HeapAfter = g["go_memstats_heap_inuse_bytes"]
	res.PerConn = round1(float64(after-before) / float64(res.Conns))
	return res, ctx.Err()
}
