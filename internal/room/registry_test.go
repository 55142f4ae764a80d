package room_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/store"
)

// sleep advances the bubble's clock by d and lets every timer due by then
// run to completion.
func sleep(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func memStore() *store.Memory { return store.NewMemory(store.Retention{MaxMessages: 1000}) }

func TestJoinHistoryAndLive(t *testing.T) {
	reg := newRegistry(t, memStore(), room.Options{})
	a := connect(t, reg)
	if j := a.join("r"); len(j.History) != 0 || j.LastSeq != 0 || j.Epoch == "" || j.Count != 1 {
		t.Fatalf("first join = %+v, want an empty room with an epoch and one member", j)
	}
	for i := range 3 {
		a.send("r", fmt.Sprint("m", i))
	}
	if got := seqs(t, a.conn.take()); !slices.Equal(got, span(1, 3)) {
		t.Fatalf("sender got seqs %v, want 1..3 (a sender receives its own messages)", got)
	}
	b := connect(t, reg)
	j := b.join("r")
	if got := seqsOf(j.History); !slices.Equal(got, span(1, 3)) || j.LastSeq != 3 || j.Count != 2 {
		t.Fatalf("second join: history %v lastSeq %d count %d, want 1..3, 3, 2", got, j.LastSeq, j.Count)
	}
	a.send("r", "m3")
	if got := seqs(t, b.conn.take()); !slices.Equal(got, []int64{4}) {
		t.Fatalf("after joined, b got seqs %v, want [4]", got)
	}

	since := int64(2)
	c := connect(t, reg)
	j = c.joinSince("r", &since)
	if got := seqsOf(j.History); !slices.Equal(got, span(3, 4)) || j.More {
		t.Fatalf("join since 2: history %v more %v, want 3..4 and no more", got, j.More)
	}
}

// A message stored but not yet delivered when a join reads history (as
// SQLite does: it commits a batch, then calls back per message) is in the
// joined reply's history and lastSeq; its delivery must then skip the new
// member, which would otherwise see that seq twice.
func TestJoinSkipsDeliveryOfSeqInHistory(t *testing.T) {
	st := newHeldStore()
	reg := newRegistry(t, st, room.Options{})
	a := connect(t, reg)
	a.join("r")
	a.send("r", "one")

	st.mu.Lock()
	st.holdDone = true
	st.mu.Unlock()
	a.send("r", "two") // stored as seq 2, delivery held

	b := connect(t, reg)
	j := b.join("r")
	if got := seqsOf(j.History); !slices.Equal(got, span(1, 2)) || j.LastSeq != 2 {
		t.Fatalf("joined history %v lastSeq %d, want 1..2 and 2", got, j.LastSeq)
	}
	st.release()
	a.send("r", "three")
	if got := seqs(t, b.conn.take()); !slices.Equal(got, []int64{3}) {
		t.Fatalf("b got msg seqs %v after joined, want [3]: seq 2 was in its history", got)
	}
	if got := seqs(t, a.conn.take()); !slices.Equal(got, span(1, 3)) {
		t.Fatalf("a got %v, want 1..3", got)
	}
}

// joinHeldAtPage sets up a join caught in its history read, inside a
// synctest bubble: a is a member of room "r", which holds seq 1, and b's
// join (id "j") has registered, read the room's moderation state, and
// waits on gate in the store's Page; its outcome goes to joinErr.
func joinHeldAtPage(t *testing.T) (reg *room.Registry, a, b *peer, gate chan struct{}, joinErr chan error) {
	t.Helper()
	st := newHeldStore()
	reg = newRegistry(t, st, room.Options{})
	a = connect(t, reg)
	a.join("r")
	a.send("r", "one")

	gate = make(chan struct{})
	st.mu.Lock()
	st.holdPage = gate
	st.mu.Unlock()
	b = connect(t, reg)
	joinErr = make(chan error, 1)
	go func() {
		joinErr <- reg.Join(context.Background(), b.user, b.conn, "r", "", nil, "j")
	}()
	synctest.Wait()
	return reg, a, b, gate, joinErr
}

// Messages delivered while a join reads an older snapshot follow joined,
// in order, each once; joined comes first.
func TestJoinMergesDeliveriesDuringRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b, gate, joinErr := joinHeldAtPage(t)
		a.send("r", "two")
		a.send("r", "three")
		if got := b.conn.take(); len(got) != 0 {
			t.Fatalf("b got %d frames before joined", len(got))
		}
		close(gate)
		if err := <-joinErr; err != nil {
			t.Fatal(err)
		}
		frames := b.conn.take()
		if len(frames) == 0 || frames[0].env.Type != protocol.TypeJoined {
			t.Fatalf("b's first frame is not joined: %v", frames)
		}
		var j protocol.Joined
		decode(t, frames[0].env, &j)
		if got := seqsOf(j.History); !slices.Equal(got, []int64{1}) || j.LastSeq != 1 {
			t.Fatalf("joined history %v lastSeq %d, want [1] and 1", got, j.LastSeq)
		}
		if got := seqs(t, frames); !slices.Equal(got, span(2, 3)) {
			t.Fatalf("after joined b got %v, want 2..3", got)
		}
		a.send("r", "four")
		if got := seqs(t, b.conn.take()); !slices.Equal(got, []int64{4}) {
			t.Fatalf("b got %v once live, want [4]", got)
		}
	})
}

