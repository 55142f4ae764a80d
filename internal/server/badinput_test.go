package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
)

// badInputs is every recoverable bad frame with the code it must get.
var badInputs = []struct {
	name, frame, code, field string
}{
	{"not JSON", `hello`, protocol.CodeBadJSON, ""},
	{"truncated JSON", `{"type":"join"`, protocol.CodeBadJSON, ""},
	{"two values", `{"type":"ping"} {"type":"ping"}`, protocol.CodeBadJSON, ""},
	{"empty frame", ``, protocol.CodeBadJSON, ""},
	{"duplicated key", `{"type":"ping","type":"join"}`, protocol.CodeBadJSON, ""},
	{"duplicated payload key", `{"type":"join","payload":{"roomID":"a","roomID":"b"}}`, protocol.CodeBadJSON, ""},
	{"array", `[1,2]`, protocol.CodeBadEnvelope, ""},
	{"string", `"join"`, protocol.CodeBadEnvelope, ""},
	{"null", `null`, protocol.CodeBadEnvelope, "type"},
	{"missing type", `{"payload":{}}`, protocol.CodeBadEnvelope, "type"},
	{"type case", `{"Type":"ping"}`, protocol.CodeBadEnvelope, "type"},
	{"type not string", `{"type":7}`, protocol.CodeBadEnvelope, "type"},
	{"id not string", `{"type":"ping","id":1}`, protocol.CodeBadEnvelope, "id"},
	{"payload not object", `{"type":"join","payload":"123"}`, protocol.CodeBadEnvelope, "payload"},
	{"unknown type", `{"type":"shout"}`, protocol.CodeUnknownType, "type"},
	{"join without roomID", `{"type":"join","payload":{}}`, protocol.CodeBadPayload, "roomID"},
	{"join roomID key case", `{"type":"join","payload":{"RoomID":"a"}}`, protocol.CodeBadPayload, "roomID"},
	{"join roomID not string", `{"type":"join","payload":{"roomID":123}}`, protocol.CodeBadPayload, "roomID"},
	{"join roomID bad chars", `{"type":"join","payload":{"roomID":"a/b"}}`, protocol.CodeBadPayload, "roomID"},
	{"join roomID too long", `{"type":"join","payload":{"roomID":"` + strings.Repeat("a", 65) + `"}}`, protocol.CodeBadPayload, "roomID"},
	{"join name blank", `{"type":"join","payload":{"roomID":"a","name":"   "}}`, protocol.CodeBadPayload, "name"},
	{"join name too long", `{"type":"join","payload":{"roomID":"a","name":"` + strings.Repeat("n", 33) + `"}}`, protocol.CodeBadPayload, "name"},
	{"join name control char", `{"type":"join","payload":{"roomID":"a","name":"a\u0007b"}}`, protocol.CodeBadPayload, "name"},
	{"join name not string", `{"type":"join","payload":{"roomID":"a","name":5}}`, protocol.CodeBadPayload, "name"},
	{"join since negative", `{"type":"join","payload":{"roomID":"a","since":-1}}`, protocol.CodeBadPayload, "since"},
	{"join since fraction", `{"type":"join","payload":{"roomID":"a","since":1.5}}`, protocol.CodeBadPayload, "since"},
	{"join since string", `{"type":"join","payload":{"roomID":"a","since":"4"}}`, protocol.CodeBadPayload, "since"},
	{"msg without message", `{"type":"msg","payload":{"roomID":"pair"}}`, protocol.CodeBadPayload, "message"},
	{"msg blank", `{"type":"msg","payload":{"message":" \n\t ","roomID":"pair"}}`, protocol.CodeBadPayload, "message"},
	{"msg not string", `{"type":"msg","payload":{"message":["x"]}}`, protocol.CodeBadPayload, "message"},
	{"msg too long", `{"type":"msg","payload":{"message":"` + strings.Repeat("é", 4001) + `"}}`, protocol.CodeTooLong, "message"},
	{"msg bad roomID", `{"type":"msg","payload":{"message":"x","roomID":"no spaces"}}`, protocol.CodeBadPayload, "roomID"},
	{"msg not in room", `{"type":"msg","payload":{"message":"x","roomID":"elsewhere"}}`, protocol.CodeNotInRoom, ""},
	{"leave not in room", `{"type":"leave","payload":{"roomID":"elsewhere"}}`, protocol.CodeNotInRoom, ""},
	{"typing not in room", `{"type":"typing","payload":{"roomID":"elsewhere"}}`, protocol.CodeNotInRoom, ""},
	{"typing bad roomID", `{"type":"typing","payload":{"roomID":5}}`, protocol.CodeBadPayload, "roomID"},
}

