package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
	"github.com/roomchat/roomchat/internal/proc"
	"github.com/roomchat/roomchat/internal/protocol"
)

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

// round holds the counters of one step. Readers find the current round
// through fanoutRun.cur; old rounds' late messages carry another phase byte
// and are ignored by the new round's measured counters.
type round struct {
	measure  byte        // phase byte of this round's measured messages
	inWindow atomic.Bool // a delivery now counts toward deliveredPerSec
	window   atomic.Int64
	measured atomic.Int64 // measured deliveries received (any time)
	lat      hist
	sent     atomic.Int64 // measured messages written
}

type fanoutRun struct {
	cfg   fanoutConfig
	t     *target
	conns []*conn
	runID string

	cur         atomic.Pointer[round]
	disconnects atomic.Int64
	errs        atomic.Int64
	firstErr    atomic.Pointer[string]
	closing     atomic.Bool
	readers     sync.WaitGroup
	rounds      int
}

// errEvent is how an error event starts in a frame, as protocol.Encode
// writes it; read counts them without decoding.
var errEvent = []byte(`"type":"` + protocol.TypeError + `"`)

// setup connects every member, each with its reader.
func (r *fanoutRun) setup(ctx context.Context, d *dialer, gen int) error {
	cfg := r.cfg
	n := cfg.Rooms * cfg.Members
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute+time.Duration(n)*5*time.Millisecond)
	defer cancel()
	r.closing.Store(false)
	conns, err := connectAll(cctx, d, r.t, n, cfg.Par, func(i int) (string, int) {
		room, member := i/cfg.Members, i%cfg.Members
		return fmt.Sprintf("bench-%s-%d-r%d", r.runID, gen, room), r.t.place(room, member)
	}, func(c *conn) { r.readers.Go(func() { r.read(c) }) })
	if err != nil {
		r.closing.Store(true)
		r.readers.Wait() // connectAll closed what it opened
		return fmt.Errorf("connect %d members to %s: %w", n, r.t.name(), err)
	}
	r.conns = conns
	return nil
}

// read is a connection's only reader: it counts bench messages without
// decoding JSON and ends when the connection does.
func (r *fanoutRun) read(c *conn) {
	ctx := context.Background() // no per-read timer; teardown closes the conn
	for {
		f, err := c.readFrame(ctx)
		if err != nil {
			if !r.closing.Load() {
				r.disconnects.Add(1)
				s := fmt.Sprintf("disconnected: %v", err)
				r.firstErr.CompareAndSwap(nil, &s)
			}
			return
		}
		rd := r.cur.Load()
		if rd == nil {
			continue
		}
		now := time.Now().UnixNano()
		n := scanMsgs(f, func(ns int64, phase byte) {
			if phase == rd.measure {
				rd.measured.Add(1)
				rd.lat.record(time.Duration(now - ns))
			}
		})
		if n > 0 && rd.inWindow.Load() {
			rd.window.Add(int64(n))
		}
		if r.t.kind == kindRoomchat && bytes.Contains(f, errEvent) {
			r.errs.Add(int64(bytes.Count(f, errEvent)))
			s := fmt.Sprintf("server error event: %.300s", f)
			r.firstErr.CompareAndSwap(nil, &s)
		}
	}
}

// teardown closes every connection with a close frame (so a roomchat
// server announces the leave at once instead of after its grace period),
// bounded in time, and waits for the readers.
func (r *fanoutRun) teardown() {
	r.closing.Store(true)
	closeAllClean(r.conns, 64, 20*time.Second)
	r.readers.Wait()
	r.conns = nil
}

// closeAllClean closes conns with status 1000, up to par at a time, and
// drops whatever is still open after limit.
func closeAllClean(conns []*conn, par int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for _, c := range conns {
		if c == nil {
			continue
		}
		if time.Now().After(deadline) {
			c.ws.CloseNow()
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = c.ws.Close(websocket.StatusNormalClosure, "bench done")
		})
	}
	wg.Wait()
}

