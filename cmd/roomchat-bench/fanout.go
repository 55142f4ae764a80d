package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"time"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
	"github.com/roomchat/roomchat/internal/proc"
)

// The fanout scenario: R rooms x M members, S senders per room writing at a
// fixed rate, every member receiving every message (fanout_round.go
// measures one window); with -find-max a rising series of windows. The
// same scenario runs against roomchat (-server), a second roomchat (-mem)
// and the relay (-baseline), one after the other, and the figures of each
// pair are compared.
type fanoutScenario struct {
	cfg                   fanoutConfig
	server, baseline, mem string
	memPID, baselinePID   int
	batch                 bool
	serverLabel           string
}

func (s *fanoutScenario) flags(fs *flag.FlagSet) {
	cfg := &s.cfg
	fs.StringVar(&s.server, "server", "", "roomchat server (ws://127.0.0.1:PORT), or a cluster's nodes separated by commas (each room's members and senders spread over them round robin); its /ws is used")
	fs.StringVar(&s.baseline, "baseline", "", "baseline relay (ws://127.0.0.1:PORT) to run the same scenario against and compare")
	fs.StringVar(&s.mem, "mem", "", "a second roomchat server (e.g. -db :memory:, or one node to compare a cluster with): -server's figure over this one's")
	fs.IntVar(&s.memPID, "mem-pid", 0, "the -mem server's PID, to report its CPU use")
	fs.BoolVar(&s.batch, "batch", false, "roomchat: connect with ?batch=1 (several events per frame)")
	fs.StringVar(&s.serverLabel, "server-label", "", "target name of -server in reports (default roomchat; make bench-ab names each build)")
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
	fs.IntVar(&s.baselinePID, "baseline-pid", 0, "baseline server PID, to report its CPU use")
	fs.StringVar(&cfg.Label, "label", "", "scenario name in reports (default RxM)")
}

func (s *fanoutScenario) check() error {
	if s.server == "" && s.baseline == "" && s.mem == "" {
		return errors.New("fanout needs -server, -mem, -baseline or several")
	}
	if s.cfg.Label == "" {
		s.cfg.Label = fmt.Sprintf("%dx%d", s.cfg.Rooms, s.cfg.Members)
	}
	return s.cfg.validate()
}

// measure runs the scenario against each server given, one after the
// other (roomchat, roomchat with the in-memory store, the relay), then
// compares each pair.
func (s *fanoutScenario) measure(ctx context.Context, e *env, emit func(any)) error {
	type leg struct {
		url   string
		kind  kind
		label string
		pids  []int
		res   *report.Fanout
	}
	legs := []*leg{
		{url: s.server, kind: kindRoomchat, label: s.serverLabel, pids: s.cfg.PIDs},
		{url: s.mem, kind: kindRoomchat, label: "roomchat-mem", pids: onePID(s.memPID)},
		{url: s.baseline, kind: kindRelay, pids: onePID(s.baselinePID)},
	}
	for _, l := range legs {
		if l.url == "" {
			continue
		}
		t, err := parseTarget(l.url, l.kind)
		if err != nil {
			return err
		}
		t.batch = s.batch && l.kind == kindRoomchat
		t.label = l.label
		c := s.cfg
		c.PIDs = l.pids
		r, err := runFanout(ctx, t, c, emit)
		if err != nil {
			return fmt.Errorf("fanout %s: %w", t.name(), err)
		}
		l.res = &r
	}
	findMax := s.cfg.FindMax
	if rc, bl := legs[0].res, legs[2].res; rc != nil && bl != nil {
		emit(compare(*rc, *bl, findMax, "baseline"))
	}
	if rm, bl := legs[1].res, legs[2].res; rm != nil && bl != nil {
		emit(compare(*rm, *bl, findMax, "baseline"))
	}
	if rc, rm := legs[0].res, legs[1].res; rc != nil && rm != nil {
		emit(compare(*rc, *rm, findMax, rm.Target))
	}
	return nil
}

// fanoutConfig is one fan-out scenario. Every member of a room, senders
// included, receives every message sent to the room (SPEC §4, and the
// relay forwards to the sender too), so a message costs Members deliveries.
type fanoutConfig struct {
	Rooms    int
	Members  int
	Senders  int           // per room, members 0..Senders-1
	Rate     float64       // msgs/s per sender (the start rate with FindMax)
	Duration time.Duration // measured window per step
	Warmup   time.Duration // before each measured window
	Drain    time.Duration // longest wait for stragglers after a window
	FindMax  bool
	Step     float64       // rate factor between find-max steps (1.25)
	MaxSteps int           // bound on find-max steps, refinement included
	Refine   int           // bisection steps after the first failure
	MaxP99   time.Duration // find-max limit (250 ms)
	Par      int           // handshakes in flight while connecting
	PIDs     []int         // server PIDs (a cluster's nodes, its Redis) for their CPU share; none = unknown
	// QuietWait is how long a step may wait, before it starts, for other
	// processes to use under quietCores of the machine (0: do not wait).
	// On a shared machine this keeps most steps out of others' bursts.
	QuietWait time.Duration
	// Confirm is how many times find-max runs a failed step again before
	// it counts as failed: the rate passes if any of its windows does.
	// Near saturation one stall of the server or the generator (a GC
	// cycle, the kernel) of a few hundred ms fails a 4 s window that the
	// same rate passes before and after it, and a search that stops at its
	// first failure then reports half the rate it sustains. Every target
	// gets the same number of tries, and every window is reported.
	Confirm int
	// RetryNoisy is how many more times find-max repeats a failed step
	// during which other processes took over noisyCores.
	RetryNoisy int
	Label      string // scenario name in reports, e.g. "100x100"

	// beforeWrite, when set, runs before each message a sender writes,
	// with the sender's number and whether the message is measured. Tests
	// stall a sender with it; nil otherwise.
	beforeWrite func(sender int, measured bool)
}

