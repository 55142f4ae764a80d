package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/relay"
	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
	"github.com/roomchat/roomchat/internal/proc"
)

// commands is the command table, in the order roomchat-bench -h lists it.
var commands = []*command{
	{name: "baseline", summary: "run the minimal relay server (the ceiling) on a loopback address", setup: baselineCmd},
	{name: "fanout", summary: "R rooms x M members, S senders per room at a fixed rate; -find-max steps it up", setup: fanoutCmd},
	{name: "idle", summary: "hold N joined connections; server memory per connection, connect+join rate", setup: idleCmd},
	{name: "storm", summary: "joined clients lose their server (SIGTERM or kill -9), it comes back; time until all are back, loss, duplicates", setup: stormCmd},
	{name: "churn", summary: "connect/join/leave/close cycles; server goroutines and heap before and after", setup: churnCmd},
	{name: "chart", summary: "SVG of p99 latency against offered deliveries/s from -json results", setup: chartCmd},
	{name: "summary", summary: "the results against the budget of docs/benchmarks.md", setup: summaryCmd},
	{name: "ab", summary: "compare builds run alternately on the same scenarios (make bench-ab): each figure's ratio and its spread", setup: abCmd},
}

func baselineCmd(fs *flag.FlagSet) runFunc {
	addr := fs.String("addr", "127.0.0.1:9100", "loopback address to listen on")
	maxTime := fs.Duration("max-time", 2*time.Hour, "exit by itself after this long")
	return func(ctx context.Context, e *env) error {
		if *maxTime <= 0 {
			return errors.New("-max-time must be positive")
		}
		if err := checkLoopback(*addr); err != nil {
			return err
		}
		proc.RaiseFDLimit()
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", *addr, err)
		}
		log := slog.New(slog.NewTextHandler(e.stderr, nil))
		log.Info("listening", "addr", ln.Addr().String(), "pid", os.Getpid())
		ctx, cancel := context.WithTimeout(ctx, *maxTime)
		defer cancel()
		return relay.Serve(ctx, ln)
	}
}

func fanoutCmd(fs *flag.FlagSet) runFunc {
	var cfg fanoutConfig
	server := fs.String("server", "", "roomchat server (ws://127.0.0.1:PORT), or a cluster's nodes separated by commas (each room's members and senders spread over them round robin); its /ws is used")
	baseline := fs.String("baseline", "", "baseline relay (ws://127.0.0.1:PORT) to run the same scenario against and compare")
	mem := fs.String("mem", "", "a second roomchat server (e.g. -db :memory:, or one node to compare a cluster with): -server's figure over this one's")
	mpid := fs.Int("mem-pid", 0, "the -mem server's PID, to report its CPU use")
	batch := fs.Bool("batch", false, "roomchat: connect with ?batch=1 (several events per frame)")
	serverLabel := fs.String("server-label", "", "target name of -server in reports (default roomchat; make bench-ab names each build)")
	fs.IntVar(&cfg.Rooms, "rooms", 100, "rooms")
	fs.IntVar(&cfg.Members, "members", 100, "members per room, senders included")
	fs.IntVar(&cfg.Senders, "senders", 1, "senders per room")
	fs.Float64Var(&cfg.Rate, "rate", 2, "msgs/s per sender (the start rate with -find-max)")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured window (per step)")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "warm-up before each window")
	fs.DurationVar(&cfg.Drain, "drain", 3*time.Second, "longest wait for late deliveries after a window")
	fs.BoolVar(&cfg.FindMax, "find-max", false, "step the rate up until p99 > -max-p99, loss or disconnects")
	fs.Float64Var(&cfg.Step, "step", 1.25, "find-max: rate factor between steps")
	fs.IntVar(&cfg.MaxSteps, "max-steps", 30, "find-max: most steps, retries included")
	fs.IntVar(&cfg.Refine, "refine", 2, "find-max: bisection steps after the first failure")
	fs.DurationVar(&cfg.MaxP99, "max-p99", 250*time.Millisecond, "find-max: the p99 limit")
	fs.IntVar(&cfg.Par, "par", 64, "handshakes in flight while connecting")
	fs.Var((*pidList)(&cfg.PIDs), "pid", "roomchat server PID, to report its CPU use; several separated by commas (a cluster's nodes and its redis-server) are summed")
	fs.IntVar(&cfg.Confirm, "confirm", 1, "find-max: run a failed step again this often before counting it; a rate passes if any of its windows does")
	fs.IntVar(&cfg.RetryNoisy, "retry-noisy", 2, "find-max: repeat a failed step this much more often when other processes were busy during it")
	fs.DurationVar(&cfg.QuietWait, "quiet-wait", 20*time.Second, "before each step, wait up to this long for other processes to go quiet (0: don't)")
	bpid := fs.Int("baseline-pid", 0, "baseline server PID, to report its CPU use")
	fs.StringVar(&cfg.Label, "label", "", "scenario name in reports (default RxM)")
	out := resultFlags(fs)
	return func(ctx context.Context, e *env) error {
		if *server == "" && *baseline == "" && *mem == "" {
			return errors.New("fanout needs -server, -mem, -baseline or several")
		}
		if cfg.Label == "" {
			cfg.Label = fmt.Sprintf("%dx%d", cfg.Rooms, cfg.Members)
		}
		if err := cfg.validate(); err != nil {
			return err
		}
		// Same scenario, same run, one server after the other: roomchat,
		// roomchat with the in-memory store, the relay.
		type leg struct {
			url   string
			kind  kind
			label string
			pids  []int
			res   *report.Fanout
		}
		legs := []*leg{
			{url: *server, kind: kindRoomchat, label: *serverLabel, pids: cfg.PIDs},
			{url: *mem, kind: kindRoomchat, label: "roomchat-mem", pids: onePID(*mpid)},
			{url: *baseline, kind: kindRelay, pids: onePID(*bpid)},
		}
		return out.run(e, func(w *report.Writer) error {
			for _, l := range legs {
				if l.url == "" {
					continue
				}
				t, err := parseTarget(l.url, l.kind)
				if err != nil {
					return err
				}
				t.batch = *batch && l.kind == kindRoomchat
				t.label = l.label
				c := cfg
				c.PIDs = l.pids
				r, err := runFanout(ctx, t, c, w.Emit)
				if err != nil {
					return fmt.Errorf("fanout %s: %w", t.name(), err)
				}
				l.res = &r
			}
			if rc, bl := legs[0].res, legs[2].res; rc != nil && bl != nil {
				w.Emit(compare(*rc, *bl, cfg.FindMax, "baseline"))
			}
			if rm, bl := legs[1].res, legs[2].res; rm != nil && bl != nil {
				w.Emit(compare(*rm, *bl, cfg.FindMax, "baseline"))
			}
			if rc, rm := legs[0].res, legs[1].res; rc != nil && rm != nil {
				w.Emit(compare(*rc, *rm, cfg.FindMax, rm.Target))
			}
			return nil
		})
	}
}

