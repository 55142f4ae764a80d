package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
	"github.com/roomchat/roomchat/internal/proc"
)

type idleConfig struct {
	Conns int
	Rooms int // 0: one room per 100 connections
	// PIDs are the servers' PIDs, one per node in the target's order:
	// memory from /proc/<pid>/status VmRSS (none: from /metrics).
	PIDs []int
	Hold time.Duration
	Par  int
	// RunID names the rooms (idle-RUNID-rN); empty: a random one. Several
	// generators given the same one share rooms.
	RunID string
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
	nodes := len(t.nodes)
	if len(cfg.PIDs) > 0 && len(cfg.PIDs) != nodes {
		return report.Idle{}, fmt.Errorf("-pid names %d processes for %d servers: give one per server, in the same order", len(cfg.PIDs), nodes)
	}
	res := report.Idle{Kind: "idle", Target: t.name(), Requested: cfg.Conns, Conns: cfg.Conns}
	lim := proc.RaiseFDLimit()
	if max := lim - fdReserve; res.Conns > max {
		res.Conns = max
		res.Capped = fmt.Sprintf("capped by this process's open-files limit (RLIMIT_NOFILE %d, %d kept in reserve)", lim, fdReserve)
	}
	for _, pid := range cfg.PIDs {
		// Connections are spread evenly, so a node gets at most
		// ceil(conns/nodes) of them.
		if sl := proc.FDLimit(pid); sl > 0 && res.Conns > (sl-100)*nodes {
			res.Conns = (sl - 100) * nodes
			res.Capped = fmt.Sprintf("capped by a server's open-files limit (%d)", sl)
		}
	}
	if res.Conns < 1 {
		return res, errors.New("open-files limit leaves no room for connections")
	}
	res.Rooms = cfg.Rooms
	if res.Rooms <= 0 {
		res.Rooms = max(1, res.Conns/100)
	}
	runID := cfg.RunID
	if runID == "" {
		runID = randID()
	}
	// Connection i joins room i mod Rooms, as member i / Rooms of it.
	spot := func(i int) (string, int) {
		room, member := i%res.Rooms, i/res.Rooms
		return fmt.Sprintf("idle-%s-r%d", runID, room), t.place(room, member)
	}
	perNode := make([]int, nodes)
	for i := range res.Conns {
		_, node := spot(i)
		perNode[node]++
	}

	res.Source = "/metrics"
	if len(cfg.PIDs) > 0 {
		res.Source = "VmRSS"
	}
	mem := func(node int) (int64, error) {
		if len(cfg.PIDs) > 0 {
			return proc.Status(cfg.PIDs[node], "VmRSS")
		}
		m, err := scrapeMetrics(ctx, t.httpURL(node, "/metrics"))
		if err != nil {
			return 0, err
		}
		v, ok := m["process_resident_memory_bytes"]
		if !ok {
			return 0, errors.New("/metrics has no process_resident_memory_bytes")
		}
		return int64(v), nil
	}
	// memAll reads every node's memory into into.
	memAll := func(into func(node int, bytes int64)) error {
		for k := range nodes {
			b, err := mem(k)
			if err != nil {
				return fmt.Errorf("%s: %w", t.nodes[k].Host, err)
			}
			into(k, b)
		}
		return nil
	}
	// gauges sums the nodes' gauges.
	gauges := func() map[string]float64 {
		sum := make(map[string]float64)
		for k := range nodes {
			m, _ := scrapeMetrics(ctx, t.httpURL(k, "/metrics"))
			for name, v := range m {
				sum[name] += v
			}
		}
		return sum
	}

	res.Nodes = make([]report.IdleNode, nodes)
	for k := range res.Nodes {
		res.Nodes[k] = report.IdleNode{Server: t.nodes[k].Host, Conns: perNode[k]}
		if len(cfg.PIDs) > 0 {
			res.Nodes[k].PID = cfg.PIDs[k]
		}
	}
	if err := memAll(func(k int, b int64) { res.Nodes[k].Before = b; res.Before += b }); err != nil {
		return res, fmt.Errorf("server memory before: %w", err)
	}
	res.GoBefore = gauges()["go_goroutines"]

	// One reader per connection, started as soon as it has joined,
	// discards presence events and answers the server's pings, as a real
	// idle client does (Centrifugo's pings are messages, answered by
	// cfIdle; the others' are WebSocket pings).
	var (
		readers sync.WaitGroup
		mu      sync.Mutex
		closing bool
	)
	d := newDialer(res.Conns)
	res.SrcAddrs = len(d.clients)
	cpu0 := proc.SelfCPU()
	srv0 := proc.CPUOf(cfg.PIDs)
	t0 := time.Now()
	read := func(c *conn) {
		readers.Go(func() {
			for {
				f, err := c.readFrame(context.Background())
				if err == nil && t.kind == kindCentrifugo {
					err = c.cfIdle(context.Background(), f)
				}
				if err != nil {
					mu.Lock()
					if !closing {
						res.Dropped++
						if res.FirstDrop == "" {
							res.FirstDrop = fmt.Sprintf("after %v: %v", time.Since(t0).Round(time.Millisecond), err)
						}
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	conns, err := connectAll(cctx, d, t, res.Conns, cfg.Par, spot, read)
	cancel()
	if err != nil {
		mu.Lock()
		closing = true
		mu.Unlock()
		readers.Wait() // connectAll closed what it opened
		return res, fmt.Errorf("connect %d: %w", res.Conns, err)
	}
	res.ConnectS = round3(time.Since(t0).Seconds())
	res.Rate = round1(float64(res.Conns) / time.Since(t0).Seconds())
	res.GenCPU = round3((proc.SelfCPU() - cpu0).Seconds())
	if srv1 := proc.CPUOf(cfg.PIDs); srv0 >= 0 && srv1 >= 0 {
		res.SrvCPU = round3((srv1 - srv0).Seconds())
	}
	sleepUntil(ctx, time.Now().Add(cfg.Hold))
	err = memAll(func(k int, b int64) { res.Nodes[k].After = b; res.After += b })
	g := gauges()
	mu.Lock()
	closing = true
	mu.Unlock()
	closeAllClean(conns, 64, 60*time.Second)
	readers.Wait()
	if err != nil {
		return res, fmt.Errorf("server memory after: %w", err)
	}
	res.GoAfter = g["go_goroutines"]
	res.HeapAfter = g["go_memstats_heap_inuse_bytes"]
	res.PerConn = round1(float64(res.After-res.Before) / float64(res.Conns))
	for k := range res.Nodes {
		n := &res.Nodes[k]
		if n.Conns > 0 {
			n.PerConn = round1(float64(n.After-n.Before) / float64(n.Conns))
		}
	}
	if nodes == 1 {
		res.Nodes = nil // the totals say it all
	}
	return res, ctx.Err()
}
