package main

// The cluster chaos campaign (make chaos-cluster, docs/reliability.md):
// SPEC §8's guarantees checked against three roomchatd nodes behind nginx
// on a Sentinel-managed Redis (a primary, two replicas, three Sentinels;
// -redis-wait 2) while a driver, cycle after cycle, kills a node with
// SIGKILL and restarts it, stops the Redis primary (SIGSTOP) and continues
// it, kills the nodes' pub/sub connections (CLIENT KILL TYPE pubsub) and
// fails the primary over (SENTINEL FAILOVER), then waits until both
// replicas are in sync again. -redis-wait is the number of replicas: a
// failover while the old primary still runs (SENTINEL FAILOVER, a stopped
// primary that wakes up) leaves it taking writes for a moment with a
// replica that the new primary will overwrite still attached, and only an
// ack that waited for every replica is on the one promoted
// (docs/operations.md).
//
// Through nginx, writers send messages with ids and retry what is refused
// or unanswered, resuming with their token (chaosWriter); a reader joins
// with since after every drop and checks that it gets every seq once per
// epoch; observers stay in the room and record the presence events they
// get. At the end the stored history is read through nginx and checked:
// lost (an acked id not stored, or stored under another seq) and
// duplicated (an id stored twice) must be 0, and so must presence
// flickers: a leave of an observer that had not dropped in the 35 s
// before (a node's members leave within 30 s of its death, SPEC §8).
//
// ROOMCHAT_CHAOS_CLUSTER=<minutes> runs the campaign for that long (make
// chaos-cluster: CHAOS_MINUTES, 30); without it 3 cycles run, except
// under -short. A campaign that fails keeps, in a new directory under
// the system's temporary one (or always, in ROOMCHAT_CHAOS_OUT), what is
// needed to explain it afterwards: every Redis server's and Sentinel's
// log, the nodes' and nginx's logs, the driver's faults, the data
// servers' roles and the clients' acks and refusals, all by time.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// chaosClusterEnv names the environment variable that sets the campaign's
// length in minutes and turns the full campaign on.
const chaosClusterEnv = "ROOMCHAT_CHAOS_CLUSTER"

// chaosOutEnv names the environment variable of the directory where a
// campaign keeps its logs and timelines, failed or not.
const chaosOutEnv = "ROOMCHAT_CHAOS_OUT"

// flickerWindow is how long after an observer's drop a leave of it is
// explained by the drop: the 30 s within which a dead node's members
// leave (SPEC §8), and a margin.
const flickerWindow = 35 * time.Second

func TestChaosCluster(t *testing.T) {
	cycles, length := 3, time.Duration(0)
	if v := os.Getenv(chaosClusterEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a number of minutes ≥ 1", chaosClusterEnv, v)
		}
		cycles, length = 0, time.Duration(n)*time.Minute
	} else if testing.Short() {
		t.Skip("the cluster chaos campaign; " + chaosClusterEnv + "=<minutes> runs it in full")
	} else {
		t.Parallel() // its own Redis, nodes and nginx
	}
	runChaosCluster(t, cycles, length)
}

// presenceSeen is one presence event an observer got.
type presenceSeen struct {
	at     time.Time
	event  string
	userID string
}

// chaosObserver stays in the room through nginx, reconnecting with its
// token whenever its connection drops, and records its drops and the
// presence events it gets.
type chaosObserver struct {
	r    *chaosRun
	name string

	mu     sync.Mutex     // guards the fields below
	userID string         // its own, from the first welcome
	drops  []time.Time    // when a connection of its ended
	events []presenceSeen // presence events about others
}

func (o *chaosObserver) run(ctx context.Context) {
	token := ""
	for ctx.Err() == nil {
		c, _, err := o.r.dial(ctx, token, o.name, 0)
		if err != nil {
			pause(ctx)
			continue
		}
		o.mu.Lock()
		if o.userID == "" {
			o.userID = c.Welcome().UserID
		} else if id := c.Welcome().UserID; id != o.userID {
			o.r.found("observer %s: resumed as user %s, want %s", o.name, id, o.userID)
			o.userID = id
		}
		o.mu.Unlock()
		token = c.Welcome().Resume
		for {
			env, _, err := c.Next(ctx)
			if err != nil {
				break
			}
			if env.Type != protocol.TypePresence {
				continue
			}
			var p protocol.Presence
			if protocol.DecodePayload(env, &p) != nil {
				continue
			}
			o.mu.Lock()
			o.events = append(o.events, presenceSeen{at: time.Now(), event: p.Event, userID: p.User.UserID})
			o.mu.Unlock()
		}
		c.CloseNow()
		if ctx.Err() == nil {
			o.mu.Lock()
			o.drops = append(o.drops, time.Now())
			o.mu.Unlock()
			pause(ctx)
		}
	}
}

