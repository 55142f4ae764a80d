package cluster_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

func openRules(t *testing.T, srv *redistest.Server, prefix string, rules *storetest.Rules) *cluster.Store {
	t.Helper()
	st, err := cluster.Open(context.Background(), cluster.Options{URL: srv.URL(), Prefix: prefix, Retention: store.Retention{Room: rules.Room}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestKeepNothingHasNoStream: a room that keeps no message (SPEC §9
// history size = 0) has no stream in Redis, only its meta (epoch, seq);
// a room set to keep nothing loses its stream at its next message.
func TestKeepNothingHasNoStream(t *testing.T) {
	srv := sharedRedis(t)
	prefix := redistest.Prefix(t)
	rules := storetest.NewRules(storetest.Rule{Max: 10000})
	rules.Set("none", storetest.Rule{Max: 0})
	st := openRules(t, srv, prefix, rules)
	for i := 1; i <= 3; i++ {
		storetest.MustAppend(t, st, storetest.Msg("none", fmt.Sprint(i)), "")
		storetest.MustAppend(t, st, storetest.Msg("some", fmt.Sprint(i)), "")
	}
	if exists(srv, prefix+":{none}:s") {
		t.Fatal("a room that keeps nothing has a stream")
	}
	if n := xlen(t, srv, prefix+":{some}:s"); n != 3 {
		t.Fatalf("XLEN of a room that keeps 10000 = %d, want 3", n)
	}
	rules.Set("some", storetest.Rule{Max: 0})
	if r := storetest.MustAppend(t, st, storetest.Msg("some", "4"), ""); r.Msg.Seq != 4 {
		t.Fatalf("seq = %d, want 4", r.Msg.Seq)
	}
	if exists(srv, prefix+":{some}:s") {
		t.Fatal("a room set to keep nothing kept its stream past its next message")
	}
}

func exists(srv *redistest.Server, key string) bool {
	msg := srv.Do(srv.Client(), "EXISTS", key)
	n, _ := msg.AsInt64()
	return n == 1
}
