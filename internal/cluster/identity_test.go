package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/broker/brokertest"
	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// publishN publishes n messages with IDs of their own (name-1, name-2…).
func publishN(t *testing.T, b broker.Broker, room, name string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		m := storetest.Msg(room, fmt.Sprint(name, " ", i))
		m.ID = fmt.Sprint(name, "-", i)
		if res := brokertest.Publish(t, b, m, ""); res.Err != nil {
			t.Fatalf("publish %s %d: %v", name, i, res.Err)
		}
	}
}

// overtakeLua loses a room's messages after seq ARGV[1] and stores new
// ones in their place, in one step, so that no check of a node sees the
// seq go back in between: KEYS[1] the stream, KEYS[2] the meta; ARGV[2]
// "1" to publish the new ones on ARGV[3], the room's channel, as
// publish.lua does; ARGV[4…] their JSON.
const overtakeLua = `
local keep = tonumber(ARGV[1])
local top = redis.call("xrevrange", KEYS[1], "+", "-", "COUNT", 1)
local last = tonumber(string.match(top[1][1], "^(%d+)"))
for s = keep + 1, last do
  redis.call("xdel", KEYS[1], s .. "-0")
end
redis.call("xsetid", KEYS[1], keep .. "-0")
local epoch = redis.call("hget", KEYS[2], "e")
local seq = keep
for i = 4, #ARGV do
  seq = seq + 1
  redis.call("xadd", KEYS[1], seq .. "-0", "m", ARGV[i])
  if ARGV[2] == "1" then
    redis.call("publish", ARGV[3], seq .. "\n" .. epoch .. "\n" .. ARGV[i])
  end
end
redis.call("hset", KEYS[2], "s", seq)
return seq
`

// overtake makes Redis forget room's messages after seq keep, as an AOF
// that lost its last second or a failover to a replica that lagged would,
// and stores n new messages (IDs new-1…) that take the lost seqs and go
// past them, published when live is set.
func overtake(t *testing.T, srv *redistest.Server, prefix, room string, keep int64, n int, live bool) {
	t.Helper()
	words := []string{"EVAL", overtakeLua, "2", prefix + ":{" + room + "}:s", prefix + ":{" + room + "}:m", fmt.Sprint(keep), "0", prefix + ":{" + room + "}"}
	if live {
		words[6] = "1"
	}
	for i := 1; i <= n; i++ {
		m := storetest.Msg(room, fmt.Sprint("new ", i))
		m.ID = fmt.Sprint("new-", i)
		body, _ := json.Marshal(m)
		words = append(words, string(body))
	}
	srv.Do(srv.Client(), words...)
}

// waitReset waits up to 10 s for rec's first reset and returns it.
func waitReset(t *testing.T, rec *epochRecorder) string {
	t.Helper()
	if !chattest.Poll(10*time.Second, func() bool { return len(rec.Resets()) > 0 }) {
		t.Fatalf("no reset within 10 s; delivered %v", rec.Seqs("r"))
	}
	return rec.Resets()[0]
}

// Redis loses acknowledged messages (seqs 8..10) and new ones take their
// seqs and go past them (8..12) before the node looks: counting seqs shows
// nothing wrong, so the node compares the message ID it delivered at its
// last seq with the stream's (SPEC §8: loss is detected by identity) and
// gives the room a new epoch, as for an empty Redis; then it delivers the
// new epoch's history from seq 1.
func TestLostWritesDetectedByIdentity(t *testing.T) {
	t.Run("overtaken unseen", func(t *testing.T) {
		// The replacements are written while the node hears nothing of
		// them (its pub/sub was elsewhere): its periodic check finds them.
		srv := redistest.Start(t, redistest.Options{})
		prefix := redistest.Prefix(t)
		rec := &epochRecorder{Recorder: brokertest.NewRecorder()}
		bs, sts := nodesWith(t, srv, prefix, []broker.Handler{rec})
		if err := bs[0].Subscribe(context.Background(), "r"); err != nil {
			t.Fatal(err)
		}
		publishN(t, bs[0], "r", "old", 10)
		rec.WaitFor(t, "r", 10)
		before, _ := sts[0].Room(context.Background(), "r")

		overtake(t, srv, prefix, "r", 7, 5, false)

		reset := waitReset(t, rec)
		after, _ := sts[0].Room(context.Background(), "r")
		if after.Epoch == before.Epoch || reset != "r:"+after.Epoch {
			t.Fatalf("epoch %q → %q, reset %q: want a new epoch, and the reset to it", before.Epoch, after.Epoch, reset)
		}
		if got := rec.WaitFor(t, "r", 12); !slices.Equal(got, span(1, 12)) {
			t.Fatalf("delivered %v after the reset, want 1..12", got)
		}
	})
	t.Run("overtaken live", func(t *testing.T) {
		// The replacements come over pub/sub: 8, 9 and 10 look like
		// repeats, and the node knows the ID it delivered at 10.
		srv := redistest.Start(t, redistest.Options{})
		prefix := redistest.Prefix(t)
		rec := &epochRecorder{Recorder: brokertest.NewRecorder()}
		bs, _ := nodesWith(t, srv, prefix, []broker.Handler{rec})
		if err := bs[0].Subscribe(context.Background(), "r"); err != nil {
			t.Fatal(err)
		}
		publishN(t, bs[0], "r", "old", 10)
		rec.WaitFor(t, "r", 10)
		overtake(t, srv, prefix, "r", 7, 5, true)
		waitReset(t, rec)
		if got := rec.WaitFor(t, "r", 12); !slices.Equal(got, span(1, 12)) {
			t.Fatalf("delivered %v after the reset, want 1..12", got)
		}
		// 11 and 12 were published in the old epoch and come after the
		// node moved on: no reason to move back.
		publishN(t, bs[0], "r", "after", 1)
		if got := rec.WaitFor(t, "r", 13); !slices.Equal(got, span(1, 13)) {
			t.Fatalf("delivered %v after the reset, want 1..13", got)
		}
		if r := rec.Resets(); len(r) != 1 {
			t.Fatalf("resets %v, want one", r)
		}
	})
}