func (c fanoutConfig) validate() error {
	switch {
	case c.Rooms < 1 || c.Members < 1:
		return errors.New("-rooms and -members must be at least 1")
	case c.Senders < 1 || c.Senders > c.Members:
		return errors.New("-senders must be between 1 and -members")
	case c.Rate <= 0 || math.IsInf(c.Rate, 0) || math.IsNaN(c.Rate):
		return errors.New("-rate must be a positive number of msgs/s per sender")
	case c.Duration <= 0 || c.Duration > time.Hour:
		return errors.New("-duration must be in (0, 1h]")
	case c.Warmup < 0 || c.Warmup > time.Hour || c.Drain < 0 || c.Drain > time.Hour:
		return errors.New("-warmup and -drain must be in [0, 1h]")
	case c.FindMax && (c.Step <= 1 || c.MaxSteps < 1 || c.MaxSteps > 200):
		return errors.New("-step must be > 1 and -max-steps in [1, 200]")
	case c.Confirm < 0 || c.Confirm > 10 || c.RetryNoisy < 0 || c.RetryNoisy > 10:
		return errors.New("-confirm and -retry-noisy must be in [0, 10]")
	}
	return nil
}

// runFanout runs cfg against t: one window at cfg.Rate, or with FindMax a
// rising series of windows. emit gets every window's result as it ends; the
// return value is the last window (fixed rate) or the find-max summary.
func runFanout(ctx context.Context, t *target, cfg fanoutConfig, emit func(any)) (report.Fanout, error) {
	if err := cfg.validate(); err != nil {
		return report.Fanout{}, err
	}
	n := cfg.Rooms * cfg.Members
	if lim := proc.RaiseFDLimit(); n+100 > lim {
		return report.Fanout{}, fmt.Errorf("%d connections need more than this process's open-files limit (%d)", n, lim)
	}
	r := &fanoutRun{cfg: cfg, t: t, runID: randID()}
	d := newDialer(n)
	if err := r.setup(ctx, d, 0); err != nil {
		return report.Fanout{}, err
	}
	defer r.teardown()

	if !cfg.FindMax {
		res := r.runRound(ctx, cfg.Rate, 0)
		emit(res)
		return res, ctx.Err()
	}
	best, err := r.findMax(ctx, d, emit)
	if err != nil {
		return report.Fanout{}, err
	}
	sum := report.Fanout{Kind: "fanout-max", Target: t.name(), Scenario: cfg.Label,
		Rooms: cfg.Rooms, Members: cfg.Members, Senders: cfg.Senders}
	if len(t.nodes) > 1 {
		sum.Nodes = len(t.nodes)
	}
	if best != nil {
		sum = *best
		sum.Kind, sum.Step = "fanout-max", 0
		sum.MaxDelivered = best.Delivered
	} else {
		sum.Why = "no step passed"
	}
	emit(sum)
	return sum, ctx.Err()
}

// findMax runs the rising series of windows of -find-max: it multiplies
// the rate by Step while windows pass, then bisects between the last pass
// and the first failure Refine times. A failed window is run again (the
// Confirm and RetryNoisy tries) before it counts; after disconnects every
// member is reconnected to fresh rooms with d. emit gets every window; the
// result is the passing window with the most deliveries/s, nil if none
// passed. An error is a failed reconnect.
func (r *fanoutRun) findMax(ctx context.Context, d *dialer, emit func(any)) (*report.Fanout, error) {
	cfg := r.cfg
	gen := 0
	var best *report.Fanout
	lo, hi := 0.0, 0.0 // last passing and first failing per-sender rates
	rate := cfg.Rate
	refined, retried := 0, 0
	for step := 1; step <= cfg.MaxSteps && ctx.Err() == nil; step++ {
		res := r.runRound(ctx, rate, step)
		emit(res)
		if !res.Pass && retried < r.tries(res) && res.Disconnects == 0 {
			// Let the stall or the burst pass, and try again.
			retried++
			sleepUntil(ctx, time.Now().Add(min(cfg.Drain, 3*time.Second)))
			continue
		}
		retried = 0
		if res.Pass {
			lo = rate
			if best == nil || res.Delivered > best.Delivered {
				b := res
				best = &b
			}
		} else {
			hi = rate
		}
		if res.Disconnects > 0 {
			// The set is damaged: reconnect every member to fresh rooms.
			r.teardown()
			gen++
			if err := r.setup(ctx, d, gen); err != nil {
				return nil, err
			}
		} else if !res.Pass {
			// Let a backlog behind a failing step clear before the next.
			sleepUntil(ctx, time.Now().Add(min(cfg.Drain, 3*time.Second)))
		}
		if hi == 0 {
			rate *= cfg.Step
			continue
		}
		if lo == 0 {
			// The start rate already fails: go down instead.
			rate /= cfg.Step * cfg.Step
			if rate < 1e-3 {
				break
			}
			continue
		}
		if refined >= cfg.Refine || hi/lo < 1.02 {
			break
		}
		refined++
		rate = (lo + hi) / 2
	}
	return best, nil
}

// tries is how often find-max runs a window that failed like res again
// before it counts: Confirm times, and RetryNoisy more when other
// processes were busy during it.
func (r *fanoutRun) tries(res report.Fanout) int {
	tries := r.cfg.Confirm
	if res.OtherCPU > noisyCores {
		tries += r.cfg.RetryNoisy // someone else's burst, probably
	}
	return tries
}

// compare is rc's figure over bl's, measured in the same run: max
// sustained deliveries/s with findMax, else delivered/s at the fixed rate.
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
