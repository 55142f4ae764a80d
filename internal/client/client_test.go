package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
)

// TestMain also fails the run if a Conn's or a Session's goroutines
// outlive the tests: Close must wait for what Dial started.
func TestMain(m *testing.M) {
	os.Exit(chattest.Main(m, "github.com/roomchat/roomchat/internal/client."))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustDial(t *testing.T, ctx context.Context, url string, opts Options) *Conn {
	t.Helper()
	c, err := Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectEvent returns the next event of type typ (any type for ""),
// failing on any other.
func expectEvent(t *testing.T, ctx context.Context, c *Conn, typ string) (protocol.Envelope, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	env, raw, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for %s: %v", typ, err)
	}
	if typ != "" && env.Type != typ {
		t.Fatalf("got event %s, want %s", raw, typ)
	}
	return env, raw
}

// nextMsg skips non-msg events and returns the next msg.
func nextMsg(t *testing.T, ctx context.Context, c *Conn) protocol.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		env, raw, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for msg: %v", err)
		}
		if env.Type != protocol.TypeMsg {
			continue
		}
		var m protocol.Message
		if err := decode(env, &m); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
		return m
	}
}

func TestDialWelcome(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	c := mustDial(t, ctx, srv.URL, Options{})
	w := c.Welcome()
	if w.UserID == "" || w.Resume == "" {
		t.Errorf("welcome = %+v, want userID and resume", w)
	}
	if w.Limits.MaxMessage == 0 {
		t.Errorf("welcome limits = %+v, want them filled", w.Limits)
	}
	if !strings.Contains(string(c.WelcomeRaw()), `"type":"welcome"`) {
		t.Errorf("WelcomeRaw = %s", c.WelcomeRaw())
	}
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestDialUnreachable(t *testing.T) {
	ctx := testCtx(t)
	_, err := Dial(ctx, "http://127.0.0.1:1", Options{})
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("Dial to a closed port: err = %v, want *DialError", err)
	}
}

func TestJoinSendReceive(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			room := "join-send-" + fmt.Sprint(batch)
			a := mustDial(t, ctx, srv.URL, Options{Batch: batch})
			b := mustDial(t, ctx, srv.URL, Options{Batch: batch})
			ja, err := a.Join(ctx, room, "alice", nil)
			if err != nil {
				t.Fatalf("alice join: %v", err)
			}
			if ja.RoomID != room || ja.You.Name != "alice" || ja.Count != 1 {
				t.Errorf("joined = %+v", ja)
			}
			if _, err := b.Join(ctx, room, "bob", nil); err != nil {
				t.Fatalf("bob join: %v", err)
			}
			const n = 30
			for i := 1; i <= n; i++ {
				ack, err := a.SendMessage(ctx, room, fmt.Sprintf("hello %d", i))
				if err != nil {
					t.Fatalf("SendMessage %d: %v", i, err)
				}
				if ack.Seq != int64(i) || ack.MsgID == "" {
					t.Fatalf("ack %d = %+v, want seq %d", i, ack, i)
				}
			}
			for _, c := range []*Conn{a, b} {
				for i := 1; i <= n; i++ {
					m := nextMsg(t, ctx, c)
					if m.Seq != int64(i) || m.Message != fmt.Sprintf("hello %d", i) || m.From.Name != "alice" {
						t.Fatalf("msg %d = %+v", i, m)
					}
				}
			}
		})
	}
}

