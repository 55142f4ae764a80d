package cluster_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/cluster"
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
