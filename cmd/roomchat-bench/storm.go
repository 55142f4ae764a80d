package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/proc"
)

// The storm scenario (the reconnect storm of docs/benchmarks.md): rooms ×
// members joined clients lose their server (SIGTERM, or kill -9), the
// server comes back on the same database and address, and every client
// reconnects as roomchat's own clients do (internal/client's Session:
// jittered exponential backoff, resume, join with since). It reports how
// long until every member is back and caught up, messages lost and
// duplicated (both must be 0), the restarted server's peak memory, and
// the latency of the messages sent during the storm, from each one's
// intended send time.

type stormConfig struct {
	Bin     string        // roomchatd
	DB      string        // its -db
	Addr    string        // its -addr (the same after the restart)
	Rooms   int           // rooms
	Members int           // members per room, the sender included
	Rate    float64       // msgs/s sent to each room
	Signal  string        // "term" or "kill"
	Settle  time.Duration // traffic before the server is stopped
	Down    time.Duration // how long the server stays down
	Timeout time.Duration // longest wait for everyone to come back
	Par     int           // sessions opened at once
}

// stormScenario is the storm command.
type stormScenario struct {
	cfg stormConfig
}

func (s *stormScenario) flags(fs *flag.FlagSet) {
	cfg := &s.cfg
	fs.StringVar(&cfg.Bin, "roomchatd", "roomchatd", "the roomchatd binary to run (and restart)")
	fs.StringVar(&cfg.DB, "db", "", "its -db file (default: a new file in a temporary directory)")
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:9180", "its -addr, on loopback")
	fs.IntVar(&cfg.Rooms, "rooms", 100, "rooms")
	fs.IntVar(&cfg.Members, "members", 100, "members per room, the sender included")
	fs.Float64Var(&cfg.Rate, "rate", 1, "msgs/s sent to each room (by one sender)")
	fs.StringVar(&cfg.Signal, "signal", "term", "how the server is stopped: term (SIGTERM) or kill (SIGKILL)")
	fs.DurationVar(&cfg.Settle, "settle", 5*time.Second, "traffic before the server is stopped")
	fs.DurationVar(&cfg.Down, "down", time.Second, "how long the server stays down")
	fs.DurationVar(&cfg.Timeout, "timeout", 3*time.Minute, "longest wait for every member to come back")
	fs.IntVar(&cfg.Par, "par", 64, "sessions opened at once")
}

func (s *stormScenario) check() error {
	cfg := s.cfg
	if cfg.Signal != "term" && cfg.Signal != "kill" {
		return errors.New("-signal must be term or kill")
	}
	if err := checkLoopback(cfg.Addr); err != nil {
		return err
	}
	if cfg.Rooms < 1 || cfg.Members < 1 || cfg.Rate <= 0 {
		return errors.New("-rooms, -members and -rate must be positive")
	}
	return nil
}

func (s *stormScenario) measure(ctx context.Context, e *env, emit func(any)) error {
	cfg := s.cfg
	if cfg.DB == "" {
		dir, err := os.MkdirTemp("", "roomchat-storm")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.DB = dir + "/storm.db"
	}
	proc.RaiseFDLimit()
	res, err := runStorm(ctx, cfg, e)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "storm (%s): %d clients back and caught up %.0f ms after the stop (server down %.0f ms); lost %d, duplicated %d of %d acked messages; restarted server's peak RSS %.1f MiB; messages sent in the storm: p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d deliveries\n",
		res.Signal, res.Clients, res.BackMS, res.DownMS, res.Lost, res.Duplicated, res.Acked, float64(res.PeakRSSKiB)/1024, res.StormP50MS, res.StormP99MS, res.StormMaxMS, res.StormSamples)
	emit(res)
	if res.Lost > 0 || res.Duplicated > 0 {
		return fmt.Errorf("storm lost %d and duplicated %d messages", res.Lost, res.Duplicated)
	}
	return nil
}

