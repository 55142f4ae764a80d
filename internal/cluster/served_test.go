package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/broker/brokertest"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// storeAfter makes room hold, after seq keep, the messages with IDs ids
// (published on the room's channel when live), replacing what was there:
// a write that the node's pub/sub never brought (live false), or the
// writes that took the seqs of ones Redis lost (a failover to a replica
// that did not have them).
func storeAfter(t *testing.T, srv *redistest.Server, prefix, room string, keep int64, live bool, ids ...string) {
	t.Helper()
	words := []string{"EVAL", overtakeLua, "2", prefix + ":{" + room + "}:s", prefix + ":{" + room + "}:m", fmt.Sprint(keep), "0", prefix + ":{" + room + "}"}
	if live {
		words[6] = "1"
	}
	for _, id := range ids {
		m := storetest.Msg(room, id)
		m.ID = id
		body, _ := json.Marshal(m)
		words = append(words, string(body))
	}
	srv.Do(srv.Client(), words...)
}

// servedNode starts a Redis of its own and a node on it (a store and a
// broker that checks every room's position every check), subscribes room
// r, and publishes three messages there, delivered.
func servedNode(t *testing.T, check time.Duration) (*redistest.Server, string, *cluster.Store, *epochRecorder) {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	prefix := redistest.Prefix(t)
	st := mustOpen(t, cluster.Options{URL: srv.URL(), Prefix: prefix, Timeout: time.Second})
	rec := &epochRecorder{Recorder: brokertest.NewRecorder()}
	b := startBroker(t, st, rec, check)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Subscribe(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "r", "old", 3)
	rec.WaitFor(t, "r", 3)
	return srv, prefix, st, rec
}

// A reader is told of a seq that the node's pub/sub has not brought (its
// joined's lastSeq, read from a primary that had not passed the message to
// its replicas); then Redis loses it and a new message takes its seq. A
// client skips seqs it has been told of, so delivering the new message in
// the same epoch would lose it for that reader without a gap: the node
// must give the room a new epoch (SPEC §8), whether the new message comes
// over pub/sub or only the seq going back shows.
func TestServedSeqOvertaken(t *testing.T) {
	t.Run("another message at the seq", func(t *testing.T) {
		// No periodic check: only what pub/sub brings moves the node.
		srv, prefix, st, rec := servedNode(t, time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		storeAfter(t, srv, prefix, "r", 3, false, "unseen")
		info, _, err := st.Page(ctx, "r", store.Query{Limit: 10, Newest: true})
		if err != nil || info.LastSeq != 4 {
			t.Fatalf("read: lastSeq %d, %v; want 4", info.LastSeq, err)
		}
		storeAfter(t, srv, prefix, "r", 3, true, "taker")

		waitReset(t, rec)
		if got := rec.WaitFor(t, "r", 4); !slices.Equal(got, span(1, 4)) {
			t.Fatalf("delivered %v after the reset, want 1..4", got)
		}
	})
	t.Run("the seq goes back", func(t *testing.T) {
		srv, prefix, st, rec := servedNode(t, 200*time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// The unseen message and its loss, with the read between them, in
		// one step each; a check between the first two fills seq 4 and
		// finds its loss by the seq delivered instead.
		storeAfter(t, srv, prefix, "r", 3, false, "unseen")
		if info, _, err := st.Page(ctx, "r", store.Query{Limit: 10}); err != nil || info.LastSeq != 4 {
			t.Fatalf("read: lastSeq %d, %v; want 4", info.LastSeq, err)
		}
		storeAfter(t, srv, prefix, "r", 3, false)
		waitReset(t, rec)
	})
}
