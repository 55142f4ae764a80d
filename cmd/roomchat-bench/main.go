// Command roomchat-bench measures roomchat against a minimal relay on the
// same WebSocket library (issue 6): fan-out throughput and latency, memory
// per idle connection, connect+join rate and connection churn. It only ever
// connects to loopback addresses, and every loop is bounded in count and
// time.
//
// Subcommands:
//
//	roomchat-bench baseline -addr 127.0.0.1:PORT
//	roomchat-bench fanout   [-server URL] [-baseline URL] -rooms R -members M -senders S -rate X -duration D -warmup W [-batch] [-find-max] [-json]
//	roomchat-bench idle     -server URL -conns N [-rooms R] [-pid PID] [-hold D]
//	roomchat-bench churn    -server URL -cycles N [-par P]
//	roomchat-bench chart    -in results.jsonl -out chart.svg
//	roomchat-bench summary  -in results.jsonl
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/proc"
	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/relay"
	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
)

var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "roomchat-bench:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: roomchat-bench <command> [flags]

commands:
  baseline  run the minimal relay server (the ceiling) on a loopback address
  fanout    R rooms x M members, S senders per room at a fixed rate; -find-max steps it up
  idle      hold N joined connections; server memory per connection, connect+join rate
  churn     connect/join/leave/close cycles; server goroutines and heap before and after
  chart     SVG of p99 latency against offered deliveries/s from -json results
  summary   the results against issue 6's budget