// runRound sends at rate msgs/s per sender for warm-up plus the window, then
// waits (bounded by Drain) for the measured deliveries to arrive.
func (r *fanoutRun) runRound(ctx context.Context, rate float64, step int) report.Fanout {
	cfg := r.cfg
	r.rounds++
	quiet := waitQuiet(ctx, cfg.PIDs, cfg.QuietWait)
	rd := &round{measure: byte('A' + r.rounds%26)}
	r.cur.Store(rd)
	errs0, disc0 := r.errs.Load(), r.disconnects.Load()

	start := time.Now()
	measureAt := start.Add(cfg.Warmup)
	end := measureAt.Add(cfg.Duration)
	sctx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
	defer cancel()

	totalSenders := cfg.Rooms * cfg.Senders
	var senders sync.WaitGroup
	j := 0
	for room := range cfg.Rooms {
		for s := range cfg.Senders {
			c := r.conns[room*cfg.Members+s]
			// Stagger the senders evenly over one message interval so that
			// the rooms do not all burst at the same instant.
			offset := time.Duration(float64(j) / float64(totalSenders) / rate * float64(time.Second))
			sender := j
			j++
			senders.Go(func() { r.send(sctx, c, sender, rate, start.Add(offset), measureAt, end, rd) })
		}
	}

	// The window: count deliveries from measureAt, read the CPU clocks,
	// stop at end.
	sleepUntil(ctx, measureAt)
	rd.inWindow.Store(true)
	cpu0 := proc.SelfCPU()
	srv0 := proc.CPUOf(cfg.PIDs)
	all0 := proc.MachineBusy()
	t0 := time.Now()
	sleepUntil(ctx, end)
	rd.inWindow.Store(false)
	window := time.Since(t0)
	cpu1 := proc.SelfCPU()
	srv1 := proc.CPUOf(cfg.PIDs)
	all1 := proc.MachineBusy()
	senders.Wait()

	expected := rd.sent.Load() * int64(cfg.Members)
	drainEnd := time.Now().Add(cfg.Drain)
	for rd.measured.Load() < expected && time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	received := rd.measured.Load()

	secs := window.Seconds()
	offered := rate * float64(totalSenders)
	res := report.Fanout{
		Kind: "fanout", Target: r.t.name(), Scenario: cfg.Label, Step: step,
		Rooms: cfg.Rooms, Members: cfg.Members, Senders: cfg.Senders, Rate: round3(rate),
		Seconds:           round3(secs),
		OfferedMsgs:       round1(offered),
		OfferedDeliveries: round1(offered * float64(cfg.Members)),
		SentMsgs:          round1(float64(rd.sent.Load()) / secs),
		Delivered:         round1(float64(rd.window.Load()) / secs),
		Sent:              rd.sent.Load(),
		Expected:          expected,
		Received:          received,
		Loss:              expected - received,
		Disconnects:       r.disconnects.Load() - disc0,
		ServerErrors:      r.errs.Load() - errs0,
		GenCPU:            round3((cpu1 - cpu0).Seconds() / secs),
	}
	if n := len(r.t.nodes); n > 1 {
		res.Nodes = n
	}
	other := all1 - all0 - (cpu1 - cpu0)
	if srv0 >= 0 && srv1 >= 0 {
		res.ServerCPU = round3((srv1 - srv0).Seconds() / secs)
		other -= srv1 - srv0
	}
	if all0 >= 0 && all1 >= 0 {
		res.OtherCPU = round3(max(0, other.Seconds()/secs))
	}
	if expected > 0 {
		res.LossPct = round3(100 * float64(res.Loss) / float64(expected))
	}
	snap := rd.lat.snapshot()
	res.P50 = ms(snap.quantile(0.50))
	res.P90 = ms(snap.quantile(0.90))
	res.P99 = ms(snap.quantile(0.99))
	res.P999 = ms(snap.quantile(0.999))
	res.Max = ms(time.Duration(snap.max))

	var why []string
	if res.Loss != 0 {
		why = append(why, fmt.Sprintf("loss %d", res.Loss))
	}
	if snap.quantile(0.99) > cfg.MaxP99 {
		why = append(why, fmt.Sprintf("p99 %.1fms > %v", res.P99, cfg.MaxP99))
	}
	if res.SentMsgs < 0.97*offered {
		why = append(why, fmt.Sprintf("sent %.0f msgs/s < 97%% of offered %.0f", res.SentMsgs, offered))
	}
	if res.Disconnects > 0 {
		why = append(why, fmt.Sprintf("%d disconnects", res.Disconnects))
	}
	if res.ServerErrors > 0 {
		why = append(why, fmt.Sprintf("%d server error events", res.ServerErrors))
	}
	if e := r.firstErr.Swap(nil); e != nil {
		why = append(why, *e)
	}
	res.Pass = len(why) == 0
	res.Why = strings.Join(why, "; ")
	var notes []string
	if res.GenCPU > 0.85 {
		notes = append(notes, "generator near one core: it may be the limit")
	}
	if !quiet {
		notes = append(notes, fmt.Sprintf("machine not quiet after %v", cfg.QuietWait))
	}
	if res.OtherCPU > noisyCores && len(cfg.PIDs) > 0 {
		notes = append(notes, fmt.Sprintf("other processes used %.2f cores: noisy", res.OtherCPU))
	}
	res.Note = strings.Join(notes, "; ")
	r.cur.Store(nil)
	return res
}