// chaosReader reads the room through nginx as a client that must miss
// nothing: after every drop it joins with since its last seq, completes
// joined with history pages, then takes live msg events; within one epoch
// every seq must come once, in order. A new epoch (a room that lost
// writes in Redis, SPEC §8) starts it over from that epoch's joined.
type chaosReader struct {
	r *chaosRun

	last atomic.Int64 // the last seq delivered in the current epoch; read while it runs

	// Owned by run until it returns.
	token  string
	epoch  string
	epochs int            // epoch changes seen
	ids    map[string]int // deliveries by message ID within the current epoch
	seen   map[string]bool
	twice  int // a message ID delivered twice within one epoch
	// lastJoined describes the last joined taken, for the findings.
	lastJoined string
}

func (rd *chaosReader) run(ctx context.Context) {
	for ctx.Err() == nil {
		since := rd.last.Load()
		c, j, err := rd.r.dial(ctx, rd.token, "reader", since)
		if err != nil {
			pause(ctx)
			continue
		}
		rd.token = c.Welcome().Resume
		rd.follow(ctx, c, j)
		c.CloseNow()
		pause(ctx)
	}
}

// joined takes a joined reply or push: the same epoch continues, another
// one starts over.
func (rd *chaosReader) joined(j protocol.Joined, how string) {
	rd.lastJoined = fmt.Sprintf("%s joined: epoch %s, lastSeq %d, %d in history, more %v, truncated %v, at seq %d of epoch %s",
		how, j.Epoch, j.LastSeq, len(j.History), j.More, j.Truncated, rd.last.Load(), rd.epoch)
	if len(j.History) > 0 {
		rd.lastJoined += fmt.Sprintf(", history from seq %d", j.History[0].Seq)
	}
	rd.r.events.add("reader: %s", rd.lastJoined)
	if j.Epoch != rd.epoch {
		if rd.epoch != "" {
			rd.epochs++
		}
		rd.epoch = j.Epoch
		clear(rd.ids)
		first := j.LastSeq
		if len(j.History) > 0 {
			first = j.History[0].Seq - 1
		}
		rd.last.Store(first)
	}
	for _, m := range j.History {
		rd.deliver(m, "joined")
	}
}

func (rd *chaosReader) deliver(m protocol.Message, how string) {
	last := rd.last.Load()
	if m.Seq <= last {
		return // a joined's history may overlap what was delivered live
	}
	if m.Seq != last+1 {
		rd.r.found("reader: %s message seq %d after seq %d in epoch %s (a gap); the last %s", how, m.Seq, last, rd.epoch, rd.lastJoined)
	}
	rd.last.Store(m.Seq)
	rd.ids[m.ID]++
	if rd.ids[m.ID] > 1 {
		rd.twice++
		rd.r.found("reader: message %s delivered twice in epoch %s", m.ID, rd.epoch)
	}
	rd.seen[m.ID] = true
}

func (rd *chaosReader) follow(ctx context.Context, c *client.Conn, j protocol.Joined) {
	rd.joined(j, "reply")
	if !rd.catchUp(ctx, c, j) {
		return
	}
	for {
		env, _, err := c.Next(ctx)
		if err != nil {
			return
		}
		switch env.Type {
		case protocol.TypeJoined:
			var pj protocol.Joined
			if protocol.DecodePayload(env, &pj) == nil && pj.RoomID == chaosRoom {
				// A pushed joined (the room started over at a new epoch)
				// carries the epoch's oldest page: the rest comes with
				// history, as after a reply (SPEC §4 catch-up).
				rd.joined(pj, "pushed")
				if !rd.catchUp(ctx, c, pj) {
					return
				}
			}
		case protocol.TypeMsg:
			var m protocol.Message
			if perr := protocol.DecodePayload(env, &m); perr != nil {
				rd.r.found("reader: bad msg %s: %v", env.Payload, perr)
				continue
			}
			rd.deliver(m, "live")
		}
	}
}