// stormResult is what a storm run reports.
type stormResult struct {
	Kind         string  `json:"kind"` // "storm"
	Signal       string  `json:"signal"`
	Rooms        int     `json:"rooms"`
	Members      int     `json:"members"`
	Clients      int     `json:"clients"`
	BackMS       float64 `json:"backMs"`       // from the stop to the last member back and caught up
	DownMS       float64 `json:"downMs"`       // how long the server was down
	Lost         int64   `json:"lost"`         // seqs a member never got
	Duplicated   int64   `json:"duplicated"`   // seqs a member got twice
	Acked        int64   `json:"acked"`        // messages acked over the run
	PeakRSSKiB   int64   `json:"peakRssKiB"`   // the restarted server's VmHWM, once every member is back
	StormP50MS   float64 `json:"stormP50ms"`   // latency of messages sent from the stop until everyone was back
	StormP99MS   float64 `json:"stormP99ms"`   //
	StormMaxMS   float64 `json:"stormMaxms"`   //
	StormSamples int     `json:"stormSamples"` // deliveries those figures are over
}

// stormServer is the roomchatd process of a storm run.
type stormServer struct {
	cfg stormConfig
	cmd *exec.Cmd
}

func (s *stormServer) start(ctx context.Context) error {
	cmd := exec.Command(s.cfg.Bin, "-addr", s.cfg.Addr, "-db", s.cfg.DB, "-rate", "0", "-log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.cfg.Bin, err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		res, err := http.Get("http://" + s.cfg.Addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop(syscall.SIGKILL)
	return fmt.Errorf("%s did not become ready on %s within 30 s", s.cfg.Bin, s.cfg.Addr)
}

// stop signals the server and waits for it to exit.
func (s *stormServer) stop(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(sig)
	s.cmd.Wait()
	s.cmd = nil
}

// stormMember is one session and what it received.
type stormMember struct {
	sess *client.Session
	room int

	mu       sync.Mutex
	seqs     []int64   // every seq delivered, in order
	backAt   time.Time // first delivery of a message sent after the restart
	storm    []float64 // ms from intended send time, for messages sent in the storm window
	lastSent time.Time // intended send time of the last message delivered
}

// runStorm runs one storm: it starts the server, opens the members and
// their readers, starts the senders, stops and restarts the server (outage),
// waits for every member to be back, then stops sending and counts what
// each member lost or got twice (tally).
func runStorm(ctx context.Context, cfg stormConfig, e *env) (stormResult, error) {
	res := stormResult{Kind: "storm", Signal: cfg.Signal, Rooms: cfg.Rooms, Members: cfg.Members, Clients: cfg.Rooms * cfg.Members}
	srv := &stormServer{cfg: cfg}
	if err := srv.start(ctx); err != nil {
		return res, err
	}
	defer func() { srv.stop(syscall.SIGKILL) }()

	members, err := openStormMembers(ctx, "http://"+cfg.Addr, cfg)
	defer func() {
		for _, m := range members {
			m.sess.Close()
		}
	}()
	if err != nil {
		return res, fmt.Errorf("open sessions: %w", err)
	}
	fmt.Fprintf(e.stderr, "storm: %d sessions in %d rooms\n", len(members), cfg.Rooms)

	var stopAt, upAt atomic.Int64 // Unix ns: the server was stopped, came back
	rctx, cancelReaders := context.WithCancel(ctx)
	defer cancelReaders()
	var readers sync.WaitGroup
	for _, m := range members {
		readers.Go(func() { m.read(rctx, &stopAt, &upAt) })
	}

	snd := startStormSenders(ctx, cfg, members)
	defer snd.stop()

	time.Sleep(cfg.Settle)
	if err := srv.outage(ctx, e, &stopAt, &upAt); err != nil {
		snd.stop()
		return res, err
	}
	pid := srv.cmd.Process.Pid
	res.DownMS = float64(upAt.Load()-stopAt.Load()) / 1e6
	fmt.Fprintf(e.stderr, "storm: server back after %.0f ms (pid %d)\n", res.DownMS, pid)

	back, err := waitBack(members, time.Now().Add(cfg.Timeout))
	if err != nil {
		snd.stop()
		return res, fmt.Errorf("after %v, %w", cfg.Timeout, err)
	}
	res.BackMS = float64(back.UnixNano()-stopAt.Load()) / 1e6
	if hwm, err := proc.Status(pid, "VmHWM"); err == nil {
		res.PeakRSSKiB = hwm >> 10
	}

	// Stop sending, then wait until every member has its room's last
	// acked seq, and count what is missing or repeated.
	snd.stop()
	snd.wg.Wait()
	res.Acked = snd.acked.Load()
	waitCaughtUp(members, snd.lastAcked, time.Now().Add(30*time.Second))
	cancelReaders()
	readers.Wait()
	tally(&res, members, snd.lastAcked)
	return res, nil
}

// stormSenders is the storm's one sender per room and what the server
// acked them.
type stormSenders struct {
	stop      context.CancelFunc // stops sending; the senders then return
	wg        sync.WaitGroup     // the senders
	acked     atomic.Int64       // messages acked, over every room
	lastAcked []atomic.Int64     // per room, the seq of its last acked message
}

// startStormSenders starts one sender per room: the room's first member
// sends at cfg.Rate, paced (pace) from one start, the rooms staggered over
// one period; each message carries its intended send time, and a send
// blocks through the outage (the session resends with the same id after
// a reconnect). The senders run until stop or ctx ends.
func startStormSenders(ctx context.Context, cfg stormConfig, members []*stormMember) *stormSenders {
	senders := make([]*stormMember, cfg.Rooms)
	for _, m := range members {
		if senders[m.room] == nil {
			senders[m.room] = m
		}
	}
	sctx, stopSending := context.WithCancel(ctx)
	snd := &stormSenders{stop: stopSending, lastAcked: make([]atomic.Int64, cfg.Rooms)}
	start := time.Now()
	for r, s := range senders {
		period := time.Duration(float64(time.Second) / cfg.Rate)
		offset := time.Duration(r) * period / time.Duration(cfg.Rooms)
		snd.wg.Go(func() {
			pace(sctx, start.Add(offset), cfg.Rate, time.Time{}, func(slot int64) error {
				a, err := s.sess.SendMessage(sctx, "t="+strconv.FormatInt(slot, 10))
				if err != nil {
					return err
				}
				snd.acked.Add(1)
				snd.lastAcked[r].Store(a.Seq)
				return nil
			})
		})
	}
	return snd
}

// outage stops the server with the configured signal, keeps it down for
// cfg.Down and starts it again, storing in stopAt and upAt (Unix ns) when
// it was stopped and when it was back (ready).
func (s *stormServer) outage(ctx context.Context, e *env, stopAt, upAt *atomic.Int64) error {
	sig := syscall.SIGTERM
	if s.cfg.Signal == "kill" {
		sig = syscall.SIGKILL
	}
	fmt.Fprintf(e.stderr, "storm: stopping the server (%s)\n", s.cfg.Signal)
	stopAt.Store(time.Now().UnixNano())
	s.stop(sig)
	time.Sleep(s.cfg.Down)
	if err := s.start(ctx); err != nil {
		return err
	}
	upAt.Store(time.Now().UnixNano())
	return nil
}

// tally adds up, into res, the seqs each member lost or got twice up to
// its room's last acked seq, and the latency quantiles of the messages
// sent in the storm. The members' readers must have stopped.
func tally(res *stormResult, members []*stormMember, lastAcked []atomic.Int64) {
	var storm []float64
	for _, m := range members {
		lost, dup := gaps(m.seqs, lastAcked[m.room].Load())
		res.Lost += lost
		res.Duplicated += dup
		storm = append(storm, m.storm...)
	}
	slices.Sort(storm)
	res.StormSamples = len(storm)
	if len(storm) > 0 {
		res.StormP50MS = storm[len(storm)/2]
		res.StormP99MS = storm[min(len(storm)-1, len(storm)*99/100)]
		res.StormMaxMS = storm[len(storm)-1]
	}
}

// openStormMembers opens every session, rooms × members, cfg.Par at a
// time, in rooms storm-0, storm-1, … It returns those it opened, with the
// last error if any failed.
func openStormMembers(ctx context.Context, url string, cfg stormConfig) ([]*stormMember, error) {
	members := make([]*stormMember, 0, cfg.Rooms*cfg.Members)
	var mu sync.Mutex
	var openErr error
	sem := make(chan struct{}, cfg.Par)
	var wg sync.WaitGroup
	opts := client.SessionOptions{MinBackoff: client.DefaultMinBackoff, MaxBackoff: client.DefaultMaxBackoff}
	for r := range cfg.Rooms {
		for range cfg.Members {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				s, err := client.OpenSession(ctx, url, fmt.Sprint("storm-", r), opts)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					openErr = err
					return
				}
				members = append(members, &stormMember{sess: s, room: r})
			})
		}
	}
	wg.Wait()
	return members, openErr
}

