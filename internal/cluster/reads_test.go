package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/broker/brokertest"
	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// Reads never write (SPEC §8): reading rooms nobody used — their info, a
// page, the messages — creates no key, so that anonymous GETs cannot fill
// a Redis that must not evict. A room that was used reads the same.
func TestReadsCreateNoKeys(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	st := openStore(t, srv, store.Retention{})
	storetest.MustAppend(t, st, storetest.Msg("used", "hello"), "")
	ctx := context.Background()
	before := srv.DBSize()
	for i := range 500 {
		room := gonanoid.Must()
		var err error
		switch i % 4 {
		case 0:
			_, err = st.Room(ctx, room)
		case 1:
			_, _, err = st.Page(ctx, room, store.Query{Limit: 50, Newest: true})
		case 2:
			_, err = st.Messages(ctx, room, store.Query{After: int64(i)})
		case 3:
			_, _, err = st.Page(ctx, "used", store.Query{After: 0, Limit: 10})
		}
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if after := srv.DBSize(); after != before {
		t.Fatalf("500 reads took Redis from %d keys to %d, want no new key", before, after)
	}
}

// ttl returns key's time to live (-1: none, -2: no key).
func ttl(t *testing.T, srv *redistest.Server, key string) time.Duration {
	t.Helper()
	msg := srv.Do(srv.Client(), "PTTL", key)
	ms, err := msg.AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	if ms < 0 {
		return time.Duration(ms)
	}
	return time.Duration(ms) * time.Millisecond
}

// A room's keys expire once it is idle (SPEC §8: Redis memory is bounded
// by what was stored): after a message its stream and meta have a time to
// live, so does the meta a join creates in an empty room, and so do the
// presence keys, which a node that dies leaves behind.
func TestIdleRoomsExpire(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	prefix := redistest.Prefix(t)
	bs, sts := nodesWith(t, srv, prefix, []broker.Handler{brokertest.NewRecorder()})
	publishAll(t, bs[0], "written", 3)
	if err := bs[0].Subscribe(context.Background(), "joined"); err != nil {
		t.Fatal(err)
	}
	roster := cluster.NewRoster(sts[0])
	roster.Start(func(string, protocol.User, int) {})
	t.Cleanup(func() { roster.Close() })
	if _, _, _, _, err := roster.Add(context.Background(), "joined", protocol.User{UserID: "u1", Name: "ann"}, 0, 10); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{prefix + ":{written}:s", prefix + ":{written}:m", prefix + ":{joined}:m", prefix + ":{joined}:p", prefix + ":{joined}:pe"} {
		if d := ttl(t, srv, key); d <= 0 {
			t.Errorf("%s: time to live %v, want one", key, d)
		}
	}
}

// De-duplication keys hold the seq and the message ID, which the ack
// needs, not the message: 5 minutes of retried ids must not cost Redis
// every message body twice.
func TestDedupKeysHoldNoBody(t *testing.T) {
	srv := sharedRedis(t)
	prefix := redistest.Prefix(t)
	st := openOn(t, srv, prefix)
	body := strings.Repeat("lorem ipsum ", 300)
	key := store.DedupKey("u1", "r", "c1")
	m := storetest.Msg("r", body)
	m.ID = "msg-1" // Msg's IDs hold the text
	first := storetest.MustAppend(t, st, m, key)
	m.ID = "msg-2"
	again := storetest.MustAppend(t, st, m, key)
	if !again.Dup || again.Msg.Seq != first.Msg.Seq || again.Msg.ID != "msg-1" || again.Msg.RoomID != "r" {
		t.Fatalf("retry: %+v dup=%v, want seq %d, ID %s", again.Msg, again.Dup, first.Msg.Seq, first.Msg.ID)
	}
	admin := srv.Client()
	msg := srv.Do(admin, "KEYS", prefix+":{r}:d:*")
	keys, err := msg.AsStrSlice()
	if err != nil || len(keys) != 1 {
		t.Fatalf("de-duplication keys: %v, %v; want one", keys, err)
	}
	v := srv.Do(admin, "GET", keys[0])
	val, _ := v.ToString()
	if strings.Contains(val, "lorem") || len(val) > 64 {
		t.Fatalf("the de-duplication key holds %d bytes (%.60q…), want the seq and the message ID", len(val), val)
	}
}

// An empty room's epoch stays while it has members (SPEC §4: the epoch
// changes only if the history was lost or reset): the node that has
// members there keeps the room's keys alive, however long they stay. The
// test shortens the meta's time to live to a second, as if the room had
// been empty and joined for a day.
func TestEmptyRoomKeepsEpochWhileJoined(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	prefix := redistest.Prefix(t)
	rec := &epochRecorder{Recorder: brokertest.NewRecorder()}
	bs, sts := nodesWith(t, srv, prefix, []broker.Handler{rec})
	if err := bs[0].Subscribe(context.Background(), "quiet"); err != nil {
		t.Fatal(err)
	}
	info, err := sts[0].Room(context.Background(), "quiet")
	if err != nil {
		t.Fatal(err)
	}
	admin := srv.Client()
	meta := prefix + ":{quiet}:m"
	hget := func() string {
		msg := srv.Do(admin, "HGET", meta, "e")
		s, _ := msg.ToString()
		return s
	}
	if got := hget(); got != info.Epoch {
		t.Fatalf("the joined room's stored epoch is %q, want %q", got, info.Epoch)
	}
	srv.Do(admin, "PEXPIRE", meta, "1000")
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if got := hget(); got != info.Epoch {
			t.Fatalf("the epoch of a room with a member went from %q to %q", info.Epoch, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := rec.Resets(); len(r) > 0 {
		t.Fatalf("resets %v of a room nothing happened to", r)
	}
}

// A room idle for IdleTTL loses its keys, and when it is used again it
// starts over at another epoch: its old clients must not take the new
// seqs for ones they saw (SPEC §4).
func TestIdleRoomComesBackAtAnotherEpoch(t *testing.T) {
	srv := sharedRedis(t)
	prefix := redistest.Prefix(t)
	st := mustOpen(t, cluster.Options{URL: srv.URL(), Prefix: prefix, IdleTTL: time.Second})
	ctx := context.Background()
	storetest.MustAppend(t, st, storetest.Msg("r", "1"), "")
	storetest.MustAppend(t, st, storetest.Msg("r", "2"), "")
	before, err := st.Room(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	chattest.Eventually(t, 10*time.Second, func() bool {
		msg := srv.Do(srv.Client(), "EXISTS", prefix+":{r}:s", prefix+":{r}:m")
		n, _ := msg.AsInt64()
		return n == 0
	}, "the idle room's keys to lapse")
	// The store's epoch, which a room without keys has, changes more
	// often than rooms lapse; the store reads it every second.
	chattest.Eventually(t, 10*time.Second, func() bool {
		info, err := st.Room(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		if info.LastSeq != 0 {
			t.Fatalf("the lapsed room reads %+v, want no messages", info)
		}
		return info.Epoch != before.Epoch
	}, "the lapsed room to leave epoch %q", before.Epoch)
	again := storetest.MustAppend(t, st, storetest.Msg("r", "again"), "")
	after, _ := st.Room(ctx, "r")
	if again.Msg.Seq != 1 || after.Epoch == before.Epoch {
		t.Fatalf("used again: seq %d at epoch %q (was %q); want seq 1 at another epoch", again.Msg.Seq, after.Epoch, before.Epoch)
	}
}