// A re-join whose history read fails keeps the member receiving, starting
// with what was delivered while it read: nothing is lost.
func TestFailedRejoinLosesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newHeldStore()
		reg := newRegistry(t, st, room.Options{})
		a, b := connect(t, reg), connect(t, reg)
		a.join("r")
		b.join("r")
		b.conn.take()

		gate := make(chan struct{})
		st.mu.Lock()
		st.holdPage, st.failPage = gate, true
		st.mu.Unlock()
		joinErr := make(chan error, 1)
		since := int64(0)
		go func() { joinErr <- reg.Join(context.Background(), b.user, b.conn, "r", "", &since, "j") }()
		synctest.Wait()
		a.send("r", "while b re-joins")
		close(gate)
		wantCode(t, <-joinErr, protocol.CodeStoreUnavailable, "")
		a.send("r", "after")
		frames := b.conn.take()
		if n := len(ofType(frames, protocol.TypeJoined)); n != 0 {
			t.Fatalf("a failed join queued %d joined replies", n)
		}
		if got := seqs(t, frames); !slices.Equal(got, span(1, 2)) {
			t.Fatalf("b got seqs %v, want 1 (delivered while it re-joined) and 2", got)
		}
	})
}

func TestJoinErrors(t *testing.T) {
	reg := newRegistry(t, memStore(), room.Options{Limits: limits(func(l *protocol.Limits) {
		l.RoomCapacity = 2
		l.MaxRooms = 2
	})})
	a, b, c := connect(t, reg), connect(t, reg), connect(t, reg)
	a.join("r")
	b.join("r")
	err := reg.Join(context.Background(), c.user, c.conn, "r", "", nil, "j")
	wantCode(t, err, protocol.CodeRoomFull, "")
	if _, n := listMembers(t, reg, "r"); n != 2 {
		t.Fatalf("count %d after a refused join, want 2", n)
	}

	a.join("s")
	err = reg.Join(context.Background(), a.user, a.conn, "t", "", nil, "j")
	wantCode(t, err, protocol.CodeRoomLimit, "")
	a.join("r") // joining a room one is in again is no new room
	if err := reg.Leave(a.user, a.conn, "s", ""); err != nil {
		t.Fatal(err)
	}
	a.join("t")
}

// Room capacity counts members with a connection: a member waiting out its
// grace period leaves its place free, and gets it back on resume even if
// the room filled meanwhile (the room then holds one more member than its
// capacity until someone leaves).
func TestCapacityCountsLiveMembers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{Limits: limits(func(l *protocol.Limits) { l.RoomCapacity = 2 })})
		a, b := connect(t, reg), connect(t, reg)
		a.join("r")
		b.join("r")
		token := b.user.Token()
		b.drop(false)

		c := connect(t, reg)
		c.join("r") // b's place is free while b is away
		d := connect(t, reg)
		wantCode(t, reg.Join(context.Background(), d.user, d.conn, "r", "", nil, "j"), protocol.CodeRoomFull, "")

		sleep(5 * time.Second) // within the grace period
		b2, resumed := resume(t, reg, token)
		if !resumed {
			t.Fatal("b did not resume")
		}
		j := b2.join("r")
		if j.Count != 3 {
			t.Fatalf("b back in a full room: count %d, want 3", j.Count)
		}
		wantCode(t, reg.Join(context.Background(), d.user, d.conn, "r", "", nil, "j"), protocol.CodeRoomFull, "")
		if err := reg.Leave(c.user, c.conn, "r", ""); err != nil {
			t.Fatal(err)
		}
		wantCode(t, reg.Join(context.Background(), d.user, d.conn, "r", "", nil, "j"), protocol.CodeRoomFull, "")
		if err := reg.Leave(a.user, a.conn, "r", ""); err != nil {
			t.Fatal(err)
		}
		d.join("r")
	})
}

