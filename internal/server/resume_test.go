package server_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
)

// dialProtocols upgrades to ts's /ws (with query) offering the
// subprotocols protocols, as a browser does with new WebSocket(url,
// protocols), and returns the connection with its welcome.
func dialProtocols(t *testing.T, ts *chattest.InProcess, query string, protocols ...string) (*websocket.Conn, protocol.Welcome) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chattest.Timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+ts.URL[len("http"):]+"/ws"+query, &websocket.DialOptions{Subprotocols: protocols})
	if err != nil {
		t.Fatalf("dial with subprotocols %q: %v", protocols, err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	env, err := chattest.AwaitFrame(ctx, ws, protocol.TypeWelcome)
	if err != nil || env.Type != protocol.TypeWelcome {
		t.Fatalf("welcome: %v %v", env, err)
	}
	var w protocol.Welcome
	if perr := protocol.DecodePayload(env, &w); perr != nil {
		t.Fatal(perr)
	}
	return ws, w
}

// The resume token may come in the subprotocol roomchat.resume.<token>,
// offered beside roomchat, which the server selects: that is how the web
// client sends it, out of the URL that proxies log. It wins over
// ?resume=, which scripts keep using. A client offering no subprotocol
// gets none.
func TestResumeSubprotocol(t *testing.T) {
	ts := chattest.StartInProcess(t)
	a := chattest.Dial(t, ts.URL, "")
	id, token := a.Welcome.UserID, a.Welcome.Resume
	a.Close()

	ws, w := dialProtocols(t, ts, "?batch=1", protocol.Subprotocol, protocol.ResumeSubprotocol+token)
	if got := ws.Subprotocol(); got != protocol.Subprotocol {
		t.Errorf("selected subprotocol %q, want %q", got, protocol.Subprotocol)
	}
	if w.UserID != id {
		t.Fatalf("resumed by subprotocol as %q, want %q", w.UserID, id)
	}
	ws.CloseNow()

	// The subprotocol comes first: a stale ?resume= beside it is ignored.
	_, w2 := dialProtocols(t, ts, "?resume=no-such-token", protocol.Subprotocol, protocol.ResumeSubprotocol+w.Resume)
	if w2.UserID != id {
		t.Fatalf("subprotocol token beside a bad ?resume=: userID %q, want %q", w2.UserID, id)
	}

	// roomchat alone, or a token the server did not sign: a new user.
	ws3, w3 := dialProtocols(t, ts, "", protocol.Subprotocol)
	if ws3.Subprotocol() != protocol.Subprotocol || w3.UserID == "" || w3.UserID == id {
		t.Fatalf("roomchat alone: subprotocol %q, userID %q (had %q)", ws3.Subprotocol(), w3.UserID, id)
	}
	if _, w4 := dialProtocols(t, ts, "", protocol.Subprotocol, protocol.ResumeSubprotocol+"AQAAforged"); w4.UserID == id {
		t.Fatal("a forged token in the subprotocol resumed")
	}
	ws5, _ := dialProtocols(t, ts, "")
	if got := ws5.Subprotocol(); got != "" {
		t.Errorf("no subprotocol offered, %q selected", got)
	}

	// The Go client sends its token the same way.
	ctx, cancel := context.WithTimeout(context.Background(), chattest.Timeout)
	defer cancel()
	c, err := client.Dial(ctx, ts.URL, client.Options{Resume: w2.Resume})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.Welcome().UserID != id {
		t.Fatalf("internal/client resumed as %q, want %q", c.Welcome().UserID, id)
	}
}

// A connection whose token is half ResumeMaxAge old gets a new one in a
// resume event, at a keepalive ping. The new token resumes; the old one,
// once older than ResumeMaxAge, gives a new user even though the resume
// window has not passed.
func TestResumeRenewed(t *testing.T) {
	const maxAge = 2 * time.Second
	ts := chattest.StartInProcess(t, func(c *server.Config) {
		c.PingInterval = 100 * time.Millisecond
		withRoom(c, room.Options{ResumeMaxAge: maxAge})
	})
	start := time.Now()
	a := chattest.Dial(t, ts.URL, "")
	id, first := a.Welcome.UserID, a.Welcome.Resume

	var r protocol.Resume
	f := a.Await(t, protocol.TypeResume)
	chattest.Decode(t, f, &r)
	if since := time.Since(start); since < maxAge/2 {
		t.Errorf("resume event %v after connecting, want ≥ %v (half of ResumeMaxAge)", since, maxAge/2)
	}
	if r.Resume == "" || r.Resume == first || f.ID != "" {
		t.Fatalf("resume event %s: want a new token (the welcome's was %q) and no id", f, first)
	}
	// A second one follows a renewal period later, not at every ping.
	var r2 protocol.Resume
	chattest.Decode(t, a.Await(t, protocol.TypeResume), &r2)
	if r2.Resume == r.Resume {
		t.Fatalf("the second resume event repeats the token %q", r2.Resume)
	}
	a.Close()

	b := chattest.Dial(t, ts.URL, "?resume="+url.QueryEscape(r2.Resume))
	if b.Welcome.UserID != id {
		t.Fatalf("resumed with the renewed token as %q, want %q", b.Welcome.UserID, id)
	}
	// The welcome's token is now older than ResumeMaxAge, and the
	// resume window (2 min) has not passed.
	time.Sleep(time.Until(start.Add(maxAge + 100*time.Millisecond)))
	if c := chattest.Dial(t, ts.URL, "?resume="+url.QueryEscape(first)); c.Welcome.UserID == id {
		t.Fatal("a token older than ResumeMaxAge resumed")
	}
}

// The Go client keeps the newest token (Conn.Resume), which the welcome
// or a later resume event carried.
func TestClientKeepsRenewedToken(t *testing.T) {
	ts := chattest.StartInProcess(t, func(c *server.Config) {
		c.PingInterval = 100 * time.Millisecond
		withRoom(c, room.Options{ResumeMaxAge: time.Second})
	})
	ctx, cancel := context.WithTimeout(context.Background(), chattest.Timeout)
	defer cancel()
	c, err := client.Dial(ctx, ts.URL, client.Options{HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	first := c.Resume()
	if first != c.Welcome().Resume {
		t.Fatalf("Resume() = %q before any resume event, want the welcome's %q", first, c.Welcome().Resume)
	}
	env, _, err := c.Next(ctx)
	for err == nil && env.Type != protocol.TypeResume {
		env, _, err = c.Next(ctx)
	}
	if err != nil {
		t.Fatalf("waiting for a resume event: %v", err)
	}
	if got := c.Resume(); got == first || got == "" {
		t.Fatalf("Resume() = %q after a resume event, want a new token", got)
	}
}
