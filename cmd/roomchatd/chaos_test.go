package main

// The kill -9 campaign (make chaos, docs/reliability.md): SPEC
// §4's guarantees — no loss, no duplicates, resume, de-duplication by id —
// checked against the roomchatd binary on a SQLite file while it is killed
// with SIGKILL over and over under load.
//
// Writers send messages with unique ids and wait for their acks; when the
// connection drops they reconnect with their resume token, join with since
// and send every unacked id again, and re-send one acked id to check that
// the server answers with the original ack. A follower reconnects too and
// joins with since its last seq. The server is restarted on the same file
// and port after each kill. At the end, after one more kill, every stored
// message is read through the HTTP API and checked: seqs 1..N without a
// gap, no id stored twice (the text carries the id), every acked id stored
// with its acked seq, and the follower saw every seq exactly once.
//
// ROOMCHAT_CHAOS=<cycles> runs the campaign (make chaos: 100 cycles);
// without it a 3-cycle version runs, except under -short.
// ROOMCHAT_CHAOS_WINDOW and ROOMCHAT_CHAOS_PACE change the writers' shape.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

// chaosEnv names the environment variable that sets the number of kill
// cycles and turns the full campaign on.
const chaosEnv = "ROOMCHAT_CHAOS"

// With chaosEnv, these set a writer's window (4) and pace (60ms).
const (
	chaosWindowEnv = "ROOMCHAT_CHAOS_WINDOW"
	chaosPaceEnv   = "ROOMCHAT_CHAOS_PACE"
)

const chaosRoom = "chaos"

// chaosConfig shapes one campaign.
type chaosConfig struct {
	cycles  int
	writers int
	// window is how many messages a writer may have sent and not seen
	// acked; pace is the least time between two new ones (60 ms: about
	// 16/s, under the default rate limit of 20/s, as a well-behaved client).
	window int
	pace   time.Duration
	// upMin and upMax bound how long the server runs between two kills,
	// drawn uniformly: from the reconnect storm right after a restart to
	// steady traffic.
	upMin, upMax time.Duration
}

func TestChaos(t *testing.T) {
	cfg := chaosConfig{cycles: 3, writers: 4, window: 4, pace: 60 * time.Millisecond, upMin: 100 * time.Millisecond, upMax: 1500 * time.Millisecond}
	if v := os.Getenv(chaosEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a number of cycles ≥ 1", chaosEnv, v)
		}
		cfg.cycles, cfg.writers = n, 8
		// A harsher shape for a second opinion: more writers, more ids
		// in flight when the kill comes, a pace past the rate limit.
		if v := os.Getenv(chaosWindowEnv); v != "" {
			if cfg.window, err = strconv.Atoi(v); err != nil || cfg.window < 1 {
				t.Fatalf("%s=%q: want a number ≥ 1", chaosWindowEnv, v)
			}
		}
		if v := os.Getenv(chaosPaceEnv); v != "" {
			if cfg.pace, err = time.ParseDuration(v); err != nil || cfg.pace <= 0 {
				t.Fatalf("%s=%q: want a duration > 0", chaosPaceEnv, v)
			}
		}
	} else if testing.Short() {
		t.Skip("the kill -9 campaign; " + chaosEnv + "=<cycles> runs it in full")
	}
	runChaos(t, cfg)
}

// chaosRun is what the goroutines of one campaign share.
type chaosRun struct {
	url string

	mu       sync.Mutex
	findings []string // guarded by mu

	reconnects, resent, retried, probes atomic.Int64
	// storedBefore counts re-sent ids whose ack has a seq the join after
	// the reconnect already covered: stored before the kill, their ack
	// lost with it, and answered now by de-duplication.
	storedBefore atomic.Int64

	// events, when set, records the clients' acks, refusals and
	// connections by time (the cluster campaign keeps it).
	events *chaosLog
}

// chaosLog is a timeline: lines stamped with the time they were added,
// as roomchatd stamps its log lines. A nil chaosLog records nothing.
type chaosLog struct {
	mu    sync.Mutex
	lines []string // guarded by mu
}