// send is one sender. Its message i is due at its slot, start + i/rate; a
// ticker wakes it, and each wake writes every message due by then, so the
// offered rate holds even when a tick comes late. Each message carries its
// slot, not the moment it is written: a sender held up (by the scheduler,
// or by a server that stops reading, which blocks Write) shows the delay as
// latency of the messages it owed instead of quietly sending fewer
// (coordinated omission). Messages whose slot is in [measureAt, end) are
// measured. send returns at its first wake at or after end (each wake
// before it writes all that is due, however long that takes), or when ctx
// ends; what it still owed then is missing from sentMsgsPerSec, which fails
// the step below 97 % of the offered rate.
func (r *fanoutRun) send(ctx context.Context, c *conn, sender int, rate float64, start, measureAt, end time.Time, rd *round) {
	frame, msg := msgFrame(r.t.kind)
	interval := time.Duration(float64(time.Second) / rate)
	interval = max(interval, time.Millisecond)
	if !sleepUntil(ctx, start) {
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	t0, from, to := start.UnixNano(), measureAt.UnixNano(), end.UnixNano()
	var i int64 // the next message to write
	for {
		now := time.Now().UnixNano()
		if now >= to {
			return
		}
		for ; ; i++ {
			slot := t0 + int64(float64(i)*float64(time.Second)/rate)
			if slot > now {
				break // not due yet; slot ≤ now < end below
			}
			measured := slot >= from
			ph := byte(phaseWarmup)
			if measured {
				ph = rd.measure
			}
			if r.cfg.beforeWrite != nil {
				r.cfg.beforeWrite(sender, measured)
			}
			fillMsg(msg, slot, ph)
			if err := c.ws.Write(ctx, websocket.MessageText, frame); err != nil {
				return // the reader counts the disconnect
			}
			if measured {
				rd.sent.Add(1)
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// noisyCores is how much CPU other processes may take during a window
// before its figures are called noisy.
const noisyCores = 0.25

// quietCores is how much CPU other processes may use for a step to start.
const quietCores = 0.3

// waitQuiet waits, at most maxWait, until processes other than this one and
// pids used under quietCores over half a second. It reports whether they did.
func waitQuiet(ctx context.Context, pids []int, maxWait time.Duration) bool {
	if maxWait <= 0 {
		return true
	}
	deadline := time.Now().Add(maxWait)
	for ctx.Err() == nil {
		a0, s0, p0, t0 := proc.MachineBusy(), proc.SelfCPU(), proc.CPUOf(pids), time.Now()
		sleepUntil(ctx, t0.Add(500*time.Millisecond))
		a1, s1, p1 := proc.MachineBusy(), proc.SelfCPU(), proc.CPUOf(pids)
		if a0 < 0 || a1 < 0 {
			return true // no /proc/stat: cannot tell
		}
		other := (a1 - a0) - (s1 - s0)
		if p0 >= 0 && p1 >= 0 {
			other -= p1 - p0
		}
		if other.Seconds()/time.Since(t0).Seconds() < quietCores {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
	return false
}

// sleepUntil sleeps until t or ctx ends; it reports whether t was reached.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
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
	gen := 0
	if err := r.setup(ctx, d, gen); err != nil {
		return report.Fanout{}, err
	}
	defer r.teardown()

	if !cfg.FindMax {
		res := r.runRound(ctx, cfg.Rate, 0)
		emit(res)
		return res, ctx.Err()
	}

	// find-max: multiply the rate by Step while windows pass, then bisect
	// between the last pass and the first failure Refine times.
	var best *report.Fanout
	lo, hi := 0.0, 0.0 // last passing and first failing per-sender rates
	rate := cfg.Rate
	refined, retried := 0, 0
	for step := 1; step <= cfg.MaxSteps && ctx.Err() == nil; step++ {
		res := r.runRound(ctx, rate, step)
		emit(res)
		tries := cfg.Confirm
		if res.OtherCPU > noisyCores {
			tries += cfg.RetryNoisy // someone else's burst, probably
		}
		if !res.Pass && retried < tries && res.Disconnects == 0 {
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
				return report.Fanout{}, err
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

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }
func round1(f float64) float64   { return math.Round(f*10) / 10 }
func round3(f float64) float64   { return math.Round(f*1000) / 1000 }

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
