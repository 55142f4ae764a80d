package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

// TestSeedFrames is the newcomer's check: the two frames of SPEC §4,
// exactly as written, chat in room 123, and room 456 hears nothing.
func TestSeedFrames(t *testing.T) {
	ts := newTestServer(t)
	a, b, other := dial(t, ts, ""), dial(t, ts, ""), dial(t, ts, "")
	a.send(`{"type":"join","payload":{"roomID":"123"}}`)
	a.expect(protocol.TypeJoined)
	b.send(`{"type":"join","payload":{"roomID":"123"}}`)
	b.expect(protocol.TypeJoined)
	a.expect(protocol.TypePresence)
	other.send(`{"type":"join","payload":{"roomID":"456"}}`)
	other.expect(protocol.TypeJoined)

	a.send(`{"type":"msg","payload":{"message":"hi there"}}`)
	for _, c := range []*client{a, b} {
		m := msgOf(t, c.expect(protocol.TypeMsg))
		if m.Message != "hi there" || m.RoomID != "123" || m.Seq != 1 || m.From.UserID != a.welcome.UserID {
			t.Fatalf("got %+v, want hi there from %s in 123 with seq 1", m, a.welcome.UserID)
		}
	}
	other.quiet(200 * time.Millisecond)
}

func TestWelcome(t *testing.T) {
	ts := newTestServer(t)
	a := dial(t, ts, "")
	w := a.welcome
	if len(w.UserID) != 21 || w.Resume == "" || w.Online != 1 {
		t.Fatalf("welcome = %+v, want a 21-char userID, a resume token and online 1", w)
	}
	if diff := cmp.Diff(protocol.DefaultLimits(), w.Limits); diff != "" {
		t.Fatalf("welcome.limits (-want +got):\n%s", diff)
	}
	b := dial(t, ts, "")
	if b.welcome.Online != 2 || b.welcome.UserID == w.UserID {
		t.Fatalf("second welcome = %+v, want online 2 and another userID", b.welcome)
	}
}

// step runs one part of a test that shares its clients with the others.
func step(t *testing.T, name string, f func()) {
	t.Helper()
	t.Logf("step: %s", name)
	f()
}

