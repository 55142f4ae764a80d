package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/relay"
	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
	"github.com/roomchat/roomchat/internal/proc"
)

// commands is the command table, in the order roomchat-bench -h lists it.
// The measuring commands are scenarios (runner.go), one file each.
var commands = []*command{
	{name: "baseline", summary: "run the minimal relay server (the ceiling) on a loopback address", setup: baselineCmd},
	{name: "fanout", summary: "R rooms x M members, S senders per room at a fixed rate; -find-max steps it up", setup: scenarioCmd(func() scenario { return new(fanoutScenario) })},
	{name: "idle", summary: "hold N joined connections; server memory per connection, connect+join rate", setup: scenarioCmd(func() scenario { return new(idleScenario) })},
	{name: "storm", summary: "joined clients lose their server (SIGTERM or kill -9), it comes back; time until all are back, loss, duplicates", setup: scenarioCmd(func() scenario { return new(stormScenario) })},
	{name: "churn", summary: "connect/join/leave/close cycles; server goroutines and heap before and after", setup: scenarioCmd(func() scenario { return new(churnScenario) })},
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