// resolve's rules: an empty roomID means the only room the user is in on
// this connection.
func TestEmptyRoomID(t *testing.T) {
	reg := newRegistry(t, memStore(), room.Options{})
	a := connect(t, reg)
	wantCode(t, reg.Send(a.user, "", "hi", ""), protocol.CodeNotInRoom, "")
	wantCode(t, reg.Send(a.user, "r", "hi", ""), protocol.CodeNotInRoom, "")
	a.join("r")
	a.send("", "to r")
	if got := seqs(t, a.conn.take()); !slices.Equal(got, []int64{1}) {
		t.Fatalf("got %v, want [1]", got)
	}
	a.join("s")
	wantCode(t, reg.Send(a.user, "", "hi", ""), protocol.CodeRoomRequired, "roomID")
	wantCode(t, reg.Typing(a.user, ""), protocol.CodeRoomRequired, "roomID")
	wantCode(t, reg.Leave(a.user, a.conn, "", ""), protocol.CodeRoomRequired, "roomID")
	if err := reg.Leave(a.user, a.conn, "s", "l1"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Leave(a.user, a.conn, "", "l2"); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, f := range ofType(a.conn.take(), protocol.TypeLeft) {
		var l protocol.Left
		decode(t, f.env, &l)
		left = append(left, f.env.ID+":"+l.RoomID)
	}
	if !slices.Equal(left, []string{"l1:s", "l2:r"}) {
		t.Fatalf("left replies %v, want [l1:s l2:r]", left)
	}
	wantCode(t, reg.Send(a.user, "", "hi", ""), protocol.CodeNotInRoom, "")
	wantCode(t, reg.Leave(a.user, a.conn, "r", ""), protocol.CodeNotInRoom, "")
	if _, n := listMembers(t, reg, "r"); n != 0 {
		t.Fatalf("r has %d members after its only member left", n)
	}
}

// A drop without a close frame keeps the member for the grace period
// (15 s): the others see a leave only when it ends. A clean close leaves
// at once.
func TestGracePeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		a, b, c := connect(t, reg), connect(t, reg), connect(t, reg)
		a.join("r")
		b.join("r")
		c.join("r")
		sleep(time.Second)
		a.conn.take()

		b.drop(false)
		sleep(15*time.Second - time.Millisecond)
		if got := presences(t, a.conn.take()); len(got) != 0 {
			t.Fatalf("presence within the grace period: %+v", got)
		}
		if _, n := listMembers(t, reg, "r"); n != 3 {
			t.Fatalf("count %d within the grace period, want 3", n)
		}
		sleep(time.Second)
		got := presences(t, a.conn.take())
		if len(got) != 1 || got[0].Event != protocol.PresenceLeave || got[0].User.UserID != b.user.ID() || got[0].Count != 2 {
			t.Fatalf("after the grace period: %+v, want b's leave with count 2", got)
		}

		c.drop(true)
		sleep(time.Second)
		got = presences(t, a.conn.take())
		if len(got) != 1 || got[0].Event != protocol.PresenceLeave || got[0].User.UserID != c.user.ID() {
			t.Fatalf("after a clean close: %+v, want c's leave at once", got)
		}
	})
}

// A member that resumes and joins again within the grace period is never
// seen to leave or join; a second drop gives a whole new grace period,
// which an earlier drop's timer does not cut short.
func TestGraceGenerations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		a, b := connect(t, reg), connect(t, reg)
		a.join("r")
		b.join("r")
		sleep(time.Second)
		a.conn.take()

		b.drop(false)
		sleep(5 * time.Second)
		b2, resumed := resume(t, reg, b.user.Token())
		if !resumed || b2.user.ID() != b.user.ID() {
			t.Fatal("b did not resume as itself")
		}
		j := b2.join("r")
		if j.Count != 2 {
			t.Fatalf("re-joined count %d, want 2", j.Count)
		}
		sleep(30 * time.Second)
		if got := presences(t, a.conn.take()); len(got) != 0 {
			t.Fatalf("a silent re-join within grace was announced: %+v", got)
		}

		// Drop at 0, resume at 10 s without joining, drop again at 12 s:
		// the leave comes 15 s after the second drop.
		b2.drop(false)
		sleep(10 * time.Second)
		b3, _ := resume(t, reg, b2.user.Token())
		sleep(2 * time.Second)
		b3.drop(false)
		sleep(15*time.Second - time.Millisecond)
		if got := presences(t, a.conn.take()); len(got) != 0 {
			t.Fatalf("leave before the second grace period ended: %+v", got)
		}
		sleep(time.Second)
		if got := presences(t, a.conn.take()); len(got) != 1 || got[0].Event != protocol.PresenceLeave {
			t.Fatalf("after the second grace period: %+v, want one leave", got)
		}
	})
}

// A resume token keeps its userID for the resume window (2 min) after a
// drop; later it gives a new user. The token used to resume keeps working
// for 30 s, for a client that lost the welcome with the new one.
func TestResumeWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		a := connect(t, reg)
		id, name, token := a.user.ID(), a.user.Name(), a.user.Token()
		a.drop(false)
		sleep(2*time.Minute - time.Second)
		a2, resumed := resume(t, reg, token)
		if !resumed || a2.user.ID() != id || a2.user.Name() != name {
			t.Fatalf("resume within the window: resumed %v id %q name %q, want %q %q", resumed, a2.user.ID(), a2.user.Name(), id, name)
		}
		newToken := a2.user.Token()
		if newToken == token {
			t.Fatal("a resume gave the same token again")
		}

		sleep(20 * time.Second)
		a3, resumed := resume(t, reg, token) // the old token, within its overlap
		if !resumed || a3.user.ID() != id {
			t.Fatal("the token used to resume stopped working within 30 s")
		}
		sleep(11 * time.Second)
		if _, resumed := resume(t, reg, token); resumed {
			t.Fatal("the token used to resume still works after its 30 s")
		}

		current := a3.user.Token()
		a3.drop(false)
		sleep(2*time.Minute + time.Second)
		a4, resumed := resume(t, reg, current)
		if resumed || a4.user.ID() == id {
			t.Fatal("a token resumed after the resume window")
		}
		if _, resumed := resume(t, reg, current[:len(current)-2]+"AA"); resumed {
			t.Fatal("a forged token resumed")
		}
	})
}

