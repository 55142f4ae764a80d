package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
	"github.com/roomchat/roomchat/internal/protocol"
)

// One window of the fanout scenario: its senders paced from a common
// start, its deliveries counted and timed by the members' readers, its
// result judged.

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

	errs0, disc0 int64 // the run's error events and disconnects when the round began
}

type fanoutRun struct {
	cfg   fanoutConfig
	t     *target
	fl    *fleet // the members, connected by setup
	runID string

	cur         atomic.Pointer[round]
	disconnects atomic.Int64
	errs        atomic.Int64
	firstErr    atomic.Pointer[string]
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
	fl, err := openFleet(cctx, d, r.t, n, cfg.Par, func(i int) (string, int) {
		room, member := i/cfg.Members, i%cfg.Members
		return fmt.Sprintf("bench-%s-%d-r%d", r.runID, gen, room), r.t.place(room, member)
	}, r.read, r.dropped)
	if err != nil {
		return fmt.Errorf("connect %d members to %s: %w", n, r.t.name(), err)
	}
	r.fl = fl
	return nil
}

// dropped counts a member's connection lost while the set is open.
func (r *fanoutRun) dropped(err error) {
	r.disconnects.Add(1)
	s := fmt.Sprintf("disconnected: %v", err)
	r.firstErr.CompareAndSwap(nil, &s)
}

// read handles one frame a member received: it counts bench messages
// without decoding JSON.
func (r *fanoutRun) read(c *conn, f []byte) error {
	rd := r.cur.Load()
	if rd == nil {
		return nil
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
	return nil
}

// teardown closes every member's connection, bounded in time, and waits
// for the readers.
func (r *fanoutRun) teardown() {
	r.fl.close(20 * time.Second)
}

// runRound sends at rate msgs/s per sender for warm-up plus the window, then
// waits (bounded by Drain) for the measured deliveries to arrive.
func (r *fanoutRun) runRound(ctx context.Context, rate float64, step int) report.Fanout {
	cfg := r.cfg
	r.rounds++
	quiet := waitQuiet(ctx, cfg.PIDs, cfg.QuietWait)
	rd := &round{measure: byte('A' + r.rounds%26)}
	r.cur.Store(rd)
	rd.errs0, rd.disc0 = r.errs.Load(), r.disconnects.Load()

	start := time.Now()
	measureAt := start.Add(cfg.Warmup)
	end := measureAt.Add(cfg.Duration)
	sctx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
	defer cancel()
	senders := r.startSenders(sctx, rd, rate, start, measureAt, end)

	// The window: count deliveries from measureAt, read the CPU clocks,
	// stop at end.
	sleepUntil(ctx, measureAt)
	rd.inWindow.Store(true)
	m0 := markStart(cfg.PIDs)
	sleepUntil(ctx, end)
	rd.inWindow.Store(false)
	use := m0.to(markEnd(cfg.PIDs))
	senders.Wait()

	expected := rd.sent.Load() * int64(cfg.Members)
	drainEnd := time.Now().Add(cfg.Drain)
	for rd.measured.Load() < expected && time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	res, p99 := r.result(rd, rate, step, use, expected)
	r.judge(&res, p99, rate*float64(cfg.Rooms*cfg.Senders), quiet)
	r.cur.Store(nil)
	return res
}

// startSenders starts every room's senders for round rd, each paced (send)
// from start plus its offset: the senders are staggered evenly over one
// message interval so that the rooms do not all burst at the same
// instant. The returned group waits for them.
func (r *fanoutRun) startSenders(ctx context.Context, rd *round, rate float64, start, measureAt, end time.Time) *sync.WaitGroup {
	cfg := r.cfg
	totalSenders := cfg.Rooms * cfg.Senders
	senders := new(sync.WaitGroup)
	j := 0
	for room := range cfg.Rooms {
		for s := range cfg.Senders {
			c := r.fl.conns[room*cfg.Members+s]
			offset := time.Duration(float64(j) / float64(totalSenders) / rate * float64(time.Second))
			sender := j
			j++
			senders.Go(func() { r.send(ctx, c, sender, rate, start.Add(offset), measureAt, end, rd) })
		}
	}
	return senders
}

// result is the figures of round rd, run at rate as find-max step step
// (0: a fixed rate), over the window use measured, once the drain is over:
// of the expected deliveries, those received by now count, the rest are
// lost. It returns the unrounded p99 beside them, for judge.
func (r *fanoutRun) result(rd *round, rate float64, step int, use cpuUse, expected int64) (report.Fanout, time.Duration) {
	cfg := r.cfg
	received := rd.measured.Load()
	secs := use.wall.Seconds()
	offered := rate * float64(cfg.Rooms*cfg.Senders)
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
		Disconnects:       r.disconnects.Load() - rd.disc0,
		ServerErrors:      r.errs.Load() - rd.errs0,
		GenCPU:            round3(use.self.Seconds() / secs),
	}
	if n := len(r.t.nodes); n > 1 {
		res.Nodes = n
	}
	if use.srv >= 0 {
		res.ServerCPU = round3(use.srv.Seconds() / secs)
	}
	if use.other >= 0 {
		res.OtherCPU = round3(use.other.Seconds() / secs)
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
	return res, snap.quantile(0.99)
}

// judge sets res's verdict: it passes without loss, disconnects or server
// errors, with p99 (unrounded) within MaxP99 and at least 97 % of the
// offered rate sent; notes say why its figures may mislead.
func (r *fanoutRun) judge(res *report.Fanout, p99 time.Duration, offered float64, quiet bool) {
	cfg := r.cfg
	var why []string
	if res.Loss != 0 {
		why = append(why, fmt.Sprintf("loss %d", res.Loss))
	}
	if p99 > cfg.MaxP99 {
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
}

// send is one sender, paced from start (pace). Messages whose slot is in
// [measureAt, end) are measured; those before are warm-up. What the sender
// still owed at end is missing from sentMsgsPerSec, which fails the step
// below 97 % of the offered rate.
func (r *fanoutRun) send(ctx context.Context, c *conn, sender int, rate float64, start, measureAt, end time.Time, rd *round) {
	frame, msg := msgFrame(r.t.kind)
	from := measureAt.UnixNano()
	pace(ctx, start, rate, end, func(slot int64) error {
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
			return err // the reader counts the disconnect
		}
		if measured {
			rd.sent.Add(1)
		}
		return nil
	})
}