// catchUp pages with history after joined j while it says more, up to its
// lastSeq; live messages wait in the connection's queue meanwhile. It
// reports false when the connection failed (the reader dials again).
func (rd *chaosReader) catchUp(ctx context.Context, c *client.Conn, j protocol.Joined) bool {
	for more := j.More && j.Epoch == rd.epoch; more && rd.last.Load() < j.LastSeq; {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := c.History(pctx, chaosRoom, rd.last.Load(), 0)
		cancel()
		if err != nil {
			// Redis away or the connection gone: the reader dials again
			// and joins with since, which must lose nothing either.
			var pe *protocol.Error
			var ce *client.ConnError
			if ctx.Err() == nil && !errors.As(err, &ce) && !(errors.As(err, &pe) && pe.Code == protocol.CodeStoreUnavailable) {
				rd.r.found("reader: a history page after seq %d: %v", rd.last.Load(), err)
			}
			return false
		}
		for _, m := range h.Messages {
			if m.Seq <= j.LastSeq {
				rd.deliver(m, "history page")
			}
		}
		more = h.More && len(h.Messages) > 0
	}
	return true
}

// chaosFault is one kind of fault the driver stages.
type chaosFault struct {
	name string
	do   func() error
}

func runChaosCluster(t *testing.T, cycles int, length time.Duration) {
	start := time.Now()
	h := redistest.StartHA(t, redistest.HAOptions{Replicas: 2})
	var nodes []*chattest.Server
	for range 3 {
		nodes = append(nodes, chattest.Start(t, "-redis", h.URL(), "-redis-wait", "2", "-grace", "5s", "-retention", "10000000"))
	}
	lb := startNginx(t, nodes)
	t.Logf("chaos-cluster: redis (a primary, 2 replicas, 3 sentinels), 3 nodes and nginx up in %v", time.Since(start).Round(time.Millisecond))
	out := &chaosOutput{faults: &chaosLog{}, roles: &chaosLog{}, clients: &chaosLog{}, summary: &chaosLog{}}
	r := &chaosRun{url: lb.URL, events: out.clients}
	// Registered after every process was started, so it runs before
	// their directories are removed.
	t.Cleanup(func() { out.keep(t, h, nodes, lb) })
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf(format, args...)
		out.summary.add(format, args...)
	}
	sctx, stopSampling := context.WithCancel(context.Background())
	var swg sync.WaitGroup
	defer func() {
		stopSampling()
		swg.Wait()
	}()
	for _, s := range h.Servers {
		swg.Go(func() { sampleRoles(sctx, s, out.roles) })
	}

	budget := length + time.Duration(max(cycles, 1))*time.Minute + 5*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	cfg := chaosConfig{window: 4, pace: 60 * time.Millisecond}
	stop := make(chan struct{})
	writers := make([]*chaosWriter, 6)
	for i := range writers {
		w := &chaosWriter{n: i, r: r, cfg: cfg, acked: map[string]protocol.Ack{}, probing: map[string]bool{}, resent: map[string]bool{}}
		writers[i] = w
		wg.Go(func() { w.run(ctx, stop) })
	}
	octx, stopOthers := context.WithCancel(ctx)
	defer stopOthers()
	var owg sync.WaitGroup
	observers := make([]*chaosObserver, 3)
	for i := range observers {
		o := &chaosObserver{r: r, name: fmt.Sprint("observer-", i)}
		observers[i] = o
		owg.Go(func() { o.run(octx) })
	}
	rd := &chaosReader{r: r, ids: map[string]int{}, seen: map[string]bool{}}
	owg.Go(func() { rd.run(octx) })

	faults := []chaosFault{
		{"kill -9 a node", func() error {
			i := rand.N(len(nodes))
			out.faults.add("kill -9 node %d (%s, pid %d)", i, nodes[i].Addr, nodes[i].PID())
			nodes[i].Restart(t, true)
			out.faults.add("node %d restarted (pid %d)", i, nodes[i].PID())
			return nil
		}},
		{"SIGSTOP the primary", func() error {
			p := h.Primary()
			pid := p.PID()
			d := time.Duration(500+rand.N(2000)) * time.Millisecond
			out.faults.add("SIGSTOP the primary %s (pid %d) for %v", p.Addr, pid, d)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				return err
			}
			time.Sleep(d)
			out.faults.add("SIGCONT %s (pid %d)", p.Addr, pid)
			return syscall.Kill(pid, syscall.SIGCONT)
		}},
		{"CLIENT KILL TYPE pubsub", func() error {
			p := h.Primary()
			out.faults.add("CLIENT KILL TYPE pubsub on the primary %s", p.Addr)
			return p.Try("CLIENT", "KILL", "TYPE", "pubsub")
		}},
		{"SENTINEL FAILOVER", func() error {
			out.faults.add("SENTINEL FAILOVER asked")
			p := h.Failover(30 * time.Second)
			out.faults.add("SENTINEL FAILOVER done: every Sentinel names %s", p.Addr)
			return nil
		}},
	}
	done := 0
	counts := make([]int, len(faults))
	for cycle := 1; ; cycle++ {
		if cycles > 0 && cycle > cycles || cycles == 0 && time.Since(start) >= length {
			break
		}
		out.faults.add("cycle %d", cycle)
		for i, f := range faults {
			time.Sleep(time.Duration(300+rand.N(900)) * time.Millisecond)
			if err := f.do(); err != nil {
				out.faults.add("%s: %v", f.name, err)
				logf("cycle %d: %s: %v", cycle, f.name, err)
				continue
			}
			counts[i]++
		}
		// Failovers minutes apart, not seconds: the next cycle waits
		// until every replica is back in sync (Sentinel makes the old
		// primary a replica some seconds after it answers again), for
		// with -redis-wait 2 no ack is possible until then, and cycles
		// back to back would test refusals only.
		out.faults.add("cycle %d: faults done; waiting for the replicas", cycle)
		if err := h.Synced(30 * time.Second); err != nil {
			out.faults.add("cycle %d: %v", cycle, err)
			logf("cycle %d: %v", cycle, err)
		} else {
			out.faults.add("cycle %d: both replicas online", cycle)
		}
		done = cycle
		if cycle%10 == 0 || cycle == cycles {
			logf("cycle %d: %v; reader at seq %d", cycle, time.Since(start).Round(time.Second), rd.last.Load())
		}
	}
	// The last fault's dust settles: every node serves again.
	h.Primary()
	for _, n := range nodes {
		waitStatus(t, n.URL+"/readyz", 200, 30*time.Second)
	}
	close(stop)
	wdone := make(chan struct{})
	go func() {
		wg.Wait()
		close(wdone)
	}()
	select {
	case <-wdone:
	case <-time.After(2 * time.Minute):
		t.Errorf("writers still waiting for acks 2 minutes after the last cycle")
		cancel()
		<-wdone
	}

	msgs := allMessages(t, lb.URL)
	var lastSeq int64
	if len(msgs) > 0 {
		lastSeq = msgs[len(msgs)-1].Seq
	}
	for deadline := time.Now().Add(60 * time.Second); rd.last.Load() < lastSeq && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	stopOthers()
	owg.Wait()

	v := verifyStored(msgs, writers)
	missed := 0 // stored messages the reader never got (in any epoch)
	for _, m := range msgs {
		if !rd.seen[m.ID] {
			missed++
		}
	}
	if missed > 0 {
		// A new epoch's joined carries the room's latest messages, so a
		// reader that follows it misses nothing stored either.
		r.found("reader: %d stored messages never delivered (reader at seq %d of %d, in epoch %s; the last %s)", missed, rd.last.Load(), lastSeq, rd.epoch, rd.lastJoined)
	}
	flickers, resumeFlickers := presenceFlickers(observers)
	sent := 0
	for _, w := range writers {
		sent += w.next
	}

	logf("chaos-cluster: %d cycles in %v (%s: %d, %d, %d, %d)", done, time.Since(start).Round(time.Second),
		strings.Join(faultNames(faults), ", "), counts[0], counts[1], counts[2], counts[3])
	logf("chaos-cluster: %d messages stored, %d ids sent, %d acked, %d stored without an ack seen; %d writer reconnects, %d refused and retried, %d unacked ids re-sent",
		len(msgs), sent, v.acked, v.unacked, r.reconnects.Load(), r.retried.Load(), r.resent.Load())
	logf("chaos-cluster: lost %d, duplicated %d, presence flickers %d (leaves of %d observers that had not dropped); leaves within %v of the user's own drop: %d",
		v.lost, v.duplicated, flickers, len(observers), flickerWindow, resumeFlickers)
	logf("chaos-cluster: reader at seq %d of %d, %d epoch changes, %d stored messages it never got, %d delivered twice in one epoch",
		rd.last.Load(), lastSeq, rd.epochs, missed, rd.twice)
	r.mu.Lock()
	findings := append(r.findings, v.findings...)
	r.mu.Unlock()
	for _, f := range findings {
		out.summary.add("%s", f)
		t.Error(f)
	}
	if flickers > 0 {
		t.Errorf("%d presence flickers: observers announced as having left while connected", flickers)
	}
	if v.acked == 0 {
		t.Errorf("no traffic: %d ids sent, none acked", sent)
	}
}

