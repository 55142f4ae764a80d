package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// With Wait, an Append is acked only once a replica has it (Redis WAIT):
// while the replica is away, it fails with ErrUnavailable within the
// store's timeout, though the primary may have stored it; a retry with
// the same key once the replica is back is acked with the original seq,
// stored once.
func TestAppendWaitsForReplica(t *testing.T) {
	h := redistest.StartHA(t, redistest.HAOptions{})
	prefix := redistest.Prefix(t)
	st := mustOpen(t, cluster.Options{URL: h.URL(), Prefix: prefix, Wait: 1})
	storetest.MustAppend(t, st, storetest.Msg("r", "replicated"), "k1")

	replica := h.Servers[1]
	replica.Kill()
	t0 := time.Now()
	r := storetest.Append(t, st, storetest.Msg("r", "unreplicated"), "k2")
	if r.Err == nil {
		t.Fatal("acked with no replica to take it")
	}
	if !errors.Is(r.Err, store.ErrUnavailable) || !strings.Contains(r.Err.Error(), "replicas") {
		t.Fatalf("error %v, want ErrUnavailable about replicas", r.Err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("refused after %v, want within the store's timeout", d)
	}
	if got := streamOf(t, h.Servers[0], prefix, "r"); got[storetest.Msg("r", "unreplicated").ID] != 2 {
		t.Fatalf("the refused message is not stored as seq 2 on the primary: %v", got)
	}

	replica.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r = storetest.Append(t, st, storetest.Msg("r", "unreplicated"), "k2")
		if r.Err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.Err != nil {
		t.Fatalf("retry after the replica came back: %v", r.Err)
	}
	if !r.Dup || r.Msg.Seq != 2 {
		t.Fatalf("retry acked as seq %d (dup %v), want the original seq 2 from de-duplication", r.Msg.Seq, r.Dup)
	}
	if got := streamOf(t, h.Servers[1], prefix, "r"); len(got) != 2 {
		t.Fatalf("the replica holds %d messages, want 2: %v", len(got), got)
	}
}

// Sentinel turns a primary into a replica with one transaction: REPLICAOF
// the new primary and CLIENT KILL TYPE normal. A node whose batch waits in
// WAIT on the old primary then reads its scripts' answers and, for WAIT,
// the end of the connection (rueidis hands back the answers read before
// it): nothing of that batch may be acked, for no replica acknowledged it,
// and the old primary's full resync from the new one drops it.
func TestAppendWaitCutOffByDemotion(t *testing.T) {
	old := redistest.Start(t, redistest.Options{})
	promoted := redistest.Start(t, redistest.Options{}) // knows nothing of the room
	prefix := redistest.Prefix(t)
	var logs lockedBuffer
	st := mustOpen(t, cluster.Options{URL: old.URL(), Prefix: prefix, Wait: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	m := storetest.Msg("r", "waiting")
	done := make(chan storetest.Result, 1)
	st.Append(m, "k1", func(stored protocol.Message, dup bool, err error) {
		done <- storetest.Result{Msg: stored, Dup: dup, Err: err}
	})
	// The primary has no replica: WAIT 1 blocks until its timeout.
	c := old.Client()
	waiting := func() bool {
		list := old.Do(c, "CLIENT", "LIST")
		s, _ := list.ToString()
		return strings.Contains(s, "cmd=wait")
	}
	for deadline := time.Now().Add(5 * time.Second); !waiting(); {
		if time.Now().After(deadline) {
			t.Fatal("no connection blocked in WAIT")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := streamOf(t, old, prefix, "r"); got[m.ID] != 1 {
		t.Fatalf("the script has not stored the message as seq 1 before WAIT: %v", got)
	}
	host, port, _ := strings.Cut(promoted.Addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, r := range c.DoMulti(ctx,
		c.B().Multi().Build(),
		c.B().Arbitrary("REPLICAOF", host, port).Build(),
		c.B().Arbitrary("CLIENT", "KILL", "TYPE", "normal").Build(),
		c.B().Exec().Build()) {
		if err := r.Error(); err != nil {
			t.Fatalf("the demotion's command %d: %v", i, err)
		}
	}

	var r storetest.Result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Append did not complete within 10 s")
	}
	if r.Err == nil {
		t.Fatalf("acked as seq %d though no replica acknowledged it and WAIT never answered", r.Msg.Seq)
	}
	if !errors.Is(r.Err, store.ErrUnavailable) {
		t.Errorf("error %v, want ErrUnavailable", r.Err)
	}
	if !strings.Contains(logs.String(), "the connection ended while WAIT waited") {
		t.Errorf("the store did not log why it refused the batch:\n%s", logs.String())
	}
	// What an ack would have promised is gone: the old primary took the
	// new one's data.
	synced := func() bool {
		info := old.Do(c, "INFO", "replication")
		s, _ := info.ToString()
		return strings.Contains(s, "master_link_status:up")
	}
	for deadline := time.Now().Add(10 * time.Second); !synced(); {
		if time.Now().After(deadline) {
			t.Fatal("the old primary did not sync with the new one")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := streamOf(t, old, prefix, "r"); len(got) != 0 {
		t.Errorf("after its resync the old primary still holds %v", got)
	}
}

// lockedBuffer is an io.Writer for a logger that the test reads while the
// store may still write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
