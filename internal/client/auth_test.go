package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/identity/identitytest"
	"github.com/roomchat/roomchat/internal/protocol"
)

// authConfig is a configuration file with signed identity on (SPEC §10)
// and a private namespace (§9): staff rooms need a token that grants them.
const authConfig = `
[auth]
mode = "optional"
algorithms = ["HS256"]
hmac_secret_env = "ROOMCHAT_JWT_SECRET"
leeway = "0s"

[namespace.staff]
join = "token"
`

// authServer is an in-process server with authConfig's policy and
// verifier, whose tokens expire into grace (then a 4001 close). upgrades
// counts its WebSocket handshakes.
func authServer(t *testing.T, grace time.Duration) (srv *chattest.InProcess, upgrades *atomic.Int64) {
	t.Helper()
	srv = chattest.NewInProcess(t, chattest.WithConfig(t, authConfig, map[string]string{"ROOMCHAT_JWT_SECRET": identitytest.Secret}, grace))
	upgrades = new(atomic.Int64)
	srv.Serve(func(hs *httptest.Server) {
		h := hs.Config.Handler
		hs.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/ws" {
				upgrades.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	return srv, upgrades
}

// staffToken is a token for sub that grants every staff room, expiring at exp.
func staffToken(t *testing.T, sub string, exp time.Time) string {
	c := identitytest.Claims(sub)
	c["name"] = "Ada"
	c["exp"] = exp.Unix()
	c["rooms"] = map[string]any{"staff:*": "member"}
	return identitytest.SignHS256(t, identitytest.Secret, c)
}

// TestDialToken: Options.Token is the connection's identity; a private
// namespace room takes it and refuses a connection without one; a bad
// token is a 401 DialError that is ErrUnauthorized and says why.
func TestDialToken(t *testing.T) {
	srv, _ := authServer(t, time.Second)
	ctx := testCtx(t)
	exp := time.Now().Add(time.Hour)
	c := mustDial(t, ctx, srv.URL, Options{Token: staffToken(t, "ada", exp)})
	if w := c.Welcome(); w.UserID != "ada" || w.Name != "Ada" || w.Exp != exp.Unix() {
		t.Fatalf("welcome %+v; want userID ada, name Ada, exp %d", w, exp.Unix())
	}
	if j, err := c.Join(ctx, "staff:ops", "", nil); err != nil || j.RoomID != "staff:ops" || j.You.Name != "Ada" {
		t.Fatalf("join staff:ops with a token: %+v, %v", j, err)
	}
	cr, err := c.CreateIn(ctx, "staff")
	if err != nil || len(cr.RoomID) <= len("staff:") || cr.RoomID[:len("staff:")] != "staff:" {
		t.Fatalf("CreateIn(staff) = %+v, %v; want a staff: room", cr, err)
	}
	if id, _, err := ParseRoom(cr.URL); err != nil || id != cr.RoomID {
		t.Fatalf("ParseRoom(%q) = %q, %v; want %q", cr.URL, id, err, cr.RoomID)
	}

	anon := mustDial(t, ctx, srv.URL, Options{})
	if _, err := anon.Join(ctx, "staff:ops", "", nil); !isCode(err, protocol.CodeForbidden) {
		t.Fatalf("join staff:ops without a token: %v, want forbidden", err)
	}

	bad := staffToken(t, "ada", time.Now().Add(-time.Minute))
	_, err = Dial(ctx, srv.URL, Options{Token: bad})
	de, ok := errors.AsType[*DialError](err)
	if !ok || !errors.Is(err, ErrUnauthorized) || de.StatusCode != http.StatusUnauthorized || de.Reason == "" {
		t.Fatalf("Dial with an expired token: %#v; want a 401 DialError with the server's reason", err)
	}
}

// TestConnAuth: an auth frame with a fresh token for the same user is
// answered authed with its exp; another user's token is forbidden.
func TestConnAuth(t *testing.T) {
	srv, _ := authServer(t, time.Second)
	ctx := testCtx(t)
	c := mustDial(t, ctx, srv.URL, Options{Token: staffToken(t, "ada", time.Now().Add(time.Hour))})
	exp := time.Now().Add(2 * time.Hour)
	a, err := c.Auth(ctx, staffToken(t, "ada", exp))
	if err != nil || a.Exp != exp.Unix() {
		t.Fatalf("Auth = %+v, %v; want exp %d", a, err, exp.Unix())
	}
	if _, err := c.Auth(ctx, staffToken(t, "bob", exp)); !isCode(err, protocol.CodeForbidden) {
		t.Fatalf("Auth with another user's token: %v, want forbidden", err)
	}
	if _, err := c.Auth(ctx, "not-a-token"); !isCode(err, protocol.CodeUnauthorized) {
		t.Fatalf("Auth with garbage: %v, want unauthorized", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("the connection after refused auth frames: %v", err)
	}
}

// TestSessionTokenExpiredStops: without a TokenSource, a Session delivers
// the server's token_expired, and after the 4001 close it ends with
// ErrTokenExpired instead of reconnecting with the dead token.
func TestSessionTokenExpiredStops(t *testing.T) {
	srv, upgrades := authServer(t, 300*time.Millisecond)
	ctx := testCtx(t)
	tok := staffToken(t, "ada", time.Now().Add(1500*time.Millisecond))
	s := openSession(t, ctx, srv.URL, "staff:ops", SessionOptions{Options: Options{Token: tok}})
	nextWhere(t, ctx, s, "token_expired", func(ev Event) bool { return ev.TokenExpired })
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		ev, err := s.Next(ectx)
		if err == nil {
			t.Logf("event after token_expired: %s", ev.Raw)
			continue
		}
		if !errors.Is(err, ErrTokenExpired) || !errors.Is(s.Err(), ErrTokenExpired) {
			t.Fatalf("session ended with %v (Err %v), want ErrTokenExpired", err, s.Err())
		}
		break
	}
	if n := upgrades.Load(); n != 1 {
		t.Fatalf("%d handshakes, want 1: a 4001 close must not be followed by a reconnect", n)
	}
}

// TestSessionRefreshesToken: with a TokenSource, a Session sends a fresh
// token before the one in force expires, so the connection outlives
// several tokens without a token_expired or a reconnect.
func TestSessionRefreshesToken(t *testing.T) {
	srv, upgrades := authServer(t, 300*time.Millisecond)
	ctx := testCtx(t)
	var (
		mu      sync.Mutex
		lastExp time.Time
		late    []string
	)
	calls := make(chan struct{}, 10)
	source := func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if !lastExp.IsZero() && !now.Before(lastExp) {
			late = append(late, now.Sub(lastExp).String())
		}
		lastExp = now.Add(3 * time.Second).Truncate(time.Second)
		select {
		case calls <- struct{}{}:
		default:
		}
		return staffToken(t, "ada", lastExp), nil
	}
	s := openSession(t, ctx, srv.URL, "staff:ops", SessionOptions{Options: Options{TokenSource: source}})
	go func() {
		for {
			ev, err := s.Next(ctx)
			if err != nil {
				return
			}
			if ev.TokenExpired {
				t.Errorf("token_expired although the source had a fresh token: %s", ev.Raw)
			}
		}
	}()
	for range 3 { // the dial's token and two renewals
		select {
		case <-calls:
		case <-ctx.Done():
			t.Fatal("the session did not ask its TokenSource for a renewal")
		}
	}
	mu.Lock()
	waitUntil := lastExp
	mu.Unlock()
	// Past the first renewed token's exp and the grace: the connection
	// lives on its last token.
	for time.Now().Before(waitUntil.Add(-time.Second)) {
		if _, err := s.SendMessage(ctx, "still here"); err != nil {
			t.Fatalf("SendMessage: %v", err)
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(late) > 0 {
		t.Errorf("renewals after the token in force had expired, by %v", late)
	}
	if n := upgrades.Load(); n != 1 {
		t.Errorf("%d handshakes, want 1 (renewed on the same connection)", n)
	}
}

// TestSessionStopsOn401: a reconnect that the server refuses with 401 ends
// the session with ErrUnauthorized instead of retrying forever.
func TestSessionStopsOn401(t *testing.T) {
	srv, upgrades := authServer(t, 300*time.Millisecond)
	ctx := testCtx(t)
	var n atomic.Int64
	source := func(context.Context) (string, error) {
		if n.Add(1) == 1 {
			return staffToken(t, "ada", time.Now().Add(1500*time.Millisecond)), nil
		}
		return "revoked", nil // every later token is refused
	}
	s := openSession(t, ctx, srv.URL, "staff:ops", SessionOptions{Options: Options{TokenSource: source}})
	ectx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	expired := false
	for {
		ev, err := s.Next(ectx)
		if err == nil {
			expired = expired || ev.TokenExpired
			continue
		}
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("session ended with %v, want ErrUnauthorized", err)
		}
		break
	}
	if !expired {
		t.Error("no TokenExpired event although every renewal failed")
	}
	if got := upgrades.Load(); got != 2 {
		t.Errorf("%d handshakes, want 2 (the first, and the refused reconnect)", got)
	}
}

// TestSessionReplacedStops: two Sessions of one signed identity do not
// take each other over for ever. The server keeps one connection per
// identity (SPEC §10); the Session whose connection another one of the
// same sub replaced ends with a *ReplacedError naming the user, without
// reconnecting, and the other keeps its connection.
func TestSessionReplacedStops(t *testing.T) {
	srv, upgrades := authServer(t, time.Second)
	ctx := testCtx(t)
	tok := staffToken(t, "ada", time.Now().Add(time.Hour))
	first := openSession(t, ctx, srv.URL, "staff:ops", SessionOptions{Options: Options{Token: tok}})
	nextWhere(t, ctx, first, "the first joined", func(ev Event) bool { return ev.Joined != nil })
	second := openSession(t, ctx, srv.URL, "staff:ops", SessionOptions{Options: Options{Token: tok}})
	nextWhere(t, ctx, second, "the second joined", func(ev Event) bool { return ev.Joined != nil })

	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	for err == nil {
		var ev Event
		if ev, err = first.Next(ectx); err == nil && ev.Reconnected {
			t.Fatalf("the replaced session reconnected: %s", ev.Raw)
		}
	}
	re, ok := errors.AsType[*ReplacedError](err)
	if !ok || !errors.Is(err, ErrReplaced) || re.UserID != "ada" {
		t.Fatalf("replaced session ended with %#v, want a *ReplacedError for ada that is ErrReplaced", err)
	}
	if want := "another connection of ada took over this session"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if !errors.Is(first.Err(), ErrReplaced) {
		t.Errorf("Err() = %v, want ErrReplaced", first.Err())
	}
	// The first session's goroutine has ended (Next returned its
	// reason), so no reconnect can follow: two handshakes, for good.
	if _, err := second.SendMessage(ctx, "still here"); err != nil {
		t.Fatalf("the session that took over: SendMessage: %v", err)
	}
	if n := upgrades.Load(); n != 2 {
		t.Fatalf("%d handshakes, want 2: the replaced session must not reconnect", n)
	}
}

// TestSessionReplacedAnonymous: a Session without a token whose user
// another connection took over with its resume token reconnects, as after
// any drop (it comes back as the same user within the token's overlap,
// or as a new one).
func TestSessionReplacedAnonymous(t *testing.T) {
	srv, upgrades := authServer(t, time.Second)
	ctx := testCtx(t)
	s := openSession(t, ctx, srv.URL, "lobby", SessionOptions{})
	nextWhere(t, ctx, s, "joined", func(ev Event) bool { return ev.Joined != nil })
	s.mu.Lock()
	resume := s.conn.Resume()
	s.mu.Unlock()
	c := mustDial(t, ctx, srv.URL, Options{Resume: resume})
	if c.Welcome().UserID == "" {
		t.Fatalf("welcome %+v", c.Welcome())
	}
	nextWhere(t, ctx, s, "the joined after a reconnect", func(ev Event) bool { return ev.Joined != nil && ev.Reconnected })
	if err := s.Err(); err != nil {
		t.Fatalf("session ended with %v, want it running", err)
	}
	if n := upgrades.Load(); n < 3 {
		t.Fatalf("%d handshakes, want at least 3 (session, resume, reconnect)", n)
	}
}
