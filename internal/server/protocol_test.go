package server_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

// TestSeedFrames is the newcomer's check: the two frames of SPEC §4,
// exactly as written, chat in room 123, and room 456 hears nothing.
func TestSeedFrames(t *testing.T) {
	ts := chattest.StartInProcess(t)
	a, b, other := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	a.Send(t, `{"type":"join","payload":{"roomID":"123"}}`)
	a.Expect(t, protocol.TypeJoined)
	b.Send(t, `{"type":"join","payload":{"roomID":"123"}}`)
	b.Expect(t, protocol.TypeJoined)
	a.Expect(t, protocol.TypePresence)
	other.Send(t, `{"type":"join","payload":{"roomID":"456"}}`)
	other.Expect(t, protocol.TypeJoined)

	a.Send(t, `{"type":"msg","payload":{"message":"hi there"}}`)
	for _, c := range []*chattest.Client{a, b} {
		m := chattest.MsgOf(t, c.Expect(t, protocol.TypeMsg))
		if m.Message != "hi there" || m.RoomID != "123" || m.Seq != 1 || m.From.UserID != a.Welcome.UserID {
			t.Fatalf("got %+v, want hi there from %s in 123 with seq 1", m, a.Welcome.UserID)
		}
	}
	other.Quiet(t, 200*time.Millisecond)
}