func idleCmd(fs *flag.FlagSet) runFunc {
	var cfg idleConfig
	server := fs.String("server", "", "server (ws://127.0.0.1:PORT), or a cluster's nodes separated by commas (each room's members spread over them round robin)")
	isRelay := fs.Bool("relay", false, "the server is the baseline relay, not roomchat")
	isCf := fs.Bool("centrifugo", false, "the server is Centrifugo (v6, JSON protocol on /connection/websocket): connect, then subscribe to the room's channel")
	cfSecret := fs.String("cf-secret", "", "Centrifugo: HMAC secret (client.token.hmac_secret_key) to sign each connection's token with, user u<i> (empty: connect anonymously)")
	cfNamespace := fs.String("cf-namespace", "rooms", "Centrifugo: channel namespace of the rooms (empty: none)")
	label := fs.String("label", "", "target name in reports (default: roomchat, baseline or centrifugo)")
	fs.IntVar(&cfg.Conns, "conns", 1000, "connections to hold (capped by the open-files limit)")
	fs.IntVar(&cfg.Rooms, "rooms", 0, "rooms to spread them over (0: one per 100 connections)")
	fs.Var((*pidList)(&cfg.PIDs), "pid", "server PID: memory from /proc/PID/status VmRSS (else /metrics); with several servers, one PID per server separated by commas, in the same order")
	fs.StringVar(&cfg.RunID, "run-id", "", "names the rooms idle-RUNID-rN (default random); generators given the same one share rooms")
	fs.DurationVar(&cfg.Hold, "hold", 10*time.Second, "how long to hold them before measuring")
	fs.IntVar(&cfg.Par, "par", 64, "handshakes in flight")
	fs.IntVar(&maxPerSourceAddr, "per-addr", maxPerSourceAddr, "connections per loopback source address (more use 127.0.0.2, 127.0.0.3, …)")
	out := resultFlags(fs)
	return func(ctx context.Context, e *env) error {
		if *isRelay && *isCf {
			return errors.New("-relay and -centrifugo: give one")
		}
		if strings.Contains(*cfNamespace, ":") {
			return errors.New("-cf-namespace must not contain ':'")
		}
		k := targetKind(*isRelay)
		if *isCf {
			k = kindCentrifugo
		}
		t, err := parseTarget(*server, k)
		if err != nil {
			return err
		}
		t.label = *label
		t.cfSecret, t.cfNamespace = []byte(*cfSecret), *cfNamespace
		return out.run(e, func(w *report.Writer) error {
			res, err := runIdle(ctx, t, cfg)
			if err != nil {
				return fmt.Errorf("idle: %w", err)
			}
			w.Emit(res)
			return nil
		})
	}
}