// A token issued before the registry started (by an earlier process on the
// same store) resumes for the resume window after the start.
func TestResumeAcrossRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore()
		first := room.New(st, room.Options{})
		a := connect(t, first)
		id, name, token := a.user.ID(), a.user.Name(), a.user.Token()
		first.Close()

		sleep(time.Second)
		second := newRegistry(t, st, room.Options{})
		a2, resumed := resume(t, second, token)
		if !resumed || a2.user.ID() != id || a2.user.Name() != name {
			t.Fatalf("resume after a restart: %v %q %q, want %q %q", resumed, a2.user.ID(), a2.user.Name(), id, name)
		}

		b := connect(t, first)
		bToken := b.user.Token()
		sleep(time.Second)
		third := newRegistry(t, st, room.Options{})
		sleep(2*time.Minute + time.Second)
		if _, resumed := resume(t, third, bToken); resumed {
			t.Fatal("a token from before the start resumed after the resume window")
		}
		other := newRegistry(t, memStore(), room.Options{})
		if _, resumed := resume(t, other, token); resumed {
			t.Fatal("a token resumed on a store with another key")
		}
	})
}

// A token older than ResumeMaxAge (24 h) resumes nothing, whether its
// connection dropped within the resume window or the server restarted
// within it (SPEC §4 "Identity across reconnects").
func TestResumeMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore()
		first := room.New(st, room.Options{})
		a := connect(t, first)
		id, token := a.user.ID(), a.user.Token()
		sleep(24*time.Hour + time.Second) // connected all along
		a.drop(false)
		sleep(time.Second)
		if a2, resumed := resume(t, first, token); resumed || a2.user.ID() == id {
			t.Fatal("a token over 24 h old resumed a user that dropped a second ago")
		}

		b := connect(t, first)
		sleep(12 * time.Hour)
		c := connect(t, first)
		sleep(12*time.Hour - time.Minute)
		first.Close()
		// A restart, a minute later: b's token is 24 h old, c's 12 h.
		sleep(time.Minute + time.Second)
		second := newRegistry(t, st, room.Options{})
		if _, resumed := resume(t, second, b.user.Token()); resumed {
			t.Fatal("a token over 24 h old resumed within the window after a restart")
		}
		if c2, resumed := resume(t, second, c.user.Token()); !resumed || c2.user.ID() != c.user.ID() {
			t.Fatal("a token 12 h old did not resume within the window after a restart")
		}

		short := newRegistry(t, st, room.Options{ResumeMaxAge: time.Hour})
		d := connect(t, short)
		sleep(time.Hour + time.Second)
		d.drop(false)
		if _, resumed := resume(t, short, d.user.Token()); resumed {
			t.Fatal("ResumeMaxAge of 1 h: a token over an hour old resumed")
		}
	})
}

// Reissue gives a connected user a new token, which resumes after the old
// one is too old; the old one keeps working for 30 s, then only the new
// one does. It gives nothing for a connection that is not the user's.
func TestReissue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		reissue := func(p *peer) (old, fresh string) {
			t.Helper()
			old = p.user.Token()
			sleep(13 * time.Hour)
			if reg.Reissue(p.user, new(recorder)) != "" {
				t.Fatal("Reissue gave a token for a connection that is not the user's")
			}
			fresh = reg.Reissue(p.user, p.conn)
			if fresh == "" || fresh == old || p.user.Token() != fresh {
				t.Fatalf("Reissue gave %q (old %q, the user's now %q)", fresh, old, p.user.Token())
			}
			return old, fresh
		}

		a := connect(t, reg)
		old, fresh := reissue(a)
		sleep(12 * time.Hour) // the old token is 25 h old, the new one 12 h
		a.drop(false)
		sleep(time.Second)
		if _, resumed := resume(t, reg, old); resumed {
			t.Fatal("the replaced token, 25 h old, resumed")
		}
		if a2, resumed := resume(t, reg, fresh); !resumed || a2.user.ID() != a.user.ID() {
			t.Fatal("the reissued token did not resume")
		}

		b := connect(t, reg)
		old, _ = reissue(b)
		sleep(20 * time.Second)
		b.drop(false)
		if b2, resumed := resume(t, reg, old); !resumed || b2.user.ID() != b.user.ID() {
			t.Fatal("the replaced token stopped working within 30 s")
		}

		c := connect(t, reg)
		old, _ = reissue(c)
		sleep(31 * time.Second)
		c.drop(false)
		if _, resumed := resume(t, reg, old); resumed {
			t.Fatal("the replaced token still works 31 s after Reissue")
		}
		if reg.Reissue(c.user, c.conn) != "" {
			t.Fatal("Reissue gave a token to a user with no connection")
		}
	})
}