func TestWelcome(t *testing.T) {
	ts := chattest.StartInProcess(t)
	a := chattest.Dial(t, ts.URL, "")
	w := a.Welcome
	if len(w.UserID) != 21 || w.Resume == "" || w.Online != 1 {
		t.Fatalf("welcome = %+v, want a 21-char userID, a resume token and online 1", w)
	}
	if diff := cmp.Diff(protocol.DefaultLimits(), w.Limits); diff != "" {
		t.Fatalf("welcome.limits (-want +got):\n%s", diff)
	}
	b := chattest.Dial(t, ts.URL, "")
	if b.Welcome.Online != 2 || b.Welcome.UserID == w.UserID {
		t.Fatalf("second welcome = %+v, want online 2 and another userID", b.Welcome)
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
	ts := chattest.StartInProcess(t)
	a, b := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")

	step(t, "join", func() {
		a.Send(t, `{"type":"join","id":"j1","payload":{"roomID":"lobby","name":"  alice  "}}`)
		f := a.Expect(t, protocol.TypeJoined)
		if f.ID != "j1" {
			t.Fatalf("joined id = %q, want j1", f.ID)
		}
		var j protocol.Joined
		chattest.Decode(t, f, &j)
		want := protocol.Joined{
			RoomID: "lobby", You: protocol.User{UserID: a.Welcome.UserID, Name: "alice"},
			Members: []protocol.User{{UserID: a.Welcome.UserID, Name: "alice"}}, Count: 1,
			History: []protocol.Message{}, LastSeq: 0, Epoch: j.Epoch,
		}
		if diff := cmp.Diff(want, j); diff != "" {
			t.Fatalf("joined (-want +got):\n%s", diff)
		}
		b.Send(t, `{"type":"join","payload":{"roomID":"lobby"}}`)
		var jb protocol.Joined
		chattest.Decode(t, b.Expect(t, protocol.TypeJoined), &jb)
		if jb.Count != 2 || len(jb.Members) != 2 || !strings.HasPrefix(jb.You.Name, "guest-") || len(jb.You.Name) != 10 {
			t.Fatalf("second joined = %+v, want count 2 and a guest-xxxx name", jb)
		}
		var p protocol.Presence
		chattest.Decode(t, a.Expect(t, protocol.TypePresence), &p)
		if p != (protocol.Presence{RoomID: "lobby", Event: "join", User: jb.You, Count: 2}) {
			t.Fatalf("presence = %+v", p)
		}
	})

	step(t, "join again answers joined without presence", func() {
		a.Send(t, `{"type":"join","id":"again","payload":{"roomID":"lobby"}}`)
		var j protocol.Joined
		chattest.Decode(t, a.Expect(t, protocol.TypeJoined), &j)
		if j.Count != 2 || j.You.Name != "alice" {
			t.Fatalf("joined again = %+v, want count 2, name alice", j)
		}
		b.Quiet(t, 100*time.Millisecond)
	})

	step(t, "msg with id gets msg then ack", func() {
		a.Send(t, `{"type":"msg","id":"m1","payload":{"message":"hello","roomID":"lobby"}}`)
		m := chattest.MsgOf(t, a.Expect(t, protocol.TypeMsg))
		ack := a.Expect(t, protocol.TypeAck)
		var ap protocol.Ack
		chattest.Decode(t, ack, &ap)
		if ack.ID != "m1" || ap.MsgID != m.ID || ap.Seq != m.Seq || m.Seq != 1 {
			t.Fatalf("ack %s for msg %+v", ack, m)
		}
		mb := chattest.MsgOf(t, b.Expect(t, protocol.TypeMsg))
		if mb != m {
			t.Fatalf("b got %+v, a got %+v", mb, m)
		}
		if time.Since(m.TS) > time.Minute || m.TS.Location() != time.UTC {
			t.Fatalf("ts = %v, want now in UTC", m.TS)
		}
		if !strings.Contains(string(ack.Raw), `"msgID"`) {
			t.Fatalf("ack %s lacks msgID", ack)
		}
	})

	step(t, "same id again gets the original ack and no message", func() {
		a.Send(t, `{"type":"msg","id":"m1","payload":{"message":"hello"}}`)
		ack := a.Expect(t, protocol.TypeAck)
		var ap protocol.Ack
		chattest.Decode(t, ack, &ap)
		if ap.Seq != 1 {
			t.Fatalf("retry ack = %s, want the original seq 1", ack)
		}
		b.Quiet(t, 150*time.Millisecond)
	})

	step(t, "msg event format", func() {
		b.Send(t, `{"type":"msg","payload":{"message":"  spaced  "}}`)
		f := b.Expect(t, protocol.TypeMsg)
		m := chattest.MsgOf(t, f)
		if m.Message != "  spaced  " {
			t.Fatalf("message = %q, want it as sent", m.Message)
		}
		// ts is RFC 3339 UTC with milliseconds.
		if !strings.Contains(string(f.Raw), fmt.Sprintf(`"ts":"%s"`, m.TS.Format(protocol.TimeFormat))) || !strings.HasSuffix(m.TS.Format(protocol.TimeFormat), "Z") {
			t.Fatalf("raw msg %s: ts not RFC 3339 UTC ms", f)
		}
		a.Expect(t, protocol.TypeMsg)
	})

	step(t, "typing goes to the others only", func() {
		a.Send(t, `{"type":"typing","payload":{}}`)
		var ty protocol.Typing
		chattest.Decode(t, b.Expect(t, protocol.TypeTyping), &ty)
		if ty.RoomID != "lobby" || ty.User.UserID != a.Welcome.UserID || ty.User.Name != "alice" {
			t.Fatalf("typing = %+v", ty)
		}
		a.Quiet(t, 100*time.Millisecond)
	})

	step(t, "ping", func() {
		a.Send(t, `{"type":"ping","id":"p"}`)
		if f := a.Expect(t, protocol.TypePong); f.ID != "p" {
			t.Fatalf("pong id = %q, want p", f.ID)
		}
		a.Send(t, `{"type":"ping"}`)
		a.Expect(t, protocol.TypePong)
	})

	step(t, "create", func() {
		a.Send(t, `{"type":"create","id":"c","payload":{}}`)
		f := a.Expect(t, protocol.TypeCreated)
		var cr protocol.Created
		chattest.Decode(t, f, &cr)
		if f.ID != "c" || len(cr.RoomID) != 21 || cr.URL != ts.URL+"/r/"+cr.RoomID {
			t.Fatalf("created %s: want id c, 21-char roomID, url %s/r/<id>", f, ts.URL)
		}
		if lim := protocol.DefaultLimits(); lim.CheckRoomID("roomID", cr.RoomID) != nil {
			t.Fatalf("created room ID %q is not a valid room ID", cr.RoomID)
		}
	})

	step(t, "leave", func() {
		b.Send(t, `{"type":"leave","id":"l"}`)
		f := b.Expect(t, protocol.TypeLeft)
		var l protocol.Left
		chattest.Decode(t, f, &l)
		if f.ID != "l" || l.RoomID != "lobby" {
			t.Fatalf("left = %s", f)
		}
		var p protocol.Presence
		chattest.Decode(t, a.Expect(t, protocol.TypePresence), &p)
		if p.Event != "leave" || p.Count != 1 || p.User.UserID != b.Welcome.UserID {
			t.Fatalf("presence = %+v, want b leaving, count 1", p)
		}
		b.Send(t, `{"type":"msg","id":"x","payload":{"message":"still here?","roomID":"lobby"}}`)
		if e := b.ExpectError(t, protocol.CodeNotInRoom); e.Message == "" {
			t.Fatal("no message")
		}
	})
}

func TestHistoryOnJoin(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	a := chattest.Dial(t, ts.URL, "")
	a.Join(t, "h")
	for i := 1; i <= 60; i++ {
		a.Sendf(t, `{"type":"msg","payload":{"message":"m%d"}}`, i)
		a.Expect(t, protocol.TypeMsg)
	}
	b := chattest.Dial(t, ts.URL, "")
	j := b.Join(t, "h")
	if len(j.History) != 50 || j.History[0].Seq != 11 || j.History[49].Seq != 60 || j.LastSeq != 60 || j.Truncated {
		t.Fatalf("joined: %d history from %d, lastSeq %d, truncated %v; want 50 from 11, lastSeq 60", len(j.History), j.History[0].Seq, j.LastSeq, j.Truncated)
	}
	c := chattest.Dial(t, ts.URL, "")
	c.Send(t, `{"type":"join","payload":{"roomID":"h","since":57}}`)
	var js protocol.Joined
	chattest.Decode(t, c.Expect(t, protocol.TypeJoined), &js)
	if got := len(js.History); got != 3 || js.History[0].Seq != 58 {
		t.Fatalf("joined since 57: %d messages, want 58..60", got)
	}
}

func TestRoomRequired(t *testing.T) {
	ts := chattest.StartInProcess(t)
	a := chattest.Dial(t, ts.URL, "")
	a.Send(t, `{"type":"msg","payload":{"message":"nobody"}}`)
	a.ExpectError(t, protocol.CodeNotInRoom)
	a.Join(t, "one")
	a.Join(t, "two")
	a.Send(t, `{"type":"msg","payload":{"message":"which?"}}`)
	e := a.ExpectError(t, protocol.CodeRoomRequired)
	if e.Field != "roomID" {
		t.Fatalf("room_required field = %q", e.Field)
	}
	a.Send(t, `{"type":"leave","payload":{}}`)
	a.ExpectError(t, protocol.CodeRoomRequired)
	a.Send(t, `{"type":"msg","payload":{"message":"to two","roomID":"two"}}`)
	if m := chattest.MsgOf(t, a.Expect(t, protocol.TypeMsg)); m.RoomID != "two" {
		t.Fatalf("msg went to %s", m.RoomID)
	}
	a.Send(t, `{"type":"leave","payload":{"roomID":"three"}}`)
	a.ExpectError(t, protocol.CodeNotInRoom)
}

func TestRoomFull(t *testing.T) {
	ts := chattest.StartInProcess(t, func(c *server.Config) {
		c.Limits = protocol.DefaultLimits()
		c.Limits.RoomCapacity = 2
	})
	a, b, c := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	a.Join(t, "small")
	b.Join(t, "small")
	c.Send(t, `{"type":"join","id":"f","payload":{"roomID":"small"}}`)
	if f := c.Expect(t, protocol.TypeError); f.ID != "f" || !strings.Contains(string(f.Raw), protocol.CodeRoomFull) {
		t.Fatalf("got %s, want room_full with id f", f)
	}
	c.Join(t, "other")
}

// TestLeaveWithoutRoomID: leave without roomID leaves the one room, so a
// later msg without roomID is not_in_room, and after joining another room
// goes there.
func TestLeaveWithoutRoomID(t *testing.T) {
	ts := chattest.StartInProcess(t)
	a := chattest.Dial(t, ts.URL, "")
	a.Join(t, "first")
	a.Send(t, `{"type":"leave"}`)
	a.Expect(t, protocol.TypeLeft)
	a.Send(t, `{"type":"msg","payload":{"message":"anyone?"}}`)
	a.ExpectError(t, protocol.CodeNotInRoom)
	a.Join(t, "second")
	a.Send(t, `{"type":"msg","payload":{"message":"here"}}`)
	if m := chattest.MsgOf(t, a.Expect(t, protocol.TypeMsg)); m.RoomID != "second" {
		t.Fatalf("msg went to %q, want second", m.RoomID)
	}
}

// A client may send its first frame in the same TCP segment as the
// upgrade request (SPEC §4 lets it send once connected, and a pipelining
// client does): it is answered at once, after welcome, not when the
// client next sends something.
func TestFrameWithTheUpgradeRequest(t *testing.T) {
	ts := chattest.StartInProcess(t)
	host := strings.TrimPrefix(ts.URL, "http://")
	nc, err := net.DialTimeout("tcp", host, chattest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /ws HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	frame := chattest.ClientFrame(chattest.OpText, true, []byte(`{"type":"ping","id":"early"}`))
	nc.SetDeadline(time.Now().Add(chattest.Timeout))
	if _, err := nc.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", res, err)
	}
	// Read the two frames the way chattest.Raw does, past the response.
	for _, want := range []string{`"type":"welcome"`, `{"type":"pong","id":"early"}`} {
		p := readServerFrame(t, br, 2*time.Second)
		if !strings.Contains(string(p), want) {
			t.Fatalf("frame %s, want one with %s", p, want)
		}
	}
}

// readServerFrame reads one unfragmented server frame's payload within d.
func readServerFrame(t *testing.T, br *bufio.Reader, d time.Duration) []byte {
	t.Helper()
	type result struct {
		p   []byte
		err error
	}
	got := make(chan result, 1)
	go func() { // ends when the frame is read or the connection closes
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			got <- result{err: err}
			return
		}
		n := int(h[1] & 0x7f)
		if n == 126 {
			var e [2]byte
			io.ReadFull(br, e[:])
			n = int(binary.BigEndian.Uint16(e[:]))
		}
		p := make([]byte, n)
		_, err := io.ReadFull(br, p)
		got <- result{p, err}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("read a frame: %v", r.err)
		}
		return r.p
	case <-time.After(d):
		t.Fatalf("no frame within %s", d)
	}
	return nil
}
