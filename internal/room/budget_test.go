package room_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/store"
)

// overBudget fails unless err is a rate_limited error naming room roomID's
// budget (field roomID) with what in its message.
func overBudget(t *testing.T, err error, roomID, what string) {
	t.Helper()
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeRateLimited || pe.Field != "roomID" ||
		!strings.Contains(pe.Message, "room "+roomID+" ") || !strings.Contains(pe.Message, what) {
		t.Fatalf("err = %v, want rate_limited on field roomID naming room %s's budget of %s", err, roomID, what)
	}
}

// lastSeq is room roomID's last stored seq.
func lastSeq(t *testing.T, st store.Store, roomID string) int64 {
	t.Helper()
	info, _, err := st.Page(context.Background(), roomID, store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	return info.LastSeq
}

// A room takes RoomMsgs messages a second from all its members together,
// twice that at once; past it the sender gets rate_limited naming the
// room's budget, and nothing is stored or delivered. A member that sends
// little still gets through, from a reserve of one second's worth; over
// time the room takes no more than its budget.
func TestRoomMessageBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore()
		reg := newRegistry(t, st, room.Options{Budgets: room.Budgets{RoomMsgs: 10}})
		flooder, quiet, watcher := connect(t, reg), connect(t, reg), connect(t, reg)
		for _, p := range []*peer{flooder, quiet, watcher} {
			p.join("r")
		}
		sleep(time.Second)
		watcher.conn.take()

		sent := 0
		for i := range 100 {
			if err := reg.Send(flooder.user, "r", fmt.Sprint("flood ", i), ""); err != nil {
				overBudget(t, err, "r", "10 messages a second")
				continue
			}
			sent++
		}
		if sent != 20 {
			t.Fatalf("a burst of 100 into a room with a budget of 10/s: %d taken, want 20 (two seconds' worth)", sent)
		}
		// The room is over its budget; the quiet member is not over its
		// own (5 at once, one a second).
		for i := range 5 {
			if err := reg.Send(quiet.user, "r", fmt.Sprint("quiet ", i), ""); err != nil {
				t.Fatalf("quiet message %d: %v", i, err)
			}
		}
		overBudget(t, reg.Send(quiet.user, "r", "one too many", ""), "r", "10 messages a second")
		sleep(time.Second)
		if got := len(seqs(t, watcher.conn.take())); got != 25 {
			t.Fatalf("the watcher got %d messages, want the 20 + 5 taken", got)
		}
		if got := lastSeq(t, st, "r"); got != 25 {
			t.Fatalf("stored up to seq %d, want 25", got)
		}

		// Ten seconds of flood at 100/s while the quiet member sends one
		// a second: the room takes its budget (100) and the 5 it had
		// left, give or take the reserve, and every quiet message.
		took := 0
		for i := range 1000 {
			if reg.Send(flooder.user, "r", "flood", "") == nil {
				took++
			}
			if i%100 == 50 {
				if err := reg.Send(quiet.user, "r", fmt.Sprint("quiet at ", i), ""); err != nil {
					t.Fatalf("quiet message during the flood: %v", err)
				}
				took++
			}
			sleep(10 * time.Millisecond)
		}
		if took < 100 || took > 100+5+10 {
			t.Fatalf("10 s of flood at a budget of 10/s: the room took %d messages, want 100 to 115", took)
		}
	})
}

// Custom events have a budget of their own (RoomEvents), and their bytes
// count with messages' against RoomBytes; a message larger than a bucket
// still goes through alone when the bucket is full.
func TestRoomEventAndByteBudgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{Budgets: room.Budgets{RoomEvents: 5, RoomBytes: 10000}})
		a, b := connect(t, reg), connect(t, reg)
		a.join("r")
		b.join("r")
		sent := 0
		for range 20 {
			if err := reg.Event(a.user, "r", "tick", nil); err != nil {
				overBudget(t, err, "r", "5 custom events a second")
				continue
			}
			sent++
		}
		if sent != 10 {
			t.Fatalf("a burst of 20 events at a budget of 5/s: %d taken, want 10", sent)
		}
		sleep(time.Second) // 5 events and 10,000 bytes back

		// Messages have no count budget here; 3,000-character ones
		// (about 3.1 KB as a frame) take 20,000 bytes as 6.
		sent = 0
		text := strings.Repeat("x", 3000)
		for range 20 {
			if err := reg.Send(b.user, "r", text, ""); err != nil {
				overBudget(t, err, "r", "10000 bytes")
				continue
			}
			sent++
		}
		if sent != 6 {
			t.Fatalf("3 KB messages into a room with 20,000 bytes: %d taken, want 6", sent)
		}
		// Events' data counts too: 8 KB of data is over what is left
		// (and b, which just sent 6 messages, is not quiet).
		overBudget(t, reg.Event(b.user, "r", "big", jsontext.Value(`"`+strings.Repeat("d", 8000)+`"`)), "r", "bytes of messages and events")

		// A message over a whole bucket goes through once it is full.
		big := newRegistry(t, memStore(), room.Options{Budgets: room.Budgets{RoomBytes: 1000}})
		c := connect(t, big)
		c.join("r")
		if err := big.Send(c.user, "r", text, ""); err != nil {
			t.Fatalf("a 3 KB message into a full bucket of 2,000 bytes: %v", err)
		}
		overBudget(t, big.Send(c.user, "r", "small", ""), "r", "1000 bytes")
	})
}