// Presence events go out 50 ms after they happen, together with any
// others of that moment; during a burst they go out at most once a second.
func TestPresenceCoalescing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		watcher := connect(t, reg)
		watcher.join("r")
		watcher.conn.take()
		start := time.Now()

		first := connect(t, reg)
		first.join("r")
		sleep(49 * time.Millisecond)
		if got := watcher.conn.take(); len(got) != 0 {
			t.Fatalf("presence went out before 50 ms: %d frames", len(got))
		}
		sleep(time.Millisecond)
		got := watcher.conn.take()
		if ps := presences(t, got); len(ps) != 1 || ps[0].User.UserID != first.user.ID() || ps[0].Count != 2 {
			t.Fatalf("after 50 ms: %+v, want first's join, count 2", ps)
		}

		// A burst: 40 joins 10 ms apart.
		var joiners []string
		for range 40 {
			p := connect(t, reg)
			p.join("r")
			joiners = append(joiners, p.user.ID())
			sleep(10 * time.Millisecond)
		}
		sleep(2 * time.Second)
		frames := watcher.conn.take()
		ps := presences(t, frames)
		var order []string
		for i, p := range ps {
			order = append(order, p.User.UserID)
			if p.Event != protocol.PresenceJoin || p.Count != i+3 {
				t.Fatalf("presence %d: %+v, want a join with count %d", i, p, i+3)
			}
		}
		if !slices.Equal(order, joiners) {
			t.Fatalf("joins announced in order %v, want %v", order, joiners)
		}
		// Group the events by the moment they were queued: one flush each.
		type flush struct {
			at     time.Duration
			events int
		}
		var flushes []flush
		for _, f := range frames {
			d := f.at.Sub(start)
			if len(flushes) == 0 || flushes[len(flushes)-1].at != d {
				flushes = append(flushes, flush{at: d})
			}
			flushes[len(flushes)-1].events++
		}
		// Until more than presenceBurst (4) events fell within a second,
		// each goes out 50 ms after it happened; from then on, flushes are
		// at least a second apart.
		seen := 1 // first's join, in the same window
		for i, f := range flushes {
			if i > 0 && seen > 4 && f.at-flushes[i-1].at < time.Second {
				t.Errorf("flushes %v: %v after the previous one during a burst, want ≥ 1 s", flushes, f.at-flushes[i-1].at)
			}
			seen += f.events
		}
		if len(flushes) > 3 {
			t.Errorf("a 400 ms burst of 40 joins went out in %d writes (%v), want at most 3", len(flushes), flushes)
		}
	})
}

// A steady wave of joins, one every 60 ms for 5 s (slower than the 50 ms
// delay, as when 17,000 clients join 170 rooms in turn), stays a burst from
// one second to the next: after the first presenceBurst events a member
// gets one flush a second, where starting every second afresh sent each
// second's first presenceBurst events a flush each.
func TestPresenceSteadyWave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		watcher := connect(t, reg)
		watcher.join("r")
		watcher.conn.take()
		joins := 0
		for range 5000 / 60 {
			p := connect(t, reg)
			p.join("r")
			joins++
			sleep(60 * time.Millisecond)
		}
		sleep(2 * time.Second)
		frames := watcher.conn.take()
		if ps := presences(t, frames); len(ps) != joins {
			t.Fatalf("%d presence events for %d joins", len(ps), joins)
		}
		var flushes []time.Time
		for _, f := range frames {
			if len(flushes) == 0 || !flushes[len(flushes)-1].Equal(f.at) {
				flushes = append(flushes, f.at)
			}
		}
		// Four single events, then one flush a second (5 s of joins, and
		// the last ones a second later).
		if len(flushes) > 4+6 {
			t.Errorf("%d joins over 5 s went out in %d flushes, want at most 10", joins, len(flushes))
		}
		for i := 5; i < len(flushes); i++ {
			if gap := flushes[i].Sub(flushes[i-1]); gap < time.Second {
				t.Errorf("flush %d came %v after the one before, want ≥ 1 s once the wave is a burst", i, gap)
			}
		}
	})
}

// Pending presence goes out before a message, so every member sees the
// room's events in the order they happened.
func TestPresenceBeforeMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		a, b := connect(t, reg), connect(t, reg)
		a.join("r")
		sleep(time.Second)
		a.conn.take()
		b.join("r")
		b.send("r", "hello")
		frames := a.conn.take()
		if len(frames) != 2 || frames[0].env.Type != protocol.TypePresence || frames[1].env.Type != protocol.TypeMsg {
			t.Fatalf("a got %v, want presence then msg", frames)
		}
	})
}

// typing goes to the other live members at most once per 2 s per user and
// room; more is dropped without an error.
func TestTypingThrottle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		a, b := connect(t, reg), connect(t, reg)
		a.join("r")
		a.join("s")
		b.join("r")
		sleep(time.Second)
		a.conn.take()
		b.conn.take()
		for range 20 {
			if err := reg.Typing(a.user, "r"); err != nil {
				t.Fatal(err)
			}
			sleep(50 * time.Millisecond)
		}
		if err := reg.Typing(a.user, "s"); err != nil { // another room: its own budget
			t.Fatal(err)
		}
		if got := ofType(b.conn.take(), protocol.TypeTyping); len(got) != 1 {
			t.Fatalf("b got %d typing events for 20 in 1 s, want 1", len(got))
		}
		sleep(time.Second)
		if err := reg.Typing(a.user, "r"); err != nil {
			t.Fatal(err)
		}
		got := ofType(b.conn.take(), protocol.TypeTyping)
		if len(got) != 1 {
			t.Fatalf("b got %d typing events 2 s later, want 1", len(got))
		}
		var ty protocol.Typing
		decode(t, got[0].env, &ty)
		if ty.User.UserID != a.user.ID() || ty.RoomID != "r" {
			t.Fatalf("typing %+v, want a's in r", ty)
		}
		if got := ofType(a.conn.take(), protocol.TypeTyping); len(got) != 0 {
			t.Fatalf("a got its own typing: %d", len(got))
		}
	})
}

