package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
	"github.com/roomchat/roomchat/internal/proc"
)

// The idle scenario: hold N joined connections, spread over rooms (and a
// cluster's nodes); report the servers' memory per connection and the
// connect+join rate. The server is roomchat, the relay (-relay) or
// Centrifugo (-centrifugo, centrifugo.go).
type idleScenario struct {
	cfg                   idleConfig
	server, label         string
	relay, centrifugo     bool
	cfSecret, cfNamespace string
	t                     *target // from the flags, by check
}

func (s *idleScenario) flags(fs *flag.FlagSet) {
	cfg := &s.cfg
	fs.StringVar(&s.server, "server", "", "server (ws://127.0.0.1:PORT), or a cluster's nodes separated by commas (each room's members spread over them round robin)")
	fs.BoolVar(&s.relay, "relay", false, "the server is the baseline relay, not roomchat")
	fs.BoolVar(&s.centrifugo, "centrifugo", false, "the server is Centrifugo (v6, JSON protocol on /connection/websocket): connect, then subscribe to the room's channel")
	fs.StringVar(&s.cfSecret, "cf-secret", "", "Centrifugo: HMAC secret (client.token.hmac_secret_key) to sign each connection's token with, user u<i> (empty: connect anonymously)")
	fs.StringVar(&s.cfNamespace, "cf-namespace", "rooms", "Centrifugo: channel namespace of the rooms (empty: none)")
	fs.StringVar(&s.label, "label", "", "target name in reports (default: roomchat, baseline or centrifugo)")
	fs.IntVar(&cfg.Conns, "conns", 1000, "connections to hold (capped by the open-files limit)")
	fs.IntVar(&cfg.Rooms, "rooms", 0, "rooms to spread them over (0: one per 100 connections)")
	fs.Var((*pidList)(&cfg.PIDs), "pid", "server PID: memory from /proc/PID/status VmRSS (else /metrics); with several servers, one PID per server separated by commas, in the same order")
	fs.StringVar(&cfg.RunID, "run-id", "", "names the rooms idle-RUNID-rN (default random); generators given the same one share rooms")
	fs.DurationVar(&cfg.Hold, "hold", 10*time.Second, "how long to hold them before measuring")
	fs.IntVar(&cfg.Par, "par", 64, "handshakes in flight")
	fs.IntVar(&maxPerSourceAddr, "per-addr", maxPerSourceAddr, "connections per loopback source address (more use 127.0.0.2, 127.0.0.3, …)")
}

func (s *idleScenario) check() error {
	if s.relay && s.centrifugo {
		return errors.New("-relay and -centrifugo: give one")
	}
	if strings.Contains(s.cfNamespace, ":") {
		return errors.New("-cf-namespace must not contain ':'")
	}
	k := targetKind(s.relay)
	if s.centrifugo {
		k = kindCentrifugo
	}
	t, err := parseTarget(s.server, k)
	if err != nil {
		return err
	}
	t.label = s.label
	t.cfSecret, t.cfNamespace = []byte(s.cfSecret), s.cfNamespace
	s.t = t
	return nil
}

func (s *idleScenario) measure(ctx context.Context, e *env, emit func(any)) error {
	res, err := runIdle(ctx, s.t, s.cfg)
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	emit(res)
	return nil
}

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