func TestRawIsExact(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	c := mustDial(t, ctx, srv.URL, Options{Batch: true})
	if _, err := c.Join(ctx, "raw", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(ctx, "", "x"); err != nil {
		t.Fatal(err)
	}
	_, raw := expectEvent(t, ctx, c, protocol.TypeMsg)
	if strings.ContainsRune(string(raw), '\n') || raw[0] != '{' || raw[len(raw)-1] != '}' {
		t.Errorf("raw = %q, want one JSON object", raw)
	}
}

func TestServerErrors(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	c := mustDial(t, ctx, srv.URL, Options{})
	if _, err := c.SendMessage(ctx, "", "nobody home"); !isCode(err, protocol.CodeNotInRoom) {
		t.Errorf("msg outside a room: err = %v, want %s", err, protocol.CodeNotInRoom)
	}
	if err := c.Leave(ctx, "nowhere"); !isCode(err, protocol.CodeNotInRoom) {
		t.Errorf("leave outside a room: err = %v, want %s", err, protocol.CodeNotInRoom)
	}
	if _, err := c.Join(ctx, "bad room!", "", nil); !isCode(err, protocol.CodeBadPayload) {
		t.Errorf("join with a bad room ID: err = %v, want %s", err, protocol.CodeBadPayload)
	}
	if _, err := c.Join(ctx, "errors", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(ctx, "", strings.Repeat("x", 4001)); !isCode(err, protocol.CodeTooLong) {
		t.Errorf("4001 characters: err = %v, want %s", err, protocol.CodeTooLong)
	}
	// The connection stays usable after errors.
	if _, err := c.SendMessage(ctx, "", "still here"); err != nil {
		t.Errorf("after errors: %v", err)
	}
}

func isCode(err error, code string) bool {
	pe, ok := errors.AsType[*protocol.Error](err)
	return ok && pe.Code == code
}

func TestCreate(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	c := mustDial(t, ctx, srv.URL, Options{})
	cr, raw, err := c.CreateRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cr.RoomID) != protocol.RoomIDLen || !strings.HasSuffix(cr.URL, "/r/"+cr.RoomID) {
		t.Errorf("created = %+v (%s)", cr, raw)
	}
	id, server, err := ParseRoom(cr.URL)
	if err != nil || id != cr.RoomID || server == "" {
		t.Errorf("ParseRoom(%q) = %q, %q, %v", cr.URL, id, server, err)
	}
}

func TestDuplicateIDAcksOnce(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	c := mustDial(t, ctx, srv.URL, Options{})
	if _, err := c.Join(ctx, "dup", "", nil); err != nil {
		t.Fatal(err)
	}
	a1, _, err := c.SendMessageID(ctx, "same-id", "", "once")
	if err != nil {
		t.Fatal(err)
	}
	a2, _, err := c.SendMessageID(ctx, "same-id", "", "once")
	if err != nil {
		t.Fatal(err)
	}
	if a1 != a2 {
		t.Errorf("acks for one id differ: %+v, %+v", a1, a2)
	}
	// 64 characters is the most an id may have; a longer one is refused
	// at once, since the server's error could not carry it back.
	if _, _, err := c.SendMessageID(ctx, strings.Repeat("i", 64), "", "long id"); err != nil {
		t.Errorf("64-character id: %v", err)
	}
	long := strings.Repeat("i", 65)
	if _, _, err := c.SendMessageID(ctx, long, "", "too long an id"); !isCode(err, protocol.CodeBadEnvelope) {
		t.Errorf("65-character id: err = %v, want %s", err, protocol.CodeBadEnvelope)
	}
	// And the server agrees: its error has no id.
	if err := c.Send(ctx, protocol.TypePing, long, nil); err != nil {
		t.Fatal(err)
	}
	env, raw := expectEvent(t, ctx, c, protocol.TypeMsg) // once
	for env.Type == protocol.TypeMsg {
		env, raw = expectEvent(t, ctx, c, "")
	}
	if env.Type != protocol.TypeError || env.ID != "" || !strings.Contains(string(raw), protocol.CodeBadEnvelope) {
		t.Errorf("ping with a 65-character id: %s, want bad_envelope without id", raw)
	}
}

func TestCloseEndsNext(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	c := mustDial(t, ctx, srv.URL, Options{})
	c.Close()
	if _, _, err := c.Next(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close: %v, want ErrClosed", err)
	}
	if err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after Close: %v, want ErrClosed", err)
	}
}

func TestServerShutdownIsConnError(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	c := mustDial(t, ctx, srv.URL, Options{})
	srv.Stop(t)
	_, _, err := c.Next(ctx)
	if _, ok := errors.AsType[*ConnError](err); !ok {
		t.Fatalf("Next after server shutdown: %v, want *ConnError", err)
	}
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("close status = %v, want 1001 (%v)", got, err)
	}
}