func churnCmd(fs *flag.FlagSet) runFunc {
	var cfg churnConfig
	server := fs.String("server", "", "server (ws://127.0.0.1:PORT) with /metrics")
	isRelay := fs.Bool("relay", false, "the server is the baseline relay, not roomchat")
	fs.IntVar(&cfg.Cycles, "cycles", 10000, "connect/join/leave/close cycles")
	fs.IntVar(&cfg.Par, "par", 16, "cycles in flight")
	fs.IntVar(&cfg.Rooms, "rooms", 16, "rooms the cycles join, round robin")
	fs.DurationVar(&cfg.MaxTime, "max-time", 5*time.Minute, "stop cycling after this long")
	fs.DurationVar(&cfg.Settle, "settle", 30*time.Second, "longest wait for the server to return to its start")
	fs.IntVar(&cfg.Slack, "slack", 2, "goroutines allowed above the start")
	fs.Float64Var(&cfg.HeapSlack, "heap-slack", 0.25, "fraction of heap in use allowed above the start (plus 1 MiB)")
	out := resultFlags(fs)
	return func(ctx context.Context, e *env) error {
		t, err := parseTarget(*server, targetKind(*isRelay))
		if err != nil {
			return err
		}
		return out.run(e, func(w *report.Writer) error {
			res, err := runChurn(ctx, t, cfg)
			w.Emit(res) // also when it failed: it says how far it got
			if err != nil {
				return fmt.Errorf("churn: %w", err)
			}
			return nil
		})
	}
}

func chartCmd(fs *flag.FlagSet) runFunc {
	in := fs.String("in", "", "JSON-lines results (from -json or -o)")
	out := fs.String("out", "bench-latency.svg", "SVG file to write")
	return func(ctx context.Context, e *env) error { return report.WriteChart(*in, *out) }
}

func abCmd(fs *flag.FlagSet) runFunc {
	in := fs.String("in", "", "JSON-lines results of make bench-ab")
	base := fs.String("base", "base", "the builds to compare with, as the results name them, separated by commas")
	head := fs.String("head", "head", "the build compared, as the results name it")
	return func(ctx context.Context, e *env) error {
		return report.WriteAB(*in, strings.Split(*base, ","), *head, e.stdout)
	}
}

func summaryCmd(fs *flag.FlagSet) runFunc {
	in := fs.String("in", "", "JSON-lines results (from -json or -o)")
	return func(ctx context.Context, e *env) error { return report.WriteSummary(*in, e.stdout) }
}

// pidList is a flag of process IDs separated by commas.
type pidList []int

func (p *pidList) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, pid := range *p {
		s[i] = strconv.Itoa(pid)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(v string) error {
	var out []int
	for f := range strings.SplitSeq(v, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid < 0 {
			return fmt.Errorf("%q is not a process ID", f)
		}
		if pid > 0 { // 0: unknown, as the flags' default
			out = append(out, pid)
		}
	}
	*p = out
	return nil
}

// onePID is pid as a list: empty when pid is 0 (unknown).
func onePID(pid int) []int {
	if pid <= 0 {
		return nil
	}
	return []int{pid}
}

// targetKind is the kind of server a -relay flag names.
func targetKind(relay bool) kind {
	if relay {
		return kindRelay
	}
	return kindRoomchat
}

// results holds the flags of the commands that measure: where their results
// go, and the generator's own CPU profile.
type results struct {
	json       bool
	file       string
	cpuprofile string
}

func resultFlags(fs *flag.FlagSet) *results {
	r := new(results)
	fs.BoolVar(&r.json, "json", false, "print one JSON object per result instead of a table")
	fs.StringVar(&r.file, "o", "", "also append one JSON object per result to this file")
	fs.StringVar(&r.cpuprofile, "cpuprofile", "", "write the generator's own CPU profile to this file")
	return r
}

// run opens the results file and starts the CPU profile, calls measure with
// the writer its results go to, then stops the profile and closes the file.
// It returns the first error of all that.
func (r *results) run(e *env, measure func(w *report.Writer) error) (err error) {
	w := &report.Writer{W: e.stdout, JSON: r.json}
	if err := w.Open(r.file); err != nil {
		return err
	}
	defer func() { err = cmp.Or(err, w.Close()) }()
	if r.cpuprofile != "" {
		f, err := os.Create(r.cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			err = cmp.Or(err, f.Close())
		}()
	}
	return measure(w)
}