"roomchat-bench <command> -h" lists a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("roomchat-bench "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &report.Writer{W: stdout}
	var cpuprofile, file string
	addOut := func() {
		fs.BoolVar(&o.JSON, "json", false, "print one JSON object per result instead of a table")
		fs.StringVar(&file, "o", "", "also append one JSON object per result to this file")
		fs.StringVar(&cpuprofile, "cpuprofile", "", "write the generator's own CPU profile to this file")
	}
	defer func() {
		if cpuprofile != "" {
			pprof.StopCPUProfile()
		}
	}()
	startProfile := func() error {
		if cpuprofile == "" {
			return nil
		}
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		return pprof.StartCPUProfile(f)
	}
	switch cmd {
	case "baseline":
		addr := fs.String("addr", "127.0.0.1:9100", "loopback address to listen on")
		maxTime := fs.Duration("max-time", 2*time.Hour, "exit by itself after this long")
		if err := fs.Parse(args); err != nil {
			return err
		}
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
		log := slog.New(slog.NewTextHandler(stderr, nil))
		log.Info("listening", "addr", ln.Addr().String(), "pid", os.Getpid())
		ctx, cancel := context.WithTimeout(ctx, *maxTime)
		defer cancel()
		return relay.Serve(ctx, ln)

	case "fanout":
		var cfg fanoutConfig
		server := fs.String("server", "", "roomchat server (ws://127.0.0.1:PORT); its /ws is used")
		baseline := fs.String("baseline", "", "baseline relay (ws://127.0.0.1:PORT) to run the same scenario against and compare")
		mem := fs.String("mem", "", "a second roomchat server with -db :memory:, for the store ratio (-server's figure over this one's)")
		mpid := fs.Int("mem-pid", 0, "the -mem server's PID, to report its CPU use")
		batch := fs.Bool("batch", false, "roomchat: connect with ?batch=1 (several events per frame)")
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
		fs.IntVar(&cfg.PID, "pid", 0, "roomchat server PID, to report its CPU use")
		fs.IntVar(&cfg.RetryNoisy, "retry-noisy", 2, "find-max: repeat a failed step this often when other processes were busy during it")
		fs.DurationVar(&cfg.QuietWait, "quiet-wait", 20*time.Second, "before each step, wait up to this long for other processes to go quiet (0: don't)")
		bpid := fs.Int("baseline-pid", 0, "baseline server PID, to report its CPU use")
		fs.StringVar(&cfg.Label, "label", "", "scenario name in reports (default RxM)")
		addOut()
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *server == "" && *baseline == "" && *mem == "" {
			return errors.New("fanout needs -server, -mem, -baseline or several")
		}
		if cfg.Label == "" {
			cfg.Label = fmt.Sprintf("%dx%d", cfg.Rooms, cfg.Members)
		}
		if err := cfg.validate(); err != nil {
			return err
		}
		if err := o.Open(file); err != nil {
			return err
		}
		if err := startProfile(); err != nil {
			return err
		}
		defer o.Close()
		// Same scenario, same run, one server after the other: roomchat,
		// roomchat with the in-memory store, the relay.
		type run struct {
			url   string
			kind  kind
			label string
			pid   int
			res   *report.Fanout
		}
		runs := []*run{
			{url: *server, kind: kindRoomchat, pid: cfg.PID},
			{url: *mem, kind: kindRoomchat, label: "roomchat-mem", pid: *mpid},
			{url: *baseline, kind: kindRelay, pid: *bpid},
		}
		for _, rn := range runs {
			if rn.url == "" {
				continue
			}
			t, err := parseTarget(rn.url, rn.kind)
			if err != nil {
				return err
			}
			t.batch = *batch && rn.kind == kindRoomchat
			t.label = rn.label
			c := cfg
			c.PID = rn.pid
			r, err := runFanout(ctx, t, c, o.Emit)
			if err != nil {
				return fmt.Errorf("fanout %s: %w", t.name(), err)
			}
			rn.res = &r
		}
		if rc, bl := runs[0].res, runs[2].res; rc != nil && bl != nil {
			o.Emit(compare(*rc, *bl, cfg.FindMax, "baseline"))
		}
		if rm, bl := runs[1].res, runs[2].res; rm != nil && bl != nil {
			o.Emit(compare(*rm, *bl, cfg.FindMax, "baseline"))
		}
		if rc, rm := runs[0].res, runs[1].res; rc != nil && rm != nil {
			o.Emit(compare(*rc, *rm, cfg.FindMax, rm.Target))
		}
		return o.Close()

	case "idle":
		var cfg idleConfig
		server := fs.String("server", "", "server (ws://127.0.0.1:PORT)")
		relay := fs.Bool("relay", false, "the server is the baseline relay, not roomchat")
		fs.IntVar(&cfg.Conns, "conns", 1000, "connections to hold (capped by the open-files limit)")
		fs.IntVar(&cfg.Rooms, "rooms", 0, "rooms to spread them over (0: one per 100 connections)")
		fs.IntVar(&cfg.PID, "pid", 0, "server PID: memory from /proc/PID/status VmRSS (else /metrics)")
		fs.DurationVar(&cfg.Hold, "hold", 10*time.Second, "how long to hold them before measuring")
		fs.IntVar(&cfg.Par, "par", 64, "handshakes in flight")
		fs.IntVar(&maxPerSourceAddr, "per-addr", maxPerSourceAddr, "connections per loopback source address (more use 127.0.0.2, 127.0.0.3, …)")
		addOut()
		if err := fs.Parse(args); err != nil {
			return err
		}
		t, err := parseTarget(*server, pick(*relay))
		if err != nil {
			return err
		}
		if err := o.Open(file); err != nil {
			return err
		}
		if err := startProfile(); err != nil {
			return err
		}
		defer o.Close()
		res, err := runIdle(ctx, t, cfg)
		if err != nil {
			return fmt.Errorf("idle: %w", err)
		}
		o.Emit(res)
		return o.Close()

	case "churn":
		var cfg churnConfig
		server := fs.String("server", "", "server (ws://127.0.0.1:PORT) with /metrics")
		relay := fs.Bool("relay", false, "the server is the baseline relay, not roomchat")
		fs.IntVar(&cfg.Cycles, "cycles", 10000, "connect/join/leave/close cycles")
		fs.IntVar(&cfg.Par, "par", 16, "cycles in flight")
		fs.IntVar(&cfg.Rooms, "rooms", 16, "rooms the cycles join, round robin")
		fs.DurationVar(&cfg.MaxTime, "max-time", 5*time.Minute, "stop cycling after this long")
		fs.DurationVar(&cfg.Settle, "settle", 30*time.Second, "longest wait for the server to return to its start")
		fs.IntVar(&cfg.Slack, "slack", 2, "goroutines allowed above the start")
		fs.Float64Var(&cfg.HeapSlack, "heap-slack", 0.25, "fraction of heap in use allowed above the start (plus 1 MiB)")
		addOut()
		if err := fs.Parse(args); err != nil {
			return err
		}
		t, err := parseTarget(*server, pick(*relay))
		if err != nil {
			return err
		}
		if err := o.Open(file); err != nil {
			return err
		}
		if err := startProfile(); err != nil {
			return err
		}
		defer o.Close()
		res, err := runChurn(ctx, t, cfg)
		if err != nil {
			o.Emit(res)
			return fmt.Errorf("churn: %w", err)
		}
		o.Emit(res)
		return o.Close()

	case "summary":
		in := fs.String("in", "", "JSON-lines results (from -json or -o)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return report.WriteSummary(*in, stdout)

	case "chart":
		in := fs.String("in", "", "JSON-lines results (from -json or -o)")
		out := fs.String("out", "bench-latency.svg", "SVG file to write")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return report.WriteChart(*in, *out)

	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "roomchat-bench: unknown command %q\n%s", cmd, usage)
	return errUsage
}

func pick(relay bool) kind {
	if relay {
		return kindRelay
	}
	return kindRoomchat
}

func compare(rc, bl report.Fanout, findMax bool, versus string) report.Ratio {
	r := report.Ratio{Kind: "ratio", Scenario: rc.Scenario, Target: rc.Target, Versus: versus,
		P99: rc.P99, BaseP99: bl.P99, P999: rc.P999, BaseP999: bl.P999, Max: rc.Max, BaseMax: bl.Max}
	if findMax {
		r.Metric, r.Roomchat, r.Baseline = "maxDeliveredPerSec", rc.MaxDelivered, bl.MaxDelivered
	} else {
		r.Metric, r.Roomchat, r.Baseline = "deliveredPerSec", rc.Delivered, bl.Delivered
	}
	if r.Baseline > 0 {
		r.Ratio = round3(r.Roomchat / r.Baseline)
	}
	r.Noisy = rc.OtherCPU > noisyCores || bl.OtherCPU > noisyCores
	return r
}