// chaosOutput is what a campaign keeps to explain its outcome (keep).
type chaosOutput struct {
	faults  *chaosLog // the driver's faults and cycles
	roles   *chaosLog // the data servers' roles as they changed
	clients *chaosLog // chaosRun.events
	summary *chaosLog // the outcome and the findings
}

// keep writes the campaign's logs and timelines into ROOMCHAT_CHAOS_OUT,
// or, when that is not set and the test failed, into a new temporary
// directory; it names the directory in the test's log.
func (o *chaosOutput) keep(t *testing.T, h *redistest.HA, nodes []*chattest.Server, lb *nginxServer) {
	dir := os.Getenv(chaosOutEnv)
	var err error
	switch {
	case dir != "":
		err = os.MkdirAll(dir, 0o755)
	case t.Failed():
		dir, err = os.MkdirTemp("", "roomchat-chaos-cluster-")
	default:
		return
	}
	if err == nil {
		err = o.write(dir, h, nodes, lb)
	}
	if err != nil {
		t.Errorf("chaos-cluster: keeping the logs in %q: %v", dir, err)
		return
	}
	t.Logf("chaos-cluster: logs and timelines kept in %s", dir)
}

// write puts into dir the timelines (faults.log, roles.log, clients.log,
// summary.log), each node's log (node<i>.log), nginx's error.log
// (nginx-error.log) and every Redis server's and Sentinel's log
// (redistest SaveLogs). It returns the first error and writes the rest
// anyway.
func (o *chaosOutput) write(dir string, h *redistest.HA, nodes []*chattest.Server, lb *nginxServer) error {
	files := map[string]string{
		"faults.log":  o.faults.String(),
		"roles.log":   o.roles.String(),
		"clients.log": o.clients.String(),
		"summary.log": o.summary.String(),
	}
	for i, n := range nodes {
		files[fmt.Sprintf("node%d.log", i)] = n.Logs()
	}
	var err error
	nginxLog, rerr := os.ReadFile(filepath.Join(lb.dir, "logs", "error.log"))
	if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = rerr
	}
	files["nginx-error.log"] = string(nginxLog)
	for name, text := range files {
		if werr := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	if herr := h.SaveLogs(dir); herr != nil && err == nil {
		err = herr
	}
	return err
}