// TestBadInput sends every bad frame from one client while a pair of
// clients chats in another room: each bad frame gets its error, the
// connection stays open, and the pair loses nothing.
func TestBadInput(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	bad := chattest.Dial(t, ts.URL, "")
	bad.Join(t, "bad-room")
	p1, p2 := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	p1.Join(t, "pair")
	p2.Join(t, "pair")
	p1.Expect(t, protocol.TypePresence)

	for i, tc := range badInputs {
		bad.Send(t, tc.frame)
		f := bad.Expect(t, protocol.TypeError)
		var e protocol.Error
		chattest.Decode(t, f, &e)
		if e.Code != tc.code || e.Field != tc.field || e.Message == "" {
			t.Errorf("%s: %s → %s; want code %q field %q and a message", tc.name, truncate(tc.frame), f, tc.code, tc.field)
		}
		// The pair keeps chatting, one message per bad frame.
		p1.Sendf(t, `{"type":"msg","payload":{"message":"ok %d"}}`, i)
		for _, c := range []*chattest.Client{p1, p2} {
			if m := chattest.MsgOf(t, c.Expect(t, protocol.TypeMsg)); m.Message != fmt.Sprintf("ok %d", i) {
				t.Fatalf("pair got %q after %s", m.Message, tc.name)
			}
		}
	}
	// Still open and working.
	bad.Send(t, `{"type":"ping","id":"alive"}`)
	bad.Expect(t, protocol.TypePong)
	// The bad client's own room never saw anything.
	bad.Quiet(t, 100*time.Millisecond)
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

func TestErrorEchoesID(t *testing.T) {
	ts := chattest.StartInProcess(t)
	a := chattest.Dial(t, ts.URL, "")
	a.Send(t, `{"type":"msg","id":"req-7","payload":{"message":"x"}}`)
	if f := a.Expect(t, protocol.TypeError); f.ID != "req-7" {
		t.Fatalf("error %s does not carry the request id", f)
	}
}

// TestCloseCodes: frames that cannot be answered close the connection
// with the code SPEC §4 gives, and nobody else notices.
func TestCloseCodes(t *testing.T) {
	cases := []struct {
		name string
		send func(c *websocket.Conn) error
		code websocket.StatusCode
	}{
		{"binary frame", func(c *websocket.Conn) error {
			return c.Write(context.Background(), websocket.MessageBinary, []byte(`{"type":"ping"}`))
		}, websocket.StatusUnsupportedData},
		{"invalid UTF-8", func(c *websocket.Conn) error {
			return c.Write(context.Background(), websocket.MessageText, []byte("{\"type\":\"msg\",\"payload\":{\"message\":\"\xff\xfe\"}}"))
		}, websocket.StatusInvalidFramePayloadData},
		{"frame over 64 KiB", func(c *websocket.Conn) error {
			return c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"msg","payload":{"message":"`+strings.Repeat("x", 64<<10)+`"}}`))
		}, websocket.StatusMessageTooBig},
	}
	ts := chattest.StartInProcess(t)
	p1, p2 := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	p1.Join(t, "pair")
	p2.Join(t, "pair")
	p1.Expect(t, protocol.TypePresence)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := chattest.Dial(t, ts.URL, "")
			c.Join(t, "pair")
			if err := tc.send(c.WS); err != nil {
				t.Fatal(err)
			}
			c.ExpectClose(t, tc.code)
			p1.Send(t, `{"type":"msg","payload":{"message":"still fine"}}`)
			for _, p := range []*chattest.Client{p1, p2} {
				if f := p.Await(t, protocol.TypeMsg); chattest.MsgOf(t, f).Message != "still fine" {
					t.Fatalf("pair got %s", f)
				}
			}
		})
	}
	t.Run("frame of exactly 64 KiB is read", func(t *testing.T) {
		c := chattest.Dial(t, ts.URL, "")
		frame := `{"type":"ping","id":"big","pad":"`
		frame += strings.Repeat("x", 64<<10-len(frame)-2) + `"}`
		c.Send(t, frame)
		c.Expect(t, protocol.TypePong)
	})
}

// TestRateLimit: past the burst, frames get rate_limited; sustained abuse
// closes with 1008. Others are unaffected.
func TestRateLimit(t *testing.T) {
	ts := chattest.StartInProcess(t)
	p1, p2 := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	p1.Join(t, "pair")
	p2.Join(t, "pair")
	p1.Expect(t, protocol.TypePresence)

	flood := chattest.Dial(t, ts.URL, "")
	flood.Join(t, "flood")
	lim := protocol.DefaultLimits()
	// One burst and then some: the overflow is refused, the connection stays.
	n := lim.Burst + 20
	for i := range n {
		flood.Sendf(t, `{"type":"msg","id":"s%d","payload":{"message":"spam %d"}}`, i, i)
	}
	limited, delivered, acks := 0, 0, 0
	for limited+delivered < n || acks < delivered {
		switch f := flood.Next(t); f.Type {
		case protocol.TypeError:
			var e protocol.Error
			chattest.Decode(t, f, &e)
			if e.Code != protocol.CodeRateLimited || f.ID == "" {
				t.Fatalf("got %s, want rate_limited with the frame's id", f)
			}
			limited++
		case protocol.TypeMsg:
			delivered++
		case protocol.TypeAck:
			acks++
		default:
			t.Fatalf("unexpected %s", f)
		}
	}
	if limited < 10 || delivered < lim.Burst-1 {
		t.Fatalf("of %d frames, %d delivered and %d rate_limited; want about %d and %d", n, delivered, limited, lim.Burst, n-lim.Burst)
	}
	p1.Send(t, `{"type":"msg","payload":{"message":"unaffected"}}`)
	p2.Await(t, protocol.TypeMsg)

	// Sustained abuse: many more frames than the limit closes with 1008.
	abuser := chattest.Dial(t, ts.URL, "")
	for i := 0; i < 400; i++ {
		if err := abuser.WS.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
			break
		}
	}
	abuser.ExpectClose(t, websocket.StatusPolicyViolation)
	p1.Send(t, `{"type":"msg","payload":{"message":"still unaffected"}}`)
	p2.Await(t, protocol.TypeMsg)
}

// TestIsolationUnderConcurrency: 20 rooms × 10 clients all sending at once;
// every client gets exactly its own room's messages, in the same order as
// every other member of that room.
func TestIsolationUnderConcurrency(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	const rooms, members, each = 20, 10, 5
	clients := make([][]*chattest.Client, rooms)
	for r := range rooms {
		for range members {
			c := chattest.Dial(t, ts.URL, "?batch=1")
			c.Join(t, fmt.Sprintf("room-%d", r))
			clients[r] = append(clients[r], c)
		}
	}
	var wg sync.WaitGroup
	for r := range rooms {
		for i, c := range clients[r] {
			wg.Go(func() {
				for k := range each {
					if err := c.Writef(`{"type":"msg","payload":{"message":"r%d c%d k%d"}}`, r, i, k); err != nil {
						t.Errorf("room %d client %d: %v", r, i, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	want := members * each
	for r := range rooms {
		var first []string
		for i, c := range clients[r] {
			var got []string
			for len(got) < want {
				f := c.Next(t)
				if f.Type != protocol.TypeMsg {
					continue // presence of later joiners
				}
				m := chattest.MsgOf(t, f)
				if m.RoomID != fmt.Sprintf("room-%d", r) || !strings.HasPrefix(m.Message, fmt.Sprintf("r%d ", r)) {
					t.Fatalf("client %d of room %d got %+v from another room", i, r, m)
				}
				if m.Seq != int64(len(got)+1) {
					t.Fatalf("client %d of room %d: seq %d at position %d", i, r, m.Seq, len(got)+1)
				}
				got = append(got, m.Message)
			}
			if first == nil {
				first = got
			} else if strings.Join(got, "|") != strings.Join(first, "|") {
				t.Fatalf("room %d: client %d saw another order than client 0", r, i)
			}
			c.Quiet(t, 0)
		}
	}
	// Nothing more arrives anywhere.
	for r := range rooms {
		for _, c := range clients[r] {
			c.Quiet(t, 10*time.Millisecond)
		}
	}
}

// TestSlowConsumer: a member that stops reading is closed with 1013 while
// the rest of its room keeps receiving every message.
func TestSlowConsumer(t *testing.T) {
	// A 1013 counts as a drop: the others see the leave after the grace period.
	// No keepalive within the test: the slow member answers no ping (it
	// reads nothing), and on a slow machine the test can outlast its first
	// ping and timeout; here it must be found slow, not dead.
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) {
		c.MaxQueue = 64 << 10
		c.PingInterval = time.Hour
		withRoom(c, room.Options{Grace: 100 * time.Millisecond})
	})
	sender, fast := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	sender.Join(t, "busy")
	fast.Join(t, "busy")
	sender.Await(t, protocol.TypePresence) // fast's join
	// The slow client joins, then stops reading: a raw connection without
	// the reader goroutine.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	slow, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	slow.Write(ctx, websocket.MessageText, []byte(`{"type":"join","payload":{"roomID":"busy"}}`))
	sender.Await(t, protocol.TypePresence) // slow's join
	fast.Await(t, protocol.TypePresence)   // slow's join

	text := strings.Repeat("y", 3900)
	sent := 0
	for ; sent < 20000 && metric(t, ts, "roomchat_slow_consumers_total") < 1; sent++ {
		sender.Sendf(t, `{"type":"msg","payload":{"message":"%d %s"}}`, sent, text)
		for _, c := range []*chattest.Client{sender, fast} {
			if m := chattest.MsgOf(t, c.Next(t)); !strings.HasPrefix(m.Message, fmt.Sprintf("%d ", sent)) {
				t.Fatalf("got message %.10q, want number %d", m.Message, sent)
			}
		}
	}
	if metric(t, ts, "roomchat_slow_consumers_total") < 1 {
		t.Fatalf("after %d messages of 3.9 KB the member that reads nothing was not found slow", sent)
	}
	// Reading again, it finds what fitted in the socket, then the 1013.
	for {
		_, _, err := slow.Read(ctx)
		if err != nil {
			if st := websocket.CloseStatus(err); st != websocket.StatusTryAgainLater {
				t.Fatalf("slow client ended with %v, want close 1013", err)
			}
			break
		}
	}
	// The others see it leave, and keep chatting.
	for _, c := range []*chattest.Client{sender, fast} {
		var p protocol.Presence
		chattest.Decode(t, c.Expect(t, protocol.TypePresence), &p)
		if p.Event != protocol.PresenceLeave || p.Count != 2 {
			t.Fatalf("got %+v, want the slow member leaving", p)
		}
	}
	sender.Send(t, `{"type":"msg","payload":{"message":"after"}}`)
	fast.Await(t, protocol.TypeMsg)
}

// metric reads one unlabelled series from /metrics.
func metric(t *testing.T, ts *chattest.InProcess, name string) float64 {
	t.Helper()
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestShutdown: Shutdown closes every client with 1001.
func TestShutdown(t *testing.T) {
	ts := chattest.StartInProcess(t)
	a, b := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	a.Join(t, "x")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*chattest.Client{a, b} {
		c.ExpectClose(t, websocket.StatusGoingAway)
	}
	// Upgrades after shutdown are refused with 503 shutting_down, and
	// counted like the other refusals.
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	for range 2 {
		c, resp, err := websocket.Dial(ctx, u, nil)
		if err == nil {
			c.CloseNow()
			t.Fatal("dial after Shutdown succeeded")
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("dial after Shutdown: %v %v, want 503", resp, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), `"code":"shutting_down"`) {
			t.Fatalf("dial after Shutdown: %s, want shutting_down", b)
		}
	}
	if got := metric(t, ts, `roomchat_errors_total{code="shutting_down"}`); got != 2 {
		t.Errorf(`roomchat_errors_total{code="shutting_down"} = %v, want 2`, got)
	}
	if got := metric(t, ts, "roomchat_connections_refused_total"); got != 2 {
		t.Errorf("roomchat_connections_refused_total = %v, want 2", got)
	}
}

func TestOrigin(t *testing.T) {
	ts := chattest.StartInProcess(t, func(c *server.Config) { c.Origins = []string{"*.example.com", "https://chat.example.org"} })
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	cases := []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{ts.URL, true},
		{"https://evil.example.net", false},
		{"https://a.example.com", true},
		{"https://chat.example.org", true},
		{"http://chat.example.org", false},
	}
	for _, tc := range cases {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, resp, err := websocket.Dial(context.Background(), u, &websocket.DialOptions{HTTPHeader: h})
		if tc.ok != (err == nil) {
			t.Errorf("Origin %q: err = %v, want allowed = %v", tc.origin, err, tc.ok)
		}
		if err == nil {
			c.CloseNow()
		} else if resp != nil && resp.StatusCode != http.StatusForbidden {
			t.Errorf("Origin %q: status %d, want 403", tc.origin, resp.StatusCode)
		}
	}
}

// TestPanicDoesNotKill: a panic while handling a frame is contained. The
// store below panics on demand.
func TestPanicContained(t *testing.T) {
	ps := &panicStore{}
	ts := chattest.StartInProcess(t, func(c *server.Config) {
		ps.Store = c.Store
		c.Store = ps
	})
	a, b := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	a.Join(t, "p")
	b.Join(t, "p")
	ps.panicNext.Store(true)
	a.Send(t, `{"type":"msg","id":"boom","payload":{"message":"boom"}}`)
	if e := a.Await(t, protocol.TypeError); e.ID != "boom" || !strings.Contains(e.String(), protocol.CodeInternal) {
		t.Fatalf("got %s, want an internal error for boom", e)
	}
	a.Send(t, `{"type":"msg","payload":{"message":"after"}}`)
	if m := chattest.MsgOf(t, b.Await(t, protocol.TypeMsg)); m.Message != "after" {
		t.Fatalf("got %q", m.Message)
	}
}

// TestWritesMetric: every event goes out in some write, and a write
// carries at least one event.
func TestWritesMetric(t *testing.T) {
	ts := chattest.StartInProcess(t)
	a, b := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "?batch=1")
	a.Join(t, "w")
	b.Join(t, "w")
	a.Await(t, protocol.TypePresence)
	for i := range 10 {
		a.SendAck(t, fmt.Sprint("m", i), "hello")
	}
	for range 10 {
		b.Await(t, protocol.TypeMsg)
	}
	// Writes first: a drain counts its events before itself, so events
	// read after writes is never below them, whatever is still in flight.
	writes := metric(t, ts, "roomchat_writes_total")
	events := metric(t, ts, "roomchat_events_sent_total")
	// At least the two joineds and b's ten msgs are counted by now (b
	// read them; a's last ack and msg may still be on their way).
	if events < 12 || writes < 1 || writes > events {
		t.Errorf("events sent %v, writes %v: want at least 12 events and 1 ≤ writes ≤ events", events, writes)
	}
}
