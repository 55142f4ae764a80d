package cluster_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/broker/brokertest"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

func TestStoreModeration(t *testing.T) {
	srv := sharedRedis(t)
	storetest.RunModeration(t, func(t *testing.T) interface {
		store.Store
		store.Moderation
	} {
		return openStore(t, srv, store.Retention{})
	})
}

// TestMuteAcrossNodes: a mute set through node A refuses the user's very
// next message through node B (SPEC §11: no window; the check is in the
// publish script), which stores nothing and takes no seq; an unmute
// through A lets the next one through B. The others in the room go on.
func TestMuteAcrossNodes(t *testing.T) {
	srv := sharedRedis(t)
	rec := brokertest.NewRecorder()
	bs, sts := nodes(t, srv, []broker.Handler{brokertest.NewRecorder(), rec})
	ctx := context.Background()
	if err := bs[1].Subscribe(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs[1].Unsubscribe("r") })
	msg := func(user, text string) protocol.Message {
		m := storetest.Msg("r", text)
		m.From.UserID = user
		return m
	}
	if r := brokertest.Publish(t, bs[1], msg("u", "first"), ""); r.Err != nil || r.Msg.Seq != 1 {
		t.Fatalf("before the mute: %+v, %v", r.Msg, r.Err)
	}
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	if err := sts[0].PutRestriction(ctx, "r", store.Mute, store.Restriction{UserID: "u", Until: until, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r := brokertest.Publish(t, bs[1], msg("u", "muted"), store.DedupKey("u", "r", "c1"))
	var me *store.MutedError
	if !errors.As(r.Err, &me) || !me.Until.Equal(until) || errors.Is(r.Err, store.ErrUnavailable) {
		t.Fatalf("a muted user's message through the other node: %v; want muted until %v", r.Err, until)
	}
	if r := brokertest.Publish(t, bs[1], msg("v", "other user"), ""); r.Err != nil || r.Msg.Seq != 2 {
		t.Fatalf("another user's message: seq %d, %v; want 2 (the refused one took none)", r.Msg.Seq, r.Err)
	}
	if _, ok, err := sts[1].Restricted(ctx, "r", store.Mute, "u", time.Now()); err != nil || !ok {
		t.Fatalf("Restricted through the other node = %v, %v", ok, err)
	}
	if existed, err := sts[0].DeleteRestriction(ctx, "r", store.Mute, "u"); err != nil || !existed {
		t.Fatalf("unmute: %v, %v", existed, err)
	}
	if r := brokertest.Publish(t, bs[1], msg("u", "unmuted"), store.DedupKey("u", "r", "c1")); r.Err != nil || r.Dup || r.Msg.Seq != 3 {
		t.Fatalf("after unmute: %+v dup=%v, %v; want a new message with seq 3", r.Msg, r.Dup, r.Err)
	}
	if got := rec.WaitFor(t, "r", 3); len(got) != 3 {
		t.Fatalf("delivered %v, want 1, 2, 3", got)
	}
}

// TestModerationKeys: bans, mutes and the post rule live under the room's
// hash tag with the room's idle lifetime, a message in the room starts
// their lifetime again with the other keys', and reads of them create no
// key.
func TestModerationKeys(t *testing.T) {
	srv := sharedRedis(t)
	prefix := redistest.Prefix(t)
	idle := time.Hour
	st := openIdle(t, srv, prefix, idle)
	ctx := context.Background()
	before := srv.DBSize()
	if _, err := st.Restrictions(ctx, "r", store.Ban, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Restricted(ctx, "r", store.Mute, "u", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PostRule(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if after := srv.DBSize(); after != before {
		t.Fatalf("reads of moderation state took Redis from %d keys to %d", before, after)
	}
	if err := st.PutRestriction(ctx, "r", store.Ban, store.Restriction{UserID: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutRestriction(ctx, "r", store.Mute, store.Restriction{UserID: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetPostRule(ctx, "r", "moderators"); err != nil {
		t.Fatal(err)
	}
	keys := []string{prefix + ":{r}:b", prefix + ":{r}:x", prefix + ":{r}:r"}
	for _, k := range keys {
		if d := ttl(t, srv, k); d <= idle-time.Minute || d > idle {
			t.Fatalf("%s: time to live %v, want about %v", k, d, idle)
		}
	}
	// A message in a room whose meta has less than half its lifetime
	// left starts every key's lifetime again (touch).
	storetest.MustAppend(t, st, storetest.Msg("r", "hello"), "")
	for _, k := range append(keys, prefix+":{r}:m") {
		srv.Do(srv.Client(), "PEXPIRE", k, "60000")
	}
	storetest.MustAppend(t, st, storetest.Msg("r", "again"), "")
	for _, k := range append(keys, prefix+":{r}:m") {
		if d := ttl(t, srv, k); d <= idle-time.Minute {
			t.Fatalf("%s after a message: time to live %v, want about %v", k, d, idle)
		}
	}
	// So does a node's position check of a room with members.
	for _, k := range append(keys, prefix+":{r}:m") {
		srv.Do(srv.Client(), "PEXPIRE", k, "60000")
	}
	if _, err := cluster.PositionForTest(ctx, st, "r", 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range append(keys, prefix+":{r}:m") {
		if d := ttl(t, srv, k); d <= idle-time.Minute {
			t.Fatalf("%s after a position check: time to live %v, want about %v", k, d, idle)
		}
	}
}

func openIdle(t *testing.T, srv *redistest.Server, prefix string, idle time.Duration) *cluster.Store {
	t.Helper()
	return mustOpen(t, cluster.Options{URL: srv.URL(), Prefix: prefix, IdleTTL: idle})
}

// TestPruneEndedRestrictions: a read that meets bans or mutes that have
// ended deletes them from the room's hash (HDEL), keeping those in force;
// one replaced by a new restriction between the read and the delete is
// kept (the script checks each again).
func TestPruneEndedRestrictions(t *testing.T) {
	srv := sharedRedis(t)
	prefix := redistest.Prefix(t)
	st := openIdle(t, srv, prefix, time.Hour)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	put := func(kind store.Kind, user string, until time.Time) {
		t.Helper()
		if err := st.PutRestriction(ctx, "r", kind, store.Restriction{UserID: user, Until: until, At: now}); err != nil {
			t.Fatal(err)
		}
	}
	fields := func(key string) []string {
		t.Helper()
		msg := srv.Do(srv.Client(), "HKEYS", key)
		all, err := msg.AsStrSlice()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(all)
		return all
	}
	put(store.Ban, "ended", now.Add(-time.Second))
	put(store.Ban, "forever", time.Time{})
	put(store.Ban, "later", now.Add(time.Hour))
	put(store.Mute, "ended", now.Add(-time.Minute))
	put(store.Mute, "later", now.Add(time.Hour))
	if rs, err := st.Restrictions(ctx, "r", store.Ban, now); err != nil || len(rs) != 2 {
		t.Fatalf("bans in force: %+v, %v", rs, err)
	}
	if got := fields(prefix + ":{r}:b"); !slices.Equal(got, []string{"forever", "later"}) {
		t.Fatalf("ban fields after a list: %v, want forever and later", got)
	}
	if got := fields(prefix + ":{r}:x"); !slices.Equal(got, []string{"ended", "later"}) {
		t.Fatalf("mute fields before a check: %v (a list of bans touched the mutes)", got)
	}
	if _, ok, err := st.Restricted(ctx, "r", store.Mute, "ended", now); err != nil || ok {
		t.Fatalf("Restricted(ended mute) = %v, %v", ok, err)
	}
	if got := fields(prefix + ":{r}:x"); !slices.Equal(got, []string{"later"}) {
		t.Fatalf("mute fields after a check: %v, want later", got)
	}
	// A read that found "again" ended, pruning after it was put again
	// with a new end: the new one stays.
	put(store.Mute, "again", now.Add(time.Hour))
	cluster.PruneForTest(ctx, st, prefix+":{r}:x", now, "again")
	if got := fields(prefix + ":{r}:x"); !slices.Equal(got, []string{"again", "later"}) {
		t.Fatalf("mute fields after a stale prune: %v, want again and later", got)
	}
}