func TestEvents(t *testing.T) {
	reg := newRegistry(t, memStore(), room.Options{})
	a, b, c := connect(t, reg), connect(t, reg), connect(t, reg)
	a.join("r")
	b.join("r")
	c.join("other")
	if err := reg.Event(a.user, "r", "cursor", jsontext.Value(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	wantCode(t, reg.Event(c.user, "r", "cursor", nil), protocol.CodeNotInRoom, "")
	got := ofType(b.conn.take(), protocol.TypeEvent)
	if len(got) != 1 {
		t.Fatalf("b got %d events, want 1", len(got))
	}
	var ev protocol.Event
	decode(t, got[0].env, &ev)
	if ev.Name != "cursor" || string(ev.Data) != `{"x":1}` || ev.From.UserID != a.user.ID() {
		t.Fatalf("event %+v", ev)
	}
	if n := len(ofType(a.conn.take(), protocol.TypeEvent)); n != 0 {
		t.Fatalf("the sender got its own event %d times", n)
	}
	if n := reg.PostEvent("r", "deploy", nil); n != 2 {
		t.Fatalf("PostEvent reached %d members, want 2", n)
	}
	if n := reg.PostEvent("nobody-here", "deploy", nil); n != 0 {
		t.Fatalf("PostEvent to an empty room reached %d", n)
	}
	got = ofType(a.conn.take(), protocol.TypeEvent)
	if len(got) != 1 {
		t.Fatalf("a got %d posted events", len(got))
	}
	decode(t, got[0].env, &ev)
	if string(ev.Data) != "null" || ev.From.UserID != "" {
		t.Fatalf("posted event %+v, want null data and no sender", ev)
	}
}

func TestMembersCapped(t *testing.T) {
	reg := newRegistry(t, memStore(), room.Options{Limits: limits(func(l *protocol.Limits) { l.MaxMembers = 2 })})
	for range 3 {
		connect(t, reg).join("r")
	}
	p := connect(t, reg)
	j := p.join("r")
	if len(j.Members) != 2 || j.Count != 4 {
		t.Fatalf("joined members %d count %d, want 2 and 4", len(j.Members), j.Count)
	}
	if m, n := listMembers(t, reg, "r"); len(m) != 2 || n != 4 {
		t.Fatalf("Members: %d listed, count %d, want 2 and 4", len(m), n)
	}
}

// joined lists the room's members as Members does, through joins (which
// extend the list the room keeps encoded), leaves, renames and the cap.
func TestJoinedListsMembers(t *testing.T) {
	reg := newRegistry(t, memStore(), room.Options{Limits: limits(func(l *protocol.Limits) { l.MaxMembers = 4 })})
	check := func(p *peer, what string) {
		t.Helper()
		j := p.joined()
		want, n := listMembers(t, reg, "r")
		if !slices.Equal(j.Members, want) || j.Count != n {
			t.Fatalf("%s: joined lists %v (count %d), Members %v (count %d)", what, j.Members, j.Count, want, n)
		}
	}
	joinAs := func(p *peer, name string) {
		t.Helper()
		if err := reg.Join(context.Background(), p.user, p.conn, "r", name, nil, "j"); err != nil {
			t.Fatal(err)
		}
	}
	var peers []*peer
	for i := range 3 {
		p := connect(t, reg)
		joinAs(p, fmt.Sprintf("p%d", i))
		check(p, fmt.Sprintf("join %d", i))
		peers = append(peers, p)
	}
	joinAs(peers[1], "renamed")
	check(peers[1], "rename")
	late := connect(t, reg)
	late.join("r")
	check(late, "join after a rename")
	if err := reg.Leave(peers[0].user, peers[0].conn, "r", ""); err != nil {
		t.Fatal(err)
	}
	for i := range 4 { // past the cap of 4
		p := connect(t, reg)
		joinAs(p, fmt.Sprintf("q%d", i))
		check(p, fmt.Sprintf("join %d after a leave", i))
	}
}

// A retried msg (same user, room and id) is stored once and acked with the
// first seq; the same id in another room is another message.
func TestSendDeduplicates(t *testing.T) {
	reg := newRegistry(t, memStore(), room.Options{})
	a := connect(t, reg)
	a.join("r")
	a.join("s")
	for range 2 {
		if err := reg.Send(a.user, "r", "once", "id-1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.Send(a.user, "s", "once", "id-1"); err != nil {
		t.Fatal(err)
	}
	frames := a.conn.take()
	var acks []int64
	for _, f := range ofType(frames, protocol.TypeAck) {
		var ack protocol.Ack
		decode(t, f.env, &ack)
		acks = append(acks, ack.Seq)
	}
	if !slices.Equal(acks, []int64{1, 1, 1}) || !slices.Equal(seqs(t, frames), []int64{1, 1}) {
		t.Fatalf("acks %v msgs %v, want acks [1 1 1] (r, r again, s) and msgs [1 1] (one per room)", acks, seqs(t, frames))
	}
}

// Many members join, send, drop, resume and join again on one room at
// once (run with -race): after each joined, a member sees msg events
// continuing its lastSeq with no gap or repeat, every history it pages
// through is gap-free, and the room ends with exactly its members, each
// having seen the last message.
func TestConcurrentRoom(t *testing.T) {
	reg := newRegistry(t, memStore(), room.Options{})
	const members, rounds = 16, 30
	var wg sync.WaitGroup
	conns := make([][]*recorder, members) // every connection of each member
	for i := range members {
		wg.Go(func() {
			p := connect(t, reg)
			conns[i] = append(conns[i], p.conn)
			for r := range rounds {
				if r%10 == 5 {
					p.drop(false)
					p2, resumed := resume(t, reg, p.user.Token())
					if !resumed {
						t.Errorf("member %d: resume failed", i)
						return
					}
					p = p2
					conns[i] = append(conns[i], p.conn)
				}
				if r%10 == 0 || r%10 == 5 {
					since := int64(0)
					if err := reg.Join(context.Background(), p.user, p.conn, "r", "", &since, "j"); err != nil {
						t.Errorf("member %d join: %v", i, err)
						return
					}
					checkHistory(t, i, p)
				}
				if err := reg.Send(p.user, "r", fmt.Sprintf("%d-%d", i, r), fmt.Sprintf("%d-%d", i, r)); err != nil {
					t.Errorf("member %d send: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := int64(members * rounds)
	for i, cs := range conns {
		for k, c := range cs {
			last := checkSegments(t, i, c.take())
			if k == len(cs)-1 && last != total {
				t.Errorf("member %d: last seq seen %d, want %d", i, last, total)
			}
		}
	}
	if _, n := listMembers(t, reg, "r"); n != members {
		t.Errorf("room has %d members, want %d", n, members)
	}
}

// checkHistory pages through the history of p's last joined (since 0:
// the whole room) and checks it has no gap.
func checkHistory(t *testing.T, who int, p *peer) {
	j := p.joined()
	hist := seqsOf(j.History)
	for more := j.More; more && len(hist) > 0; {
		h, err := p.reg.History(context.Background(), p.user, "r", hist[len(hist)-1], 0)
		if err != nil {
			t.Errorf("member %d: history: %v", who, err)
			return
		}
		hist = append(hist, seqsOf(h.Messages)...)
		more = h.More
	}
	if len(hist) > 0 && !slices.Equal(hist, span(1, hist[len(hist)-1])) {
		t.Errorf("member %d: history %v has a gap", who, hist)
	}
	// Paging goes on past lastSeq when messages keep coming: history
	// answers up to the room's last seq at each request.
	if n := int64(len(hist)); n < j.LastSeq {
		t.Errorf("member %d: history ends at seq %d, before joined.lastSeq %d", who, n, j.LastSeq)
	}
}

// checkSegments checks one connection's frames: after each joined, msg
// events continue its lastSeq by one each. It returns the last seq seen.
func checkSegments(t *testing.T, who int, frames []frame) int64 {
	var next int64 = -1 // -1: before the first joined
	var last int64
	for _, f := range frames {
		switch f.env.Type {
		case protocol.TypeJoined:
			var j protocol.Joined
			decode(t, f.env, &j)
			next, last = j.LastSeq+1, j.LastSeq
		case protocol.TypeMsg:
			var m protocol.Message
			decode(t, f.env, &m)
			if m.Seq != next {
				t.Errorf("member %d: msg seq %d, want %d", who, m.Seq, next)
				return last
			}
			next, last = next+1, m.Seq
		}
	}
	return last
}

func seqsOf(msgs []protocol.Message) []int64 {
	out := []int64{}
	for _, m := range msgs {
		out = append(out, m.Seq)
	}
	return out
}

// Every broker subscription a join takes is given back when its member
// goes: by leave, clean close, the end of a grace period, or a join that
// failed.
func TestSubscriptionsBalanced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newHeldStore()
		lb := broker.NewLocal(st)
		reg := newRegistry(t, st, room.Options{Broker: lb})
		lb.Start(reg.Handler())
		a, b, c := connect(t, reg), connect(t, reg), connect(t, reg)
		a.join("r")
		a.join("s")
		b.join("r")
		c.join("r")
		a.join("r") // again: no second subscription
		if n := lb.Subscriptions(); n != 4 {
			t.Fatalf("%d subscriptions for 4 memberships", n)
		}
		if err := reg.Leave(a.user, a.conn, "s", ""); err != nil {
			t.Fatal(err)
		}
		b.drop(true)
		c.drop(false)
		if n := lb.Subscriptions(); n != 2 {
			t.Fatalf("%d subscriptions after a leave and a clean close, want 2 (a in r, c in its grace period)", n)
		}
		sleep(16 * time.Second)
		if n := lb.Subscriptions(); n != 1 {
			t.Fatalf("%d subscriptions after c's grace period, want 1", n)
		}

		// A join whose history read fails gives its subscription back.
		st.mu.Lock()
		st.failPage = true
		st.mu.Unlock()
		d := connect(t, reg)
		wantCode(t, reg.Join(context.Background(), d.user, d.conn, "t", "", nil, "j"), protocol.CodeStoreUnavailable, "")
		if n := lb.Subscriptions(); n != 1 {
			t.Fatalf("%d subscriptions after a failed join, want 1", n)
		}
		d.drop(true)
		a.drop(true)
		if n := lb.Subscriptions(); n != 0 {
			t.Fatalf("%d subscriptions once everyone left, want 0", n)
		}
	})
}

// When the broker says a room started over (a new epoch: its history was
// lost), every member with a connection gets a new joined, with the new
// epoch and truncated set, before any later message; a member in its
// grace period gets its joined when it joins again.
func TestResetSendsNewJoined(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newHeldStore()
		lb := broker.NewLocal(st)
		reg := newRegistry(t, st, room.Options{Broker: lb})
		h := reg.Handler()
		lb.Start(h)
		a, b, c := connect(t, reg), connect(t, reg), connect(t, reg)
		a.join("r")
		b.join("r")
		c.join("r")
		a.send("r", "one")
		c.drop(false)
		sleep(time.Second)
		a.conn.take()
		b.conn.take()

		gate := make(chan struct{})
		st.mu.Lock()
		st.epoch, st.holdPage = "new-epoch", gate
		st.mu.Unlock()
		h.Reset("r", "new-epoch")
		synctest.Wait()       // rejoin waits in Page
		a.send("r", "during") // seq 2: after the page, delivered once
		if got := b.conn.take(); len(got) != 0 {
			t.Fatalf("b got %v before its new joined", got)
		}
		close(gate)
		synctest.Wait()
		for _, p := range []*peer{a, b} {
			frames := p.conn.take()
			if len(frames) == 0 || frames[0].env.Type != protocol.TypeJoined {
				t.Fatalf("first frame after the reset is not joined: %v", frames)
			}
			var j protocol.Joined
			decode(t, frames[0].env, &j)
			if j.Epoch != "new-epoch" || !j.Truncated || frames[0].env.ID != "" {
				t.Fatalf("joined after reset: epoch %q truncated %v id %q", j.Epoch, j.Truncated, frames[0].env.ID)
			}
			if got := append(seqsOf(j.History), seqs(t, frames)...); !slices.Equal(got, []int64{1, 2}) {
				t.Fatalf("history then live after the reset: %v, want [1 2]", got)
			}
		}
		c2, _ := resume(t, reg, c.user.Token())
		if j := c2.join("r"); j.Epoch != "new-epoch" {
			t.Fatalf("c re-joined with epoch %q", j.Epoch)
		}
	})
}

// listMembers is Registry.Members on a single node, which cannot fail.
func listMembers(t *testing.T, reg *room.Registry, roomID string) ([]protocol.User, int) {
	t.Helper()
	m, n, err := reg.Members(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	return m, n
}

func TestNewRoomID(t *testing.T) {
	for range 5000 { // a leading "-" would come once in 64
		id := room.NewRoomID()
		if len(id) != protocol.RoomIDLen || id[0] == '-' || protocol.DefaultLimits().CheckRoomID("roomID", id) != nil {
			t.Fatalf("NewRoomID() = %q", id)
		}
	}
}

// A post rule set while a member's join reads the history reaches that
// member after its joined (SPEC §11 configured): a joined answered from
// the rule read before the change is never the member's last word.
func TestConfiguredDuringJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg, a, b, gate, joinErr := joinHeldAtPage(t)
		owner := room.Actor{User: protocol.User{UserID: "o", Name: "owner"}, Role: policy.RoleOwner}
		if err := reg.Configure(context.Background(), owner, "r", "moderators"); err != nil {
			t.Fatal(err)
		}
		if got := ofType(a.conn.take(), protocol.TypeConfigured); len(got) != 1 {
			t.Fatalf("a, live, got %d configured, want 1", len(got))
		}
		if got := b.conn.take(); len(got) != 0 {
			t.Fatalf("b got %d frames before joined", len(got))
		}
		close(gate)
		if err := <-joinErr; err != nil {
			t.Fatal(err)
		}
		frames := b.conn.take()
		var types []string
		for _, f := range frames {
			types = append(types, f.env.Type)
		}
		if !slices.Equal(types, []string{protocol.TypeJoined, protocol.TypeConfigured}) {
			t.Fatalf("b got %v, want joined then configured", types)
		}
		var c protocol.Configured
		decode(t, frames[1].env, &c)
		if c.Post != "moderators" || c.By.Name != "owner" {
			t.Fatalf("configured %+v", c)
		}
		// A join now says the rule itself.
		if j := connect(t, reg).join("r"); j.Post != "moderators" {
			t.Fatalf("joined.post %q after configure, want moderators", j.Post)
		}
	})
}