// TestClientFrames walks the client→server table of SPEC §4.
func TestClientFrames(t *testing.T) {
	ts := newTestServer(t)
	a, b := dial(t, ts, ""), dial(t, ts, "")

	step(t, "join", func() {
		a.send(`{"type":"join","id":"j1","payload":{"roomID":"lobby","name":"  alice  "}}`)
		f := a.expect(protocol.TypeJoined)
		if f.ID != "j1" {
			t.Fatalf("joined id = %q, want j1", f.ID)
		}
		var j protocol.Joined
		decode(t, f, &j)
		want := protocol.Joined{
			RoomID: "lobby", You: protocol.User{UserID: a.welcome.UserID, Name: "alice"},
			Members: []protocol.User{{UserID: a.welcome.UserID, Name: "alice"}}, Count: 1,
			History: []protocol.Message{}, LastSeq: 0, Epoch: j.Epoch,
		}
		if diff := cmp.Diff(want, j); diff != "" {
			t.Fatalf("joined (-want +got):\n%s", diff)
		}
		b.send(`{"type":"join","payload":{"roomID":"lobby"}}`)
		var jb protocol.Joined
		decode(t, b.expect(protocol.TypeJoined), &jb)
		if jb.Count != 2 || len(jb.Members) != 2 || !strings.HasPrefix(jb.You.Name, "guest-") || len(jb.You.Name) != 10 {
			t.Fatalf("second joined = %+v, want count 2 and a guest-xxxx name", jb)
		}
		var p protocol.Presence
		decode(t, a.expect(protocol.TypePresence), &p)
		if p != (protocol.Presence{RoomID: "lobby", Event: "join", User: jb.You, Count: 2}) {
			t.Fatalf("presence = %+v", p)
		}
	})

	step(t, "join again answers joined without presence", func() {
		a.send(`{"type":"join","id":"again","payload":{"roomID":"lobby"}}`)
		var j protocol.Joined
		decode(t, a.expect(protocol.TypeJoined), &j)
		if j.Count != 2 || j.You.Name != "alice" {
			t.Fatalf("joined again = %+v, want count 2, name alice", j)
		}
		b.quiet(100 * time.Millisecond)
	})

	step(t, "msg with id gets msg then ack", func() {
		a.send(`{"type":"msg","id":"m1","payload":{"message":"hello","roomID":"lobby"}}`)
		m := msgOf(t, a.expect(protocol.TypeMsg))
		ack := a.expect(protocol.TypeAck)
		var ap protocol.Ack
		decode(t, ack, &ap)
		if ack.ID != "m1" || ap.MsgID != m.ID || ap.Seq != m.Seq || m.Seq != 1 {
			t.Fatalf("ack %s for msg %+v", ack, m)
		}
		mb := msgOf(t, b.expect(protocol.TypeMsg))
		if mb != m {
			t.Fatalf("b got %+v, a got %+v", mb, m)
		}
		if time.Since(m.TS) > time.Minute || m.TS.Location() != time.UTC {
			t.Fatalf("ts = %v, want now in UTC", m.TS)
		}
		if !strings.Contains(string(ack.raw), `"msgID"`) {
			t.Fatalf("ack %s lacks msgID", ack)
		}
	})

	step(t, "same id again gets the original ack and no message", func() {
		a.send(`{"type":"msg","id":"m1","payload":{"message":"hello"}}`)
		ack := a.expect(protocol.TypeAck)
		var ap protocol.Ack
		decode(t, ack, &ap)
		if ap.Seq != 1 {
			t.Fatalf("retry ack = %s, want the original seq 1", ack)
		}
		b.quiet(150 * time.Millisecond)
	})

	step(t, "msg event format", func() {
		b.send(`{"type":"msg","payload":{"message":"  spaced  "}}`)
		f := b.expect(protocol.TypeMsg)
		m := msgOf(t, f)
		if m.Message != "  spaced  " {
			t.Fatalf("message = %q, want it as sent", m.Message)
		}
		// ts is RFC 3339 UTC with milliseconds.
		if !strings.Contains(string(f.raw), fmt.Sprintf(`"ts":"%s"`, m.TS.Format(protocol.TimeFormat))) || !strings.HasSuffix(m.TS.Format(protocol.TimeFormat), "Z") {
			t.Fatalf("raw msg %s: ts not RFC 3339 UTC ms", f)
		}
		a.expect(protocol.TypeMsg)
	})

	step(t, "typing goes to the others only", func() {
		a.send(`{"type":"typing","payload":{}}`)
		var ty protocol.Typing
		decode(t, b.expect(protocol.TypeTyping), &ty)
		if ty.RoomID != "lobby" || ty.User.UserID != a.welcome.UserID || ty.User.Name != "alice" {
			t.Fatalf("typing = %+v", ty)
		}
		a.quiet(100 * time.Millisecond)
	})

	step(t, "ping", func() {
		a.send(`{"type":"ping","id":"p"}`)
		if f := a.expect(protocol.TypePong); f.ID != "p" {
			t.Fatalf("pong id = %q, want p", f.ID)
		}
		a.send(`{"type":"ping"}`)
		a.expect(protocol.TypePong)
	})

	step(t, "create", func() {
		a.send(`{"type":"create","id":"c","payload":{}}`)
		f := a.expect(protocol.TypeCreated)
		var cr protocol.Created
		decode(t, f, &cr)
		if f.ID != "c" || len(cr.RoomID) != 21 || cr.URL != ts.URL+"/r/"+cr.RoomID {
			t.Fatalf("created %s: want id c, 21-char roomID, url %s/r/<id>", f, ts.URL)
		}
		if lim := protocol.DefaultLimits(); lim.CheckRoomID("roomID", cr.RoomID) != nil {
			t.Fatalf("created room ID %q is not a valid room ID", cr.RoomID)
		}
	})

	step(t, "leave", func() {
		b.send(`{"type":"leave","id":"l"}`)
		f := b.expect(protocol.TypeLeft)
		var l protocol.Left
		decode(t, f, &l)
		if f.ID != "l" || l.RoomID != "lobby" {
			t.Fatalf("left = %s", f)
		}
		var p protocol.Presence
		decode(t, a.expect(protocol.TypePresence), &p)
		if p.Event != "leave" || p.Count != 1 || p.User.UserID != b.welcome.UserID {
			t.Fatalf("presence = %+v, want b leaving, count 1", p)
		}
		b.send(`{"type":"msg","id":"x","payload":{"message":"still here?","roomID":"lobby"}}`)
		if e := b.expectError(protocol.CodeNotInRoom); e.Message == "" {
			t.Fatal("no message")
		}
	})
}