// runIdle measures the servers' memory, connects and joins every
// connection (connectIdle), holds them for cfg.Hold, measures again and
// closes them.
func runIdle(ctx context.Context, t *target, cfg idleConfig) (report.Idle, error) {
	res, err := idleSize(t, cfg)
	if err != nil {
		return res, err
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

	srv := idleServers{t: t, pids: cfg.PIDs}
	res.Source = "/metrics"
	if len(cfg.PIDs) > 0 {
		res.Source = "VmRSS"
	}
	res.Nodes = idleNodes(t, cfg.PIDs, res.Conns, spot)
	if err := srv.memAll(ctx, func(k int, b int64) { res.Nodes[k].Before = b; res.Before += b }); err != nil {
		return res, fmt.Errorf("server memory before: %w", err)
	}
	res.GoBefore = srv.gauges(ctx)["go_goroutines"]

	fl, err := connectIdle(ctx, t, cfg, &res, spot)
	if err != nil {
		return res, err
	}
	sleepUntil(ctx, time.Now().Add(cfg.Hold))
	err = srv.memAll(ctx, func(k int, b int64) { res.Nodes[k].After = b; res.After += b })
	g := srv.gauges(ctx)
	fl.close(60 * time.Second)
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
	if len(t.nodes) == 1 {
		res.Nodes = nil // the totals say it all
	}
	return res, ctx.Err()
}

// idleNodes is each node's share of conns connections placed by spot:
// its address, its PID (when pids are given, one per node) and how many
// connections it gets.
func idleNodes(t *target, pids []int, conns int, spot func(i int) (string, int)) []report.IdleNode {
	nodes := make([]report.IdleNode, len(t.nodes))
	for k := range nodes {
		nodes[k] = report.IdleNode{Server: t.nodes[k].Host}
		if len(pids) > 0 {
			nodes[k].PID = pids[k]
		}
	}
	for i := range conns {
		_, node := spot(i)
		nodes[node].Conns++
	}
	return nodes
}

// connectIdle opens res.Conns connections, cfg.Par handshakes in flight,
// each joined to the room spot gives it, and records in res the source
// addresses, the connect+join rate and the CPU it took. One reader per
// connection, started as soon as it has joined, discards presence events
// and answers the server's pings, as a real idle client does (Centrifugo's
// pings are messages, answered by cfIdle; the others' are WebSocket
// pings); a connection the server closes is counted in res.Dropped until
// the returned fleet is closed.
func connectIdle(ctx context.Context, t *target, cfg idleConfig, res *report.Idle, spot func(i int) (string, int)) (*fleet, error) {
	var onFrame func(c *conn, f []byte) error
	if t.kind == kindCentrifugo {
		onFrame = func(c *conn, f []byte) error { return c.cfIdle(context.Background(), f) }
	}
	var mu sync.Mutex // guards res.Dropped and res.FirstDrop while the readers run
	d := newDialer(res.Conns)
	res.SrcAddrs = len(d.clients)
	m0 := markStart(cfg.PIDs)
	dropped := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Dropped++
		if res.FirstDrop == "" {
			res.FirstDrop = fmt.Sprintf("after %v: %v", time.Since(m0.at).Round(time.Millisecond), err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	fl, err := openFleet(cctx, d, t, res.Conns, cfg.Par, spot, onFrame, dropped)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("connect %d: %w", res.Conns, err)
	}
	use := m0.to(markEnd(cfg.PIDs))
	res.ConnectS = round3(use.wall.Seconds())
	res.Rate = round1(float64(res.Conns) / use.wall.Seconds())
	res.GenCPU = round3(use.self.Seconds())
	if use.srv >= 0 {
		res.SrvCPU = round3(use.srv.Seconds())
	}
	return fl, nil
}

// idleSize checks cfg against t and sizes the run: the connections it
// can hold (capped by this process's and the servers' open-files limits)
// and the rooms they join.
func idleSize(t *target, cfg idleConfig) (report.Idle, error) {
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
	return res, nil
}

// idleServers reads the memory and gauges of the idle scenario's servers.
type idleServers struct {
	t    *target
	pids []int // one per node: memory from VmRSS; none: from /metrics
}

// mem is node's resident memory in bytes.
func (s idleServers) mem(ctx context.Context, node int) (int64, error) {
	if len(s.pids) > 0 {
		return proc.Status(s.pids[node], "VmRSS")
	}
	m, err := scrapeMetrics(ctx, s.t.httpURL(node, "/metrics"))
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
func (s idleServers) memAll(ctx context.Context, into func(node int, bytes int64)) error {
	for k := range s.t.nodes {
		b, err := s.mem(ctx, k)
		if err != nil {
			return fmt.Errorf("%s: %w", s.t.nodes[k].Host, err)
		}
		into(k, b)
	}
	return nil
}

// gauges sums the nodes' gauges.
func (s idleServers) gauges(ctx context.Context) map[string]float64 {
	sum := make(map[string]float64)
	for k := range s.t.nodes {
		m, _ := scrapeMetrics(ctx, s.t.httpURL(k, "/metrics"))
		for name, v := range m {
			sum[name] += v
		}
	}
	return sum
}