// openSession opens a session with short backoff for tests.
func openSession(t *testing.T, ctx context.Context, url, room string, opts SessionOptions) *Session {
	t.Helper()
	opts.MinBackoff = 20 * time.Millisecond
	opts.MaxBackoff = 200 * time.Millisecond
	opts.DialTimeout = 5 * time.Second
	s, err := OpenSession(ctx, url, room, opts)
	if err != nil {
		t.Fatalf("OpenSession: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// collect reads session events until it has seen seq want, and returns
// every delivered seq in order (history and live).
func collect(t *testing.T, ctx context.Context, s *Session, want int64, seen []int64) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for len(seen) == 0 || seen[len(seen)-1] < want {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for seq %d (have %v): %v", want, seen, err)
		}
		for _, m := range ev.Messages() {
			seen = append(seen, m.Seq)
		}
	}
	return seen
}

func TestSessionReconnectsWithoutDuplicates(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	const room = "session"
	sender := mustDial(t, ctx, srv.URL, Options{})
	if _, err := sender.Join(ctx, room, "sender", nil); err != nil {
		t.Fatal(err)
	}
	send := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := sender.SendMessage(ctx, room, fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(1, 3)
	var states []State
	stateCh := make(chan State, 16)
	s := openSession(t, ctx, srv.URL, room, SessionOptions{
		Options: Options{Batch: true},
		OnState: func(st State) { stateCh <- st },
	})
	seen := collect(t, ctx, s, 3, nil)
	s.mu.Lock()
	userID := s.conn.Welcome().UserID
	s.mu.Unlock()

	// Drop the connection without a close frame (as a network loss would),
	// and keep sending while it is down.
	s.mu.Lock()
	old := s.conn
	s.mu.Unlock()
	old.CloseNow()
	send(4, 8)
	seen = collect(t, ctx, s, 8, seen)
	chattest.CheckSeqs(t, "seqs", seen, 1, 8)

	for len(states) < 2 {
		select {
		case st := <-stateCh:
			states = append(states, st)
		case <-ctx.Done():
			t.Fatalf("states = %+v, want a drop then a reconnect", states)
		}
	}
	if states[0].Connected || states[0].Err == nil || !states[1].Connected {
		t.Errorf("states = %+v, want a drop then a reconnect", states)
	}
	s.mu.Lock()
	now := s.conn
	s.mu.Unlock()
	if now == nil || now.Welcome().UserID != userID {
		t.Errorf("userID after resume = %v, want %s", now, userID)
	}
}

func TestSessionSendRetriesAcrossDrop(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	s := openSession(t, ctx, srv.URL, "retry", SessionOptions{})
	if _, err := s.Next(ctx); err != nil { // joined
		t.Fatal(err)
	}
	s.mu.Lock()
	old := s.conn
	s.mu.Unlock()
	old.CloseNow()
	ack, err := s.SendMessage(ctx, "after the drop")
	if err != nil {
		t.Fatalf("SendMessage across a drop: %v", err)
	}
	seen := collect(t, ctx, s, ack.Seq, nil)
	chattest.CheckSeqs(t, "seqs", seen, 1, 1)
}

func TestSessionStopsWithContext(t *testing.T) {
	srv := chattest.Start(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	s := openSession(t, ctx, srv.URL, "stop", SessionOptions{})
	cancel()
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Next(context.Background()); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Next after the context ended: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("session did not stop when its context ended")
	}
}

// TestSessionSurvivesServerRestart restarts the server (same -db file)
// under a session. With a persistent store the session resumes with since;
// with one that lost the room (the epoch changes) it starts over in the new
// epoch. Either way every message text arrives once, in order.
func TestSessionSurvivesServerRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	srv := chattest.Start(t, "-db", db)
	ctx := testCtx(t)
	const room = "restart"
	send := func(from, to int) {
		c := mustDial(t, ctx, srv.URL, Options{})
		defer c.Close()
		if _, err := c.Join(ctx, room, "sender", nil); err != nil {
			t.Fatal(err)
		}
		for i := from; i <= to; i++ {
			if _, err := c.SendMessage(ctx, room, fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var texts []string
	epochChanged := false
	readUntil := func(s *Session, want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for len(texts) == 0 || texts[len(texts)-1] != want {
			ev, err := s.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for %q (have %q): %v", want, texts, err)
			}
			epochChanged = epochChanged || ev.EpochChanged
			for _, m := range ev.Messages() {
				texts = append(texts, m.Message)
			}
		}
	}
	send(1, 3)
	s := openSession(t, ctx, srv.URL, room, SessionOptions{})
	readUntil(s, "3")
	for _, kill := range []bool{false, true} {
		srv.Restart(t, kill)
		n := len(texts)
		send(n+1, n+3)
		readUntil(s, fmt.Sprint(n+3))
	}
	if want := "[1 2 3 4 5 6 7 8 9]"; fmt.Sprint(texts) != want {
		t.Errorf("texts = %v, want %s", texts, want)
	}
	if epochChanged {
		t.Log("the server's store lost the room on restart (epoch changed): checked reconnection and the epoch reset, not resume by since")
	}
}

// TestSessionEpochReset restarts a server whose store keeps nothing
// (-db :memory:) under a session that joined an empty room: the room's seq
// numbers restart at 1 and the session must deliver the new messages
// instead of dropping them as already seen.
func TestSessionEpochReset(t *testing.T) {
	for _, sendFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("sendBeforeReconnect=%v", sendFirst), func(t *testing.T) {
			srv := chattest.Start(t)
			ctx := testCtx(t)
			room := "epoch"
			s := openSession(t, ctx, srv.URL, room, SessionOptions{MinBackoff: time.Second})
			if _, err := s.Next(ctx); err != nil {
				t.Fatal(err)
			}
			send := func(text string) {
				c := mustDial(t, ctx, srv.URL, Options{})
				defer c.Close()
				if _, err := c.Join(ctx, room, "sender", nil); err != nil {
					t.Fatal(err)
				}
				if _, err := c.SendMessage(ctx, room, text); err != nil {
					t.Fatal(err)
				}
			}
			send("before")
			nextWhere(t, ctx, s, "the msg", func(ev Event) bool { return ev.Msg != nil && ev.Msg.Message == "before" })
			srv.Restart(t, true)
			if sendFirst {
				send("after") // seq 1 again, stored before the session is back
			}
			ev := nextWhere(t, ctx, s, "joined after the restart", func(ev Event) bool { return ev.Joined != nil })
			if !ev.EpochChanged || !ev.Reconnected {
				t.Errorf("joined after restart: EpochChanged=%v Reconnected=%v, want both", ev.EpochChanged, ev.Reconnected)
			}
			if sendFirst {
				// The session's first retry comes 0.5–1 s after the drop; on a
				// busy machine that can beat the restart and the send above,
				// and then the message arrives live rather than in history.
				// Either way it must be delivered, once, with its new seq 1.
				switch h := ev.Joined.History; {
				case len(h) == 1 && h[0].Message == "after" && h[0].Seq == 1:
				case len(h) == 0:
					nextWhere(t, ctx, s, "the msg sent during the restart", func(ev Event) bool {
						return ev.Msg != nil && ev.Msg.Message == "after" && ev.Msg.Seq == 1
					})
				default:
					t.Errorf("history after the restart = %+v, want only the message sent meanwhile", h)
				}
			} else {
				send("after")
				nextWhere(t, ctx, s, "the msg after the restart", func(ev Event) bool {
					return ev.Msg != nil && ev.Msg.Message == "after" && ev.Msg.Seq == 1
				})
			}
		})
	}
}

// nextWhere returns the first session event for which ok is true, within 10 s.
func nextWhere(t *testing.T, ctx context.Context, s *Session, what string, ok func(Event) bool) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var seen []string
	for {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %s (saw %q): %v", what, seen, err)
		}
		if ok(ev) {
			return ev
		}
		seen = append(seen, string(ev.Raw))
	}
}