// A room takes RoomJoins joins a second, ten seconds' worth at once; past
// it a join is rate_limited (the joiner is not in the room, and nobody
// hears of it). A user coming back after a restart, whose join would have
// been silent but for it, is not refused. Re-joining a room one is in
// takes nothing.
func TestRoomJoinBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore()
		first := room.New(st, room.Options{})
		var tokens []string
		for range 5 {
			tokens = append(tokens, connect(t, first).user.Token())
		}
		first.Close()
		sleep(time.Second)

		reg := newRegistry(t, st, room.Options{Budgets: room.Budgets{RoomJoins: 2}})
		watcher := connect(t, reg)
		watcher.join("r") // 1 of 20
		for range 19 {
			connect(t, reg).join("r")
		}
		late := connect(t, reg)
		err := reg.Join(context.Background(), late.user, late.conn, "r", "", nil, "j")
		overBudget(t, err, "r", "2 joins a second")
		if n := len(listMembersOf(t, reg, "r")); n != 20 {
			t.Fatalf("%d members after a refused join, want 20", n)
		}
		watcher.join("r") // already in: nothing taken, no error

		// Back after the restart: not refused.
		for _, tok := range tokens {
			p, resumed := resume(t, reg, tok)
			if !resumed {
				t.Fatal("token from before the restart did not resume")
			}
			p.join("r")
		}
		sleep(time.Second)
		late.join("r") // two more a second
		if n := len(listMembersOf(t, reg, "r")); n != 26 {
			t.Fatalf("%d members, want 26", n)
		}
	})
}

// listMembersOf lists roomID's members (all: the tests' rooms are small).
func listMembersOf(t *testing.T, reg *room.Registry, roomID string) []protocol.User {
	t.Helper()
	users, _, err := reg.Members(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	return users
}

// A user's frames over all its connections: UserBurst at once, then
// UserFrames a second, however many connections it resumes on.
func TestUserFrameBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{Budgets: room.Budgets{UserFrames: 2, UserBurst: 4}})
		a := connect(t, reg)
		took := 0
		for range 3 {
			if a.user.TakeFrame() {
				took++
			}
		}
		a2, resumed := resume(t, reg, a.user.Token())
		if !resumed || a2.user != a.user {
			t.Fatal("did not resume")
		}
		for range 3 {
			if a2.user.TakeFrame() {
				took++
			}
		}
		if took != 4 {
			t.Fatalf("6 frames over two connections of one user: %d taken, want 4", took)
		}
		sleep(time.Second)
		if !a2.user.TakeFrame() || !a2.user.TakeFrame() || a2.user.TakeFrame() {
			t.Fatal("a second later: want 2 frames taken, then none")
		}
		if st := reg.Stats(); st.Refused.User != 3 {
			t.Fatalf("Stats().Refused.User = %d, want 3", st.Refused.User)
		}
	})
}

// The zero Budgets bounds nothing.
func TestNoBudgets(t *testing.T) {
	reg := newRegistry(t, memStore(), room.Options{})
	a := connect(t, reg)
	a.join("r")
	for i := range 1000 {
		if err := reg.Send(a.user, "r", "hi", ""); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if err := reg.Event(a.user, "r", "tick", nil); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if !a.user.TakeFrame() {
			t.Fatalf("frame %d refused", i)
		}
	}
	for range 100 {
		connect(t, reg).join("r")
	}
}
