package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// outcome is what became of one Append.
type outcome struct {
	at    time.Time // when done was called
	sync  bool      // done was called before Append returned
	err   error
	seq   int64
	msgID string
}

// streamOf reads a room's stream straight from Redis: seq by message ID.
func streamOf(t *testing.T, srv *redistest.Server, prefix, room string) map[string]int64 {
	t.Helper()
	msg := srv.Do(srv.Client(), "XRANGE", prefix+":{"+room+"}:s", "-", "+")
	entries, err := msg.AsXRange()
	if err != nil {
		t.Fatalf("XRANGE of %s: %v", room, err)
	}
	out := make(map[string]int64, len(entries))
	for _, e := range entries {
		var m protocol.Message
		if err := json.Unmarshal([]byte(e.FieldValues["m"]), &m); err != nil {
			t.Fatalf("stream entry %s: %v", e.ID, err)
		}
		seq, _, _ := strings.Cut(e.ID, "-")
		out[m.ID], _ = strconv.ParseInt(seq, 10, 64)
	}
	return out
}

// A Redis that hangs (SIGSTOP) while appends pour in: the queue is
// bounded, so that past it an Append fails at once; every Append is
// answered within 5 s of being made (plus a margin for the machine); none
// that failed is stored when Redis wakes up and runs what was sent to it;
// and the store serves again by itself after SIGCONT.
func TestAppendWhileRedisHangs(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	prefix := redistest.Prefix(t)
	st := openOn(t, srv, prefix)
	storetest.MustAppend(t, st, storetest.Msg("hang", "before"), "")

	const n = 50000
	const bound = 5*time.Second + time.Second
	pid := srv.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := sync.OnceFunc(func() { syscall.Kill(pid, syscall.SIGCONT) })
	t.Cleanup(cont)
	stopped := time.Now()

	outs := make([]outcome, n)
	var pending sync.WaitGroup
	made := make([]time.Time, n)
	for i := range n {
		var returned atomic.Bool
		m := storetest.Msg("hang", fmt.Sprint(i))
		m.ID = fmt.Sprint("m-", i)
		pending.Add(1)
		made[i] = time.Now()
		st.Append(m, "", func(stored protocol.Message, _ bool, err error) {
			outs[i] = outcome{at: time.Now(), sync: !returned.Load(), err: err, seq: stored.Seq, msgID: stored.ID}
			pending.Done()
		})
		returned.Store(true)
	}
	waited := make(chan struct{})
	go func() { pending.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(bound + time.Second):
		t.Fatalf("appends still unanswered %v after Redis stopped", time.Since(stopped).Round(time.Millisecond))
	}
	var immediate, late int
	for i, o := range outs {
		if o.err == nil {
			t.Fatalf("append %d succeeded with Redis stopped", i)
		}
		if !errors.Is(o.err, store.ErrUnavailable) {
			t.Fatalf("append %d: %v, want ErrUnavailable", i, o.err)
		}
		if o.sync {
			immediate++
		}
		if o.at.Sub(made[i]) > bound {
			late++
		}
	}
	t.Logf("%d of %d appends failed at once", immediate, n)
	if immediate < n/2 {
		t.Errorf("%d of %d appends failed at once with Redis stopped: the queue is not bounded", immediate, n)
	}
	if late > 0 {
		t.Errorf("%d appends were answered more than %v after they were made", late, bound)
	}

	// Redis wakes up and runs what it was sent: nothing of it is stored.
	time.Sleep(time.Until(stopped.Add(7 * time.Second))) // the fault itself, not a wait for a condition
	cont()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	chattest.Eventually(t, 10*time.Second, func() bool { return st.Ready(ctx) == nil }, "the store ready after Redis woke up")
	after := storetest.MustAppend(t, st, storetest.Msg("hang", "after"), "")
	got := streamOf(t, srv, prefix, "hang")
	for id := range got {
		if strings.HasPrefix(id, "m-") {
			t.Errorf("%s failed and was stored later, as seq %d", id, got[id])
		}
	}
	if after.Msg.Seq != 2 {
		t.Errorf("the append after Redis came back got seq %d, want 2", after.Msg.Seq)
	}
}

// openWith opens a store on prefix with the default timeouts.
func openWith(srv *redistest.Server, prefix string) (*cluster.Store, error) {
	return cluster.Open(context.Background(), cluster.Options{URL: srv.URL(), Prefix: prefix})
}

// Close is bounded by its context while Redis hangs (plus what rueidis
// waits for a silent Redis as it closes its connections): what is queued
// fails unsent, the batch on its way is given up, and every done is
// called.
func TestCloseWhileRedisHangs(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	st, err := openWith(srv, redistest.Prefix(t))
	if err != nil {
		t.Fatal(err)
	}
	storetest.MustAppend(t, st, storetest.Msg("r", "before"), "")
	pid := srv.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	var pending sync.WaitGroup
	for i := range 5000 {
		pending.Add(1)
		st.Append(storetest.Msg("r", fmt.Sprint(i)), "", func(protocol.Message, bool, error) { pending.Done() })
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	st.CloseContext(ctx)
	// Then rueidis gives a silent Redis up to a second per connection to
	// answer its goodbye.
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("CloseContext with a context of 1 s took %v", d.Round(time.Millisecond))
	}
	done := make(chan struct{})
	go func() { pending.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("appends left without an answer after Close")
	}
}