// roleOffsets matches the offsets in a RoleLine, which change with every
// write: a role is recorded when the rest changes.
var roleOffsets = regexp.MustCompile(`offset=\d+|@\d+`)

// sampleRoles records s's role (redistest RoleLine) in roles whenever it
// changes, asking every 250 ms until ctx ends: who was primary, and who
// replicated whom, at any moment of the campaign.
func sampleRoles(ctx context.Context, s *redistest.Server, roles *chaosLog) {
	last := "?"
	for ctx.Err() == nil {
		line := s.RoleLine()
		if line == "" {
			line = "no answer"
		}
		if key := roleOffsets.ReplaceAllString(line, ""); key != last {
			last = key
			roles.add("%s: %s", s.Addr, line)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func faultNames(faults []chaosFault) []string {
	var s []string
	for _, f := range faults {
		s = append(s, f.name)
	}
	return s
}

// presenceFlickers counts the leaves that observers got of other
// observers: a flicker when the one said to leave had not dropped in the
// flickerWindow before (it was connected all along); the others, a leave
// soon after its own drop, are counted apart.
func presenceFlickers(observers []*chaosObserver) (flickers, afterDrop int) {
	drops := map[string][]time.Time{}
	for _, o := range observers {
		o.mu.Lock()
		drops[o.userID] = slices.Clone(o.drops)
		o.mu.Unlock()
	}
	for _, o := range observers {
		o.mu.Lock()
		events := slices.Clone(o.events)
		o.mu.Unlock()
		for _, e := range events {
			ds, ok := drops[e.userID]
			if !ok || e.event != protocol.PresenceLeave {
				continue
			}
			explained := slices.ContainsFunc(ds, func(d time.Time) bool {
				return !d.After(e.at) && e.at.Sub(d) <= flickerWindow
			})
			if explained {
				afterDrop++
			} else {
				flickers++
			}
		}
	}
	return flickers, afterDrop
}

// What a failed campaign keeps is enough to explain it: the roles
// sampled as they change (a failover shows), the clients' acks, the
// driver's faults, and every process's log.
func TestChaosClusterOutput(t *testing.T) {
	t.Parallel() // its own Redis, node and nginx
	h := redistest.StartHA(t, redistest.HAOptions{Replicas: 1})
	nodes := []*chattest.Server{chattest.Start(t, "-redis", h.URL())}
	lb := startNginx(t, nodes)
	out := &chaosOutput{faults: &chaosLog{}, roles: &chaosLog{}, clients: &chaosLog{}, summary: &chaosLog{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range h.Servers {
		wg.Go(func() { sampleRoles(ctx, s, out.roles) })
	}
	old := h.Primary()
	out.faults.add("SENTINEL FAILOVER asked")
	p := h.Failover(30 * time.Second)
	if err := h.Synced(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	r := &chaosRun{url: lb.URL, events: out.clients}
	w := &chaosWriter{r: r, cfg: chaosConfig{window: 1, pace: time.Millisecond}, acked: map[string]protocol.Ack{}, probing: map[string]bool{}, resent: map[string]bool{}}
	stop := make(chan struct{})
	close(stop)
	w.run(ctx, stop) // connects and, stopping at once, closes
	for !strings.Contains(out.roles.String(), old.Addr+": slave of ") {
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
		if ctx.Err() != nil || len(out.roles.String()) > 1<<20 {
			t.Fatalf("no role change of %s sampled:\n%s", old.Addr, out.roles.String())
		}
	}
	cancel()
	wg.Wait()

	dir := t.TempDir()
	if err := out.write(dir, h, nodes, lb); err != nil {
		t.Fatal(err)
	}
	_, pport, _ := strings.Cut(p.Addr, ":")
	_, oport, _ := strings.Cut(old.Addr, ":")
	want := map[string][]string{
		"faults.log":  {"Z SENTINEL FAILOVER asked\n"},
		"roles.log":   {old.Addr + ": master offset=", p.Addr + ": slave of " + oport + " ", p.Addr + ": master offset=", old.Addr + ": slave of " + pport + " "},
		"clients.log": {"Z writer 0: connected as user "},
		"node0.log":   {"msg=listening"},
		"summary.log": nil,
		// A promoted replica logs it; so does a Sentinel its switch.
		"redis1-" + strings.TrimPrefix(h.Servers[1].Addr, "127.0.0.1:") + ".log":      {"MASTER MODE enabled"},
		"sentinel0-" + strings.TrimPrefix(h.Sentinels[0].Addr, "127.0.0.1:") + ".log": {"+switch-master roomchat"},
	}
	if p != h.Servers[1] {
		t.Fatalf("the failover promoted %s, not the only replica %s", p.Addr, h.Servers[1].Addr)
	}
	for name, lines := range want {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, line := range lines {
			if !strings.Contains(string(b), line) {
				t.Errorf("%s does not say %q:\n%s", name, line, b)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nginx-error.log")); err != nil {
		t.Error(err)
	}
}