func TestParseRoom(t *testing.T) {
	tests := []struct {
		in, id, server string
		bad            bool
	}{
		{in: "abc", id: "abc"},
		{in: " a_b-C9 ", id: "a_b-C9"},
		{in: "http://localhost:8080/r/xyz", id: "xyz", server: "http://localhost:8080"},
		{in: "https://chat.example.com/prefix/r/xyz/", id: "xyz", server: "https://chat.example.com/prefix"},
		{in: "staff:ops", id: "staff:ops"},
		{in: "http://localhost:8080/r/staff:V1StGXR8_Z5jdHi6B-myT", id: "staff:V1StGXR8_Z5jdHi6B-myT", server: "http://localhost:8080"},
		{in: "http://localhost:8080/r/staff%3Aops", id: "staff:ops", server: "http://localhost:8080"},
		{in: "x:ops", bad: true},
		{in: "staff:", bad: true},
		{in: "a:b:c", bad: true},
		{in: "bad id", bad: true},
		{in: "", bad: true},
		{in: "http://host/notaroom", bad: true},
		{in: strings.Repeat("a", 65), bad: true},
	}
	for _, tc := range tests {
		id, server, err := ParseRoom(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseRoom(%q) = %q, %q, want an error", tc.in, id, server)
			}
			continue
		}
		if err != nil || id != tc.id || server != tc.server {
			t.Errorf("ParseRoom(%q) = %q, %q, %v; want %q, %q", tc.in, id, server, err, tc.id, tc.server)
		}
	}
}

func TestWebSocketURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://localhost:8080", "ws://localhost:8080/ws"},
		{"https://chat.example.com/", "wss://chat.example.com/ws"},
		{"https://chat.example.com/prefix", "wss://chat.example.com/prefix/ws"},
		{"localhost:8080", "ws://localhost:8080/ws"},
		{"ws://h:1/ws", "ws://h:1/ws"},
		{"wss://h", "wss://h/ws"},
	}
	for _, tc := range tests {
		u, err := WebSocketURL(tc.in)
		if err != nil || u.String() != tc.want {
			t.Errorf("WebSocketURL(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
		}
	}
	for _, bad := range []string{"", "ftp://x", "http://"} {
		if _, err := WebSocketURL(bad); err == nil {
			t.Errorf("WebSocketURL(%q): want an error", bad)
		}
	}
}

func TestAPIURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://localhost:8080", "http://localhost:8080"},
		{"https://chat.example.com/", "https://chat.example.com"},
		{"https://chat.example.com/prefix/", "https://chat.example.com/prefix"},
		{"localhost:8080", "http://localhost:8080"},
		{"ws://h:1/ws", "http://h:1"},
		{"wss://h/prefix/ws?x=1", "https://h/prefix"},
	}
	for _, tc := range tests {
		u, err := APIURL(tc.in)
		if err != nil || u.String() != tc.want {
			t.Errorf("APIURL(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
		}
	}
	for _, bad := range []string{"", "ftp://x", "http://"} {
		if _, err := APIURL(bad); err == nil {
			t.Errorf("APIURL(%q): want an error", bad)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for n := 1; n <= 12; n++ {
		want := min(lo<<(n-1), hi)
		for range 50 {
			d := Backoff(n, lo, hi)
			if d < want/2 || d > want {
				t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

// bulky is the text of stored message i: its number, then up to 3000
// characters of padding, so that pages are cut by bytes (256 KiB) as well
// as by count (200).
func bulky(i int) string {
	return fmt.Sprintf("%d %s", i, strings.Repeat("x", (i*397)%3000))
}

func TestHistory(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	const room = "pages"
	chattest.Fill(t, srv.URL, room, 250, func(i int) string { return fmt.Sprint(i) })
	c := mustDial(t, ctx, srv.URL, Options{})
	if _, err := c.History(ctx, room, 0, 0); !isCode(err, protocol.CodeNotInRoom) {
		t.Errorf("history outside the room: err = %v, want %s", err, protocol.CodeNotInRoom)
	}
	if _, err := c.Join(ctx, room, "reader", nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		after      int64
		limit      int
		first, end int64 // seqs of the page, inclusive; 0, 0 for none
		more       bool
	}{
		{after: 0, limit: 0, first: 1, end: 200, more: true},
		{after: 200, limit: 0, first: 201, end: 250, more: false},
		{after: 10, limit: 5, first: 11, end: 15, more: true},
		{after: 245, limit: 200, first: 246, end: 250, more: false},
		{after: 250, limit: 0},
		{after: 1000, limit: 0},
	}
	for _, tc := range tests {
		h, raw, err := c.HistoryRaw(ctx, room, tc.after, tc.limit)
		if err != nil {
			t.Errorf("History(after %d, limit %d): %v", tc.after, tc.limit, err)
			continue
		}
		var seqs []int64
		for _, m := range h.Messages {
			seqs = append(seqs, m.Seq)
			if m.Message != fmt.Sprint(m.Seq) || m.RoomID != room {
				t.Errorf("History(after %d): message %+v", tc.after, m)
			}
		}
		if tc.end == 0 {
			if len(seqs) != 0 || h.More {
				t.Errorf("History(after %d, limit %d) = %v, more %v; want no messages", tc.after, tc.limit, seqs, h.More)
			}
		} else {
			chattest.CheckSeqs(t, "seqs", seqs, tc.first, tc.end)
		}
		if h.RoomID != room || h.More != tc.more {
			t.Errorf("History(after %d, limit %d): roomID %q, more %v; want %q, %v", tc.after, tc.limit, h.RoomID, h.More, room, tc.more)
		}
		if !strings.Contains(string(raw), `"type":"history"`) {
			t.Errorf("HistoryRaw bytes = %.100s", raw)
		}
	}
	// The room defaults as for msg, and bad values name their field.
	if h, err := c.History(ctx, "", 249, 0); err != nil || len(h.Messages) != 1 {
		t.Errorf("History without roomID: %+v, %v; want message 250", h, err)
	}
	for _, tc := range []struct {
		after int64
		limit int
		field string
	}{
		{after: -1, field: "after"},
		{after: 0, limit: 201, field: "limit"},
		{after: 0, limit: -1, field: "limit"},
	} {
		_, err := c.History(ctx, room, tc.after, tc.limit)
		if pe, ok := errors.AsType[*protocol.Error](err); !ok || pe.Code != protocol.CodeBadPayload || pe.Field != tc.field {
			t.Errorf("History(after %d, limit %d): err = %v, want %s on %q", tc.after, tc.limit, err, protocol.CodeBadPayload, tc.field)
		}
	}
}

func TestEvent(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	const room = "events"
	a := mustDial(t, ctx, srv.URL, Options{})
	b := mustDial(t, ctx, srv.URL, Options{Batch: true})
	if err := a.Event(ctx, room, "early", nil); !isCode(err, protocol.CodeNotInRoom) {
		t.Errorf("event outside the room: err = %v, want %s", err, protocol.CodeNotInRoom)
	}
	if _, err := a.Join(ctx, room, "alice", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Join(ctx, room, "bob", nil); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, ctx, a, protocol.TypePresence) // bob joined

	if err := a.Event(ctx, room, "reaction", map[string]any{"emoji": "👍", "seq": 3}); err != nil {
		t.Fatalf("Event: %v", err)
	}
	if err := a.Event(ctx, "", "app:v1.done", nil); err != nil {
		t.Fatalf("Event without roomID or data: %v", err)
	}
	// Refusals carry the event's id, so Event returns them.
	for _, tc := range []struct {
		name  string
		data  any
		code  string
		field string
	}{
		{name: "", code: protocol.CodeBadPayload, field: "name"},
		{name: "has space", code: protocol.CodeBadPayload, field: "name"},
		{name: strings.Repeat("n", 65), code: protocol.CodeBadPayload, field: "name"},
		{name: "big", data: strings.Repeat("d", 8<<10), code: protocol.CodeTooLong, field: "data"},
	} {
		err := a.Event(ctx, room, tc.name, tc.data)
		if pe, ok := errors.AsType[*protocol.Error](err); !ok || pe.Code != tc.code || pe.Field != tc.field {
			t.Errorf("Event(%.20q): err = %v, want %s on %q", tc.name, err, tc.code, tc.field)
		}
	}
	if _, err := a.SendMessage(ctx, room, "after the events"); err != nil {
		t.Fatal(err)
	}

	// bob gets both events, in order, from alice, then the message.
	_, raw := expectEvent(t, ctx, b, protocol.TypeEvent)
	var e protocol.Event
	if err := decode(mustEnvelope(t, raw), &e); err != nil {
		t.Fatal(err)
	}
	if e.RoomID != room || e.Name != "reaction" || e.From.Name != "alice" || e.From.UserID != a.Welcome().UserID ||
		string(e.Data) != `{"emoji":"👍","seq":3}` { // Event encodes maps with sorted keys
		t.Errorf("event = %+v (%s)", e, raw)
	}
	_, raw = expectEvent(t, ctx, b, protocol.TypeEvent)
	e = protocol.Event{}
	if err := decode(mustEnvelope(t, raw), &e); err != nil {
		t.Fatal(err)
	}
	if e.Name != "app:v1.done" || (len(e.Data) != 0 && string(e.Data) != "null") {
		t.Errorf("event without data = %+v (%s), want data null", e, raw)
	}
	if m := nextMsg(t, ctx, b); m.Message != "after the events" {
		t.Errorf("bob's msg after the events = %+v", m)
	}
	// alice's next event is her own message: no event came back to her.
	if _, raw := expectEvent(t, ctx, a, protocol.TypeMsg); !strings.Contains(string(raw), "after the events") {
		t.Errorf("alice's next event = %s, want her message", raw)
	}
}

// TestEventEmptyData: an event whose data is an empty object, array or
// string reaches the other members with that data, not null (the
// encoding of SendEvent once dropped them as if there were no data).
func TestEventEmptyData(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	const room = "empty-data"
	a := mustDial(t, ctx, srv.URL, Options{})
	b := mustDial(t, ctx, srv.URL, Options{})
	for _, c := range []*Conn{a, b} {
		if _, err := c.Join(ctx, room, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	expectEvent(t, ctx, a, protocol.TypePresence) // b joined
	for _, tc := range []struct {
		data any
		want string
	}{
		{map[string]any{}, `{}`},
		{[]int{}, `[]`},
		{"", `""`},
		{jsontext.Value(`{}`), `{}`},
	} {
		if err := a.Event(ctx, room, "e", tc.data); err != nil {
			t.Fatalf("Event(%#v): %v", tc.data, err)
		}
		_, raw := expectEvent(t, ctx, b, protocol.TypeEvent)
		var e protocol.Event
		if err := decode(mustEnvelope(t, raw), &e); err != nil {
			t.Fatal(err)
		}
		if string(e.Data) != tc.want {
			t.Errorf("Event(%#v) arrived with data %s (%s), want %s", tc.data, e.Data, raw, tc.want)
		}
	}
}

func mustEnvelope(t *testing.T, raw []byte) protocol.Envelope {
	t.Helper()
	env, perr := protocol.DecodeEnvelope(raw)
	if perr != nil {
		t.Fatalf("decode %s: %v", raw, perr)
	}
	return env
}

// TestSessionPagesHistory opens a session with since 0 on a room with 700
// stored messages (more than three pages, by count and by bytes), while
// another member keeps sending: the session must deliver 1..700 from the
// joined and its pages, then the live messages, each seq once and in order.
func TestSessionPagesHistory(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	const room = "backlog"
	const stored = 700
	chattest.Fill(t, srv.URL, room, stored, bulky)
	sender := mustDial(t, ctx, srv.URL, Options{})
	if _, err := sender.Join(ctx, room, "live", nil); err != nil {
		t.Fatal(err)
	}
	next := stored + 1
	sendLive := func(n int) {
		for range n {
			if _, err := sender.SendMessage(ctx, room, bulky(next)); err != nil {
				t.Fatal(err)
			}
			next++
		}
	}

	since := int64(0)
	s := openSession(t, ctx, srv.URL, room, SessionOptions{Options: Options{Batch: true}, Since: &since})
	var seen []int64
	var pages int
	ev, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Joined == nil || !ev.Joined.More || ev.Joined.LastSeq != stored {
		t.Fatalf("first event = %.300s, want joined with more and lastSeq %d", ev.Raw, stored)
	}
	for _, m := range ev.Messages() {
		seen = append(seen, m.Seq)
		if m.Message != bulky(int(m.Seq)) {
			t.Fatalf("message %d = %.40q…", m.Seq, m.Message)
		}
	}
	// The session has asked for the first page, or holds it until Next
	// takes it: these messages are live while it pages.
	sendLive(10)
	ctx2, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for len(seen) == 0 || seen[len(seen)-1] < int64(next-1) {
		ev, err := s.Next(ctx2)
		if err != nil {
			t.Fatalf("after seq %d: %v", seen[len(seen)-1], err)
		}
		if ev.History != nil {
			pages++
			if pages == 1 {
				sendLive(10) // and more in the middle of the catch-up
			}
		}
		for _, m := range ev.Messages() {
			seen = append(seen, m.Seq)
			if m.Message != bulky(int(m.Seq)) {
				t.Fatalf("message %d = %.40q…", m.Seq, m.Message)
			}
		}
	}
	chattest.CheckSeqs(t, "seqs", seen, 1, int64(next-1))
	if pages < 3 {
		t.Errorf("%d history pages, want at least 3 for 700 messages", pages)
	}
}

// TestSessionPagingResumesAfterDrop drops the connection while the session
// is paging through a backlog: it reconnects, re-joins with since = the last
// seq it delivered and pages on, delivering every seq once.
func TestSessionPagingResumesAfterDrop(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	const room = "backlog-drop"
	const stored = 700
	chattest.Fill(t, srv.URL, room, stored, bulky)
	since := int64(0)
	s := openSession(t, ctx, srv.URL, room, SessionOptions{Since: &since})
	var seen []int64
	reconnected := false
	dropped := false
	ctx2, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for len(seen) == 0 || seen[len(seen)-1] < stored {
		ev, err := s.Next(ctx2)
		if err != nil {
			t.Fatalf("have %d messages: %v", len(seen), err)
		}
		for _, m := range ev.Messages() {
			seen = append(seen, m.Seq)
		}
		reconnected = reconnected || ev.Reconnected
		if ev.History != nil && !dropped {
			dropped = true
			s.mu.Lock()
			c := s.conn
			s.mu.Unlock()
			c.CloseNow()
		}
	}
	chattest.CheckSeqs(t, "seqs", seen, 1, stored)
	if !dropped || !reconnected {
		t.Errorf("dropped %v, reconnected %v; want a drop in the middle of the pages and a reconnect", dropped, reconnected)
	}
}

// TestSessionEvents checks that a session delivers custom events, decoded,
// from a member and from the HTTP API, and sends its own.
func TestSessionEvents(t *testing.T) {
	srv := chattest.Start(t)
	ctx := testCtx(t)
	const room = "session-events"
	s := openSession(t, ctx, srv.URL, room, SessionOptions{Name: "bot"})
	if _, err := s.Next(ctx); err != nil { // joined
		t.Fatal(err)
	}
	other := mustDial(t, ctx, srv.URL, Options{})
	if _, err := other.Join(ctx, room, "carol", nil); err != nil {
		t.Fatal(err)
	}
	if err := other.Event(ctx, room, "cursor", []int{3, 4}); err != nil {
		t.Fatal(err)
	}
	ev := nextWhere(t, ctx, s, "the event from carol", func(ev Event) bool { return ev.Event != nil })
	if e := ev.Event; e.Name != "cursor" || string(e.Data) != "[3,4]" || e.From.Name != "carol" || ev.Type != protocol.TypeEvent {
		t.Errorf("event = %+v (%s)", e, ev.Raw)
	}

	resp, err := http.Post(srv.URL+"/api/rooms/"+room+"/events", "application/json", strings.NewReader(`{"name":"deploy","data":{"ok":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /api/rooms/%s/events: %s, want 202", room, resp.Status)
	}
	ev = nextWhere(t, ctx, s, "the event from the API", func(ev Event) bool { return ev.Event != nil })
	if e := ev.Event; e.Name != "deploy" || string(e.Data) != `{"ok":true}` || e.From.UserID != "" || e.RoomID != room {
		t.Errorf("API event = %+v (%s)", e, ev.Raw)
	}

	if err := s.Event(ctx, "wave", jsontext.Value(`"hi"`)); err != nil {
		t.Fatalf("Session.Event: %v", err)
	}
	expectEvent(t, ctx, other, protocol.TypeEvent) // deploy, from the API: to every member
	_, raw := expectEvent(t, ctx, other, protocol.TypeEvent)
	if !strings.Contains(string(raw), `"name":"wave","data":"hi"`) || !strings.Contains(string(raw), `"name":"bot"`) {
		t.Errorf("carol got %s", raw)
	}
	if err := s.Event(ctx, "bad name", nil); !isCode(err, protocol.CodeBadPayload) {
		t.Errorf("Session.Event with a bad name: %v, want %s", err, protocol.CodeBadPayload)
	}
}

func TestEventMessages(t *testing.T) {
	m := func(seq int64) protocol.Message { return protocol.Message{Seq: seq} }
	seqs := func(ev Event) []int64 {
		var out []int64
		for _, m := range ev.Messages() {
			out = append(out, m.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		ev   Event
		want string
	}{
		{Event{Joined: &protocol.Joined{History: []protocol.Message{m(1), m(2)}}}, "[1 2]"},
		{Event{History: &protocol.History{Messages: []protocol.Message{m(3)}}}, "[3]"},
		{Event{Msg: &protocol.Message{Seq: 4}}, "[4]"},
		{Event{Event: &protocol.Event{Name: "x"}}, "[]"},
	} {
		if got := fmt.Sprint(seqs(tc.ev)); got != tc.want {
			t.Errorf("Messages of %+v = %s, want %s", tc.ev, got, tc.want)
		}
	}
}

// TestSessionPagingUnderRateLimit pages a backlog on a server whose rate
// limit (every frame counts, history requests too) is far below what
// paging asks for: the session waits out rate_limited and asks again on
// the same connection, with no reconnect.
func TestSessionPagingUnderRateLimit(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	srv := chattest.Start(t, "-db", db)
	ctx := testCtx(t)
	const room = "limited"
	const stored = 700
	chattest.Fill(t, srv.URL, room, stored, bulky)
	srv.Stop(t)
	srv = chattest.Start(t, "-db", db, "-rate", "10", "-burst", "2")
	since := int64(0)
	var drops atomic.Int32
	s := openSession(t, ctx, srv.URL, room, SessionOptions{
		Since:   &since,
		OnState: func(st State) { drops.Add(1) },
	})
	var pages int
	var seen []int64
	for len(seen) < stored {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("have %d messages: %v", len(seen), err)
		}
		if ev.History != nil {
			pages++
		}
		for _, m := range ev.Messages() {
			seen = append(seen, m.Seq)
		}
	}
	chattest.CheckSeqs(t, "seqs", seen, 1, stored)
	if pages < 3 || drops.Load() != 0 {
		t.Errorf("%d pages, %d connection changes; want at least 3 pages and none", pages, drops.Load())
	}
}

func TestRateLimitedWait(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		n    int
		want time.Duration
	}{
		{rate: 20, n: 1, want: 50 * time.Millisecond},
		{rate: 10, n: 1, want: 100 * time.Millisecond},
		{rate: 10, n: 3, want: 400 * time.Millisecond},
		{rate: 0.5, n: 1, want: 2 * time.Second},
		{rate: 0, n: 1, want: 50 * time.Millisecond},
		{rate: 1000, n: 1, want: 50 * time.Millisecond},
		{rate: 20, n: 100, want: 2 * time.Second},
	} {
		if got := rateLimitedWait(tc.rate, tc.n); got != tc.want {
			t.Errorf("rateLimitedWait(%g, %d) = %v, want %v", tc.rate, tc.n, got, tc.want)
		}
	}
}