func (l *chaosLog) add(format string, args ...any) {
	if l == nil {
		return
	}
	line := time.Now().UTC().Format("2006-01-02T15:04:05.000Z") + " " + fmt.Sprintf(format, args...) + "\n"
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
}

// String is the timeline so far, a line each.
func (l *chaosLog) String() string {
	if l == nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "")
}

// found records a violation of a guarantee; the test fails at the end
// with every one of them.
func (r *chaosRun) found(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.findings) < 1000 {
		r.findings = append(r.findings, fmt.Sprintf(format, args...))
	}
}

// dial connects with token (if any) and joins the room with since,
// bounded by 5 s.
func (r *chaosRun) dial(ctx context.Context, token, name string, since int64) (*client.Conn, protocol.Joined, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, r.url, client.Options{Resume: token})
	if err != nil {
		return nil, protocol.Joined{}, err
	}
	j, err := c.Join(ctx, chaosRoom, name, &since)
	if err != nil {
		c.CloseNow()
		return nil, protocol.Joined{}, err
	}
	return c, j, nil
}

// pause waits a random 50–250 ms (a reconnect backoff short enough to
// find the restarted server at once) or until ctx ends.
func pause(ctx context.Context) {
	t := time.NewTimer(time.Duration(50+rand.N(200)) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// chaosWriter sends messages with ids w<n>-<i> and the text "chaos <id>".
// Its fields are owned by its run goroutine until run returns.
type chaosWriter struct {
	n   int
	r   *chaosRun
	cfg chaosConfig

	userID, token string
	next          int                     // ids issued
	pending       []string                // sent and not acked, oldest first
	acked         map[string]protocol.Ack // every ack, by id
	probing       map[string]bool         // acked ids re-sent to check de-duplication
	resent        map[string]bool         // ids re-sent on this connection
	joinedLast    int64                   // lastSeq of this connection's joined
	lastAcked     string
	maxSeq        int64
}

// run sends until stop is closed and then until every id is acked, or
// until ctx ends (which leaves unacked ids behind: a finding).
func (w *chaosWriter) run(ctx context.Context, stop <-chan struct{}) {
	stopping := false
	for {
		c, j, err := w.r.dial(ctx, w.token, fmt.Sprint("writer-", w.n), w.maxSeq)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			pause(ctx)
			continue
		}
		if w.userID == "" {
			w.userID = c.Welcome().UserID
		} else {
			w.r.reconnects.Add(1)
			if id := c.Welcome().UserID; id != w.userID {
				// De-duplication is per user: without the same userID a
				// re-sent id would be stored a second time.
				w.r.found("writer %d: resumed as user %s, want %s (the token did not keep the identity)", w.n, id, w.userID)
				w.userID = id
			}
		}
		w.token = c.Welcome().Resume
		w.joinedLast = j.LastSeq
		w.r.events.add("writer %d: connected as user %s; joined epoch %s, lastSeq %d; %d ids pending", w.n, w.userID, j.Epoch, j.LastSeq, len(w.pending))
		done, err := w.session(ctx, c, stop, &stopping)
		c.CloseNow()
		if !done {
			w.r.events.add("writer %d: connection ended: %v", w.n, err)
		}
		if done || ctx.Err() != nil {
			break
		}
		pause(ctx)
	}
	if len(w.pending) > 0 {
		w.r.found("writer %d: %d ids never acked (first %s)", w.n, len(w.pending), w.pending[0])
	}
}

// session is one connection's life: resend what is unacked, probe the
// de-duplication once, then send new ids at the pace and read acks. It
// returns done once stopping with nothing pending, or the connection's end.
func (w *chaosWriter) session(ctx context.Context, c *client.Conn, stop <-chan struct{}, stopping *bool) (bool, error) {
	send := func(id string) error {
		return c.Send(ctx, protocol.TypeMsg, id, protocol.Send{Message: "chaos " + id})
	}
	clear(w.resent)
	for _, id := range w.pending {
		w.resent[id] = true
		w.r.resent.Add(1)
		if err := send(id); err != nil {
			return false, err
		}
	}
	clear(w.probing)
	if w.lastAcked != "" && !slices.Contains(w.pending, w.lastAcked) {
		w.probing[w.lastAcked] = true
		w.r.probes.Add(1)
		if err := send(w.lastAcked); err != nil {
			return false, err
		}
	}
	var lastNew time.Time
	for {
		if !*stopping {
			select {
			case <-stop:
				*stopping = true
			default:
			}
		}
		if *stopping && len(w.pending) == 0 && len(w.probing) == 0 {
			c.Close()
			return true, nil
		}
		if !*stopping && len(w.pending) < w.cfg.window && time.Since(lastNew) >= w.cfg.pace {
			w.next++
			id := fmt.Sprintf("w%d-%d", w.n, w.next)
			w.pending = append(w.pending, id)
			lastNew = time.Now()
			if err := send(id); err != nil {
				return false, err
			}
		}
		rctx, cancel := context.WithTimeout(ctx, w.cfg.pace)
		env, _, err := c.Next(rctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return false, err
		}
		switch env.Type {
		case protocol.TypeAck:
			var a protocol.Ack
			if perr := protocol.DecodePayload(env, &a); perr != nil {
				w.r.found("writer %d: bad ack %s: %v", w.n, env.Payload, perr)
				continue
			}
			w.onAck(env.ID, a)
		case protocol.TypeError:
			var e protocol.Error
			protocol.DecodePayload(env, &e)
			switch {
			case env.ID == "":
				w.r.found("writer %d: error without id: %+v", w.n, e)
			case e.Code == protocol.CodeRateLimited, e.Code == protocol.CodeStoreUnavailable, e.Code == protocol.CodeShuttingDown:
				// Refused, not stored: the same id again, a little later.
				w.r.retried.Add(1)
				w.r.events.add("writer %d: %s refused: %s", w.n, env.ID, e.Code)
				time.Sleep(100 * time.Millisecond)
				if err := send(env.ID); err != nil {
					return false, err
				}
			default:
				w.r.found("writer %d: %s answered with %+v", w.n, env.ID, e)
				w.pending = slices.DeleteFunc(w.pending, func(id string) bool { return id == env.ID })
			}
		}
	}
}

func (w *chaosWriter) onAck(id string, a protocol.Ack) {
	w.r.events.add("writer %d: %s acked: seq %d msg %s", w.n, id, a.Seq, a.MsgID)
	if a.Seq < 1 || a.MsgID == "" {
		w.r.found("writer %d: ack of %s is %+v", w.n, id, a)
	}
	if first, ok := w.acked[id]; ok {
		if first != a {
			w.r.found("writer %d: %s acked again as %+v, first as %+v (stored twice?)", w.n, id, a, first)
		}
		delete(w.probing, id)
		w.pending = slices.DeleteFunc(w.pending, func(p string) bool { return p == id })
		return
	}
	if !slices.Contains(w.pending, id) {
		w.r.found("writer %d: ack for %s, which it never sent", w.n, id)
		return
	}
	w.pending = slices.DeleteFunc(w.pending, func(p string) bool { return p == id })
	if w.resent[id] && a.Seq <= w.joinedLast {
		w.r.storedBefore.Add(1)
	}
	w.acked[id] = a
	w.lastAcked = id
	w.maxSeq = max(w.maxSeq, a.Seq)
}

// chaosFollower reads the room as a client that must miss nothing: on
// every connection it joins with since = the last seq it has, completes a
// joined with more by history pages up to joined.lastSeq, then takes live
// msg events. Every message delivered is counted by seq.
type chaosFollower struct {
	r *chaosRun

	last atomic.Int64 // the last seq delivered; read by the test while it runs

	// Owned by run until it returns.
	token                           string
	seen                            map[int64]int
	fromJoined, fromPages, fromLive int
}

func (f *chaosFollower) run(ctx context.Context) {
	connected := false
	for ctx.Err() == nil {
		c, j, err := f.r.dial(ctx, f.token, "follower", f.last.Load())
		if err != nil {
			pause(ctx)
			continue
		}
		if connected {
			f.r.reconnects.Add(1)
		}
		connected = true
		f.token = c.Welcome().Resume
		f.follow(ctx, c, j)
		c.CloseNow()
		if rand.N(3) == 0 {
			// Away for a while, one drop in three: the backlog then
			// outgrows one joined (200 messages), and the follower
			// completes it with history pages.
			t := time.NewTimer(time.Duration(1500+rand.N(1500)) * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
	}
}

func (f *chaosFollower) deliver(m protocol.Message, how string) {
	if m.RoomID != chaosRoom {
		f.r.found("follower: %s message of room %q", how, m.RoomID)
		return
	}
	f.seen[m.Seq]++
	last := f.last.Load()
	if m.Seq != last+1 {
		f.r.found("follower: %s message seq %d after seq %d (a gap or a repeat)", how, m.Seq, last)
	}
	if m.Seq > last {
		f.last.Store(m.Seq)
	}
}

// follow reads one connection until it ends.
func (f *chaosFollower) follow(ctx context.Context, c *client.Conn, j protocol.Joined) {
	for _, m := range j.History {
		f.fromJoined++
		f.deliver(m, "joined")
	}
	for more := j.More; more && f.last.Load() < j.LastSeq; {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := c.History(pctx, chaosRoom, f.last.Load(), 0)
		cancel()
		if pe, ok := errors.AsType[*protocol.Error](err); ok && pe.Code == protocol.CodeRateLimited {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			return
		}
		for _, m := range h.Messages {
			if m.Seq <= j.LastSeq { // later ones come live
				f.fromPages++
				f.deliver(m, "history page")
			}
		}
		more = h.More && len(h.Messages) > 0
	}
	for {
		env, _, err := c.Next(ctx)
		if err != nil {
			return
		}
		if env.Type != protocol.TypeMsg {
			continue
		}
		var m protocol.Message
		if perr := protocol.DecodePayload(env, &m); perr != nil {
			f.r.found("follower: bad msg %s: %v", env.Payload, perr)
			continue
		}
		f.fromLive++
		f.deliver(m, "live")
	}
}

// allMessages reads every stored message of the room through GET
// /api/rooms/{id}/messages, 500 at a time, retrying for up to 30 s while
// the server is not answering yet.
func allMessages(t *testing.T, base string) []protocol.Message {
	t.Helper()
	var all []protocol.Message
	deadline := time.Now().Add(30 * time.Second)
	after := int64(0)
	for {
		var page server.MessagePage
		res, err := http.Get(fmt.Sprintf("%s/api/rooms/%s/messages?after=%d&limit=500", base, chaosRoom, after))
		if err == nil {
			if res.StatusCode == http.StatusOK {
				err = json.UnmarshalRead(res.Body, &page)
			} else {
				err = fmt.Errorf("status %s", res.Status)
			}
			res.Body.Close()
		}
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("reading the stored messages after seq %d: %v", after, err)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		all = append(all, page.Messages...)
		if len(page.Messages) == 0 || page.Messages[len(page.Messages)-1].Seq >= page.LastSeq {
			return all
		}
		after = page.Messages[len(page.Messages)-1].Seq
	}
}

func runChaos(t *testing.T, cfg chaosConfig) {
	start := time.Now()
	db := filepath.Join(t.TempDir(), "chaos.db")
	// Default flags, except -retention: the check reads every seq from 1,
	// and the default keeps the last 10,000 messages of a room.
	srv := chattest.StartEnv(t, nil, "-addr", "127.0.0.1:0", "-db", db, "-retention", "10000000")
	r := &chaosRun{url: srv.URL}

	// Everything below ends by itself: the writers stop after the cycles,
	// the follower once it has caught up, all of it bounded by ctx.
	budget := time.Duration(cfg.cycles)*(cfg.upMax+10*time.Second) + 3*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	stop := make(chan struct{})
	writers := make([]*chaosWriter, cfg.writers)
	for i := range writers {
		w := &chaosWriter{n: i, r: r, cfg: cfg, acked: map[string]protocol.Ack{}, probing: map[string]bool{}, resent: map[string]bool{}}
		writers[i] = w
		wg.Go(func() { w.run(ctx, stop) })
	}
	fctx, stopFollower := context.WithCancel(ctx)
	defer stopFollower()
	f := &chaosFollower{r: r, seen: map[int64]int{}}
	var fwg sync.WaitGroup
	fwg.Go(func() { f.run(fctx) })

	var down []time.Duration
	for cycle := 1; cycle <= cfg.cycles; cycle++ {
		time.Sleep(cfg.upMin + rand.N(cfg.upMax-cfg.upMin))
		t0 := time.Now()
		srv.Restart(t, true) // kill -9, then the same -db and port
		down = append(down, time.Since(t0))
		if cycle%10 == 0 || cycle == cfg.cycles {
			t.Logf("cycle %d/%d: %v; follower at seq %d", cycle, cfg.cycles, time.Since(start).Round(time.Second), f.last.Load())
		}
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

	// One more kill, after the last ack: whatever was acked is on disk.
	srv.Restart(t, true)
	msgs := allMessages(t, srv.URL)
	n := int64(len(msgs))
	// (Checked below, seq by seq, whether or not it caught up.)
	chattest.Poll(60*time.Second, func() bool { return f.last.Load() >= n })
	stopFollower()
	fwg.Wait()

	// Seqs 1..N without a gap, each id once.
	stored := map[string]protocol.Message{}
	if err := chattest.SeqRun(chattest.Seqs(msgs), 1, n); err != nil {
		r.found("stored messages: %v", err)
	}
	for _, m := range msgs {
		id, ok := strings.CutPrefix(m.Message, "chaos ")
		if !ok {
			r.found("stored message seq %d has text %q", m.Seq, m.Message)
			continue
		}
		if prev, dup := stored[id]; dup {
			r.found("id %s stored twice: seqs %d and %d", id, prev.Seq, m.Seq)
			continue
		}
		stored[id] = m
	}
	// Every acked id stored once, with its acked seq and msgID.
	acked, sent := 0, 0
	ackedIDs := map[string]bool{}
	for _, w := range writers {
		sent += w.next
		for id, a := range w.acked {
			acked++
			ackedIDs[id] = true
			m, ok := stored[id]
			switch {
			case !ok:
				r.found("LOST: %s acked as seq %d, not stored", id, a.Seq)
			case m.Seq != a.Seq || m.ID != a.MsgID:
				r.found("%s acked as seq %d msgID %s, stored as seq %d msgID %s", id, a.Seq, a.MsgID, m.Seq, m.ID)
			}
		}
	}
	unacked := 0 // stored, but the writer gave up before it saw the ack
	for id := range stored {
		if !ackedIDs[id] {
			unacked++
		}
	}
	// The follower saw each seq once.
	for s := int64(1); s <= n; s++ {
		if c := f.seen[s]; c != 1 {
			r.found("follower saw seq %d %d times", s, c)
		}
	}

	slices.Sort(down)
	t.Logf("chaos: %d kill -9 cycles in %v; %d writers (window %d, a new message every %v), 1 follower",
		cfg.cycles, time.Since(start).Round(time.Second), cfg.writers, cfg.window, cfg.pace)
	t.Logf("chaos: %d messages stored (seq 1..%d), %d ids sent, %d acked, %d stored without an ack seen",
		n, n, sent, acked, unacked)
	t.Logf("chaos: %d reconnects, %d unacked ids re-sent (%d of them stored before the kill and answered from de-duplication), %d refused and retried, %d acked ids re-sent as de-duplication probes",
		r.reconnects.Load(), r.resent.Load(), r.storedBefore.Load(), r.retried.Load(), r.probes.Load())
	t.Logf("chaos: follower got %d messages in joined, %d in history pages, %d live; kill to listening again: median %v, max %v",
		f.fromJoined, f.fromPages, f.fromLive, down[len(down)/2].Round(time.Millisecond), down[len(down)-1].Round(time.Millisecond))
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Logf("chaos: %d findings", len(r.findings))
	for _, s := range r.findings {
		t.Error(s)
	}
	if sent == 0 || acked == 0 {
		t.Errorf("no traffic: %d ids sent, %d acked", sent, acked)
	}
}
