package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

func openRules(t *testing.T, srv *redistest.Server, prefix string, rules *storetest.Rules) *cluster.Store {
	t.Helper()
	return mustOpen(t, cluster.Options{URL: srv.URL(), Prefix: prefix, Retention: store.Retention{Room: rules.Room}})
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

// TestRedactionInRedis: a redacted message's entry leaves the stream
// (XDEL) and its text leaves Redis; its tombstone lives under the room's
// hash tag with the room's idle lifetime, and a node's position check
// still finds the redacted message's ID.
func TestRedactionInRedis(t *testing.T) {
	srv := sharedRedis(t)
	prefix := redistest.Prefix(t)
	st := openOn(t, srv, prefix)
	const secret = "secret-text-9Xk"
	m := storetest.Msg("r", secret)
	m.ID = "msg-1"
	storetest.MustAppend(t, st, m, "")
	storetest.MustAppend(t, st, storetest.Redaction("r", 1, protocol.User{UserID: "mod"}), "")
	c := srv.Client()
	keys := srv.Do(c, "KEYS", prefix+":*")
	names, _ := keys.AsStrSlice()
	for _, k := range names {
		if !strings.HasPrefix(k, prefix+":{r}:") && !strings.HasPrefix(k, prefix+":{r}") && k != prefix+":token_key" && k != prefix+":epoch" {
			t.Errorf("key %s is not under the room's hash tag", k)
		}
		dump := srv.Do(c, "DUMP", k)
		if b, _ := dump.ToString(); strings.Contains(b, secret) {
			t.Errorf("key %s still holds the redacted text", k)
		}
	}
	tomb := prefix + ":{r}:t"
	ttl := srv.Do(c, "PTTL", tomb)
	if ms, _ := ttl.AsInt64(); ms <= 0 || ms > (30*24*time.Hour).Milliseconds() {
		t.Fatalf("PTTL %s = %d, want the room's idle lifetime", tomb, ms)
	}
	if n := xlen(t, srv, prefix+":{r}:s"); n != 1 {
		t.Fatalf("XLEN = %d, want 1 (the redaction; the target deleted)", n)
	}
	p, err := cluster.PositionForTest(context.Background(), st, "r", 1)
	if err != nil || p.ID != "msg-1" || p.Head != 1 || p.Last != 2 {
		t.Fatalf("position at seq 1 = %+v, %v; want ID msg-1, head 1, last 2", p, err)
	}
}