// waitBack waits until every member has a message sent after the restart,
// at most until deadline, and returns when the last one got it.
func waitBack(members []*stormMember, deadline time.Time) (time.Time, error) {
	for {
		n, latest := 0, time.Time{}
		for _, m := range members {
			m.mu.Lock()
			if !m.backAt.IsZero() {
				n++
				if m.backAt.After(latest) {
					latest = m.backAt
				}
			}
			m.mu.Unlock()
		}
		if n == len(members) {
			return latest, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%d of %d members were back", n, len(members))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitCaughtUp waits, at most until deadline, until every member has its
// room's last acked seq.
func waitCaughtUp(members []*stormMember, lastAcked []atomic.Int64, deadline time.Time) {
	for _, m := range members {
		m.waitSeq(lastAcked[m.room].Load(), deadline)
	}
}

// waitSeq waits, at most until deadline, until m has received seq want.
func (m *stormMember) waitSeq(want int64, deadline time.Time) {
	for {
		m.mu.Lock()
		have := len(m.seqs) > 0 && m.seqs[len(m.seqs)-1] >= want
		m.mu.Unlock()
		if have || time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// read delivers the member's events until ctx ends, recording seqs, when
// it got its first message sent after the restart, and the latency of the
// messages sent from the stop until then.
func (m *stormMember) read(ctx context.Context, stopAt, upAt *atomic.Int64) {
	for {
		ev, err := m.sess.Next(ctx)
		if err != nil {
			return
		}
		now := time.Now()
		for _, msg := range ev.Messages() {
			sent, ok := sentAt(msg.Message)
			m.mu.Lock()
			m.seqs = append(m.seqs, msg.Seq)
			if ok {
				stop, up := stopAt.Load(), upAt.Load()
				if stop > 0 && sent.UnixNano() >= stop && m.backAt.IsZero() {
					m.storm = append(m.storm, float64(now.Sub(sent))/1e6)
				}
				if up > 0 && sent.UnixNano() >= up && m.backAt.IsZero() {
					m.backAt = now
				}
				m.lastSent = sent
			}
			m.mu.Unlock()
		}
	}
}

// sentAt reads the intended send time a storm message carries.
func sentAt(text string) (time.Time, bool) {
	ns, ok := strings.CutPrefix(text, "t=")
	if !ok {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// gaps counts, in seqs as delivered, the seqs of 1..last that never came
// and those that came more than once.
func gaps(seqs []int64, last int64) (lost, dup int64) {
	seen := make(map[int64]int, len(seqs))
	for _, s := range seqs {
		seen[s]++
	}
	for s := int64(1); s <= last; s++ {
		switch n := seen[s]; {
		case n == 0:
			lost++
		case n > 1:
			dup += int64(n - 1)
		}
	}
	return lost, dup
}