func TestHistoryOnJoin(t *testing.T) {
	ts := newTestServer(t, noRate)
	a := dial(t, ts, "")
	a.join("h")
	for i := 1; i <= 60; i++ {
		a.sendf(`{"type":"msg","payload":{"message":"m%d"}}`, i)
		a.expect(protocol.TypeMsg)
	}
	b := dial(t, ts, "")
	j := b.join("h")
	if len(j.History) != 50 || j.History[0].Seq != 11 || j.History[49].Seq != 60 || j.LastSeq != 60 || j.Truncated {
		t.Fatalf("joined: %d history from %d, lastSeq %d, truncated %v; want 50 from 11, lastSeq 60", len(j.History), j.History[0].Seq, j.LastSeq, j.Truncated)
	}
	c := dial(t, ts, "")
	c.send(`{"type":"join","payload":{"roomID":"h","since":57}}`)
	var js protocol.Joined
	decode(t, c.expect(protocol.TypeJoined), &js)
	if got := len(js.History); got != 3 || js.History[0].Seq != 58 {
		t.Fatalf("joined since 57: %d messages, want 58..60", got)
	}
}

func TestRoomRequired(t *testing.T) {
	ts := newTestServer(t)
	a := dial(t, ts, "")
	a.send(`{"type":"msg","payload":{"message":"nobody"}}`)
	a.expectError(protocol.CodeNotInRoom)
	a.join("one")
	a.join("two")
	a.send(`{"type":"msg","payload":{"message":"which?"}}`)
	e := a.expectError(protocol.CodeRoomRequired)
	if e.Field != "roomID" {
		t.Fatalf("room_required field = %q", e.Field)
	}
	a.send(`{"type":"leave","payload":{}}`)
	a.expectError(protocol.CodeRoomRequired)
	a.send(`{"type":"msg","payload":{"message":"to two","roomID":"two"}}`)
	if m := msgOf(t, a.expect(protocol.TypeMsg)); m.RoomID != "two" {
		t.Fatalf("msg went to %s", m.RoomID)
	}
	a.send(`{"type":"leave","payload":{"roomID":"three"}}`)
	a.expectError(protocol.CodeNotInRoom)
}

func TestRoomFull(t *testing.T) {
	ts := newTestServer(t, func(c *server.Config) {
		c.Limits = protocol.DefaultLimits()
		c.Limits.RoomCapacity = 2
	})
	a, b, c := dial(t, ts, ""), dial(t, ts, ""), dial(t, ts, "")
	a.join("small")
	b.join("small")
	c.send(`{"type":"join","id":"f","payload":{"roomID":"small"}}`)
	if f := c.expect(protocol.TypeError); f.ID != "f" || !strings.Contains(string(f.raw), protocol.CodeRoomFull) {
		t.Fatalf("got %s, want room_full with id f", f)
	}
	c.join("other")
}

// TestLeaveWithoutRoomID: leave without roomID leaves the one room, so a
// later msg without roomID is not_in_room, and after joining another room
// goes there.
func TestLeaveWithoutRoomID(t *testing.T) {
	ts := newTestServer(t)
	a := dial(t, ts, "")
	a.join("first")
	a.send(`{"type":"leave"}`)
	a.expect(protocol.TypeLeft)
	a.send(`{"type":"msg","payload":{"message":"anyone?"}}`)
	a.expectError(protocol.CodeNotInRoom)
	a.join("second")
	a.send(`{"type":"msg","payload":{"message":"here"}}`)
	if m := msgOf(t, a.expect(protocol.TypeMsg)); m.RoomID != "second" {
		t.Fatalf("msg went to %q, want second", m.RoomID)
	}
}
