package server_test

// Signed identity (SPEC §10) over real WebSocket upgrades: tokens signed
// in the test, by every transport, good and bad, and their expiry.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"
	"github.com/golang-jwt/jwt/v5"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/identity"
	"github.com/roomchat/roomchat/internal/identity/identitytest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

// authConfig is a file with auth in mode, HS256 and RS256 allowed (the
// public key at pem), and one open namespace.
func authConfig(mode, pem string) string {
	return fmt.Sprintf(`
[auth]
mode = %q
algorithms = ["HS256", "RS256"]
hmac_secret_env = "TEST_JWT_SECRET"
public_key_file = %q
api_keys_env = "TEST_API_KEYS"

[namespace.open]
`, mode, pem)
}

// upgradeAuth makes a WebSocket upgrade request with h over plain HTTP and
// returns its status and, for an error, its JSON body.
func upgradeAuth(t *testing.T, base, query string, h http.Header) (int, protocol.Error) {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/ws"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	ctx, cancel := context.WithTimeout(context.Background(), chattest.Timeout)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	defer res.Body.Close()
	var e protocol.Error
	if res.StatusCode != http.StatusSwitchingProtocols {
		if err := jsonDecode(res, &e); err != nil {
			t.Fatalf("upgrade answered %s with a body that is not a JSON error: %v", res.Status, err)
		}
	}
	return res.StatusCode, e
}

func jsonDecode(res *http.Response, v any) error {
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// readFile returns the bytes of the file at path.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Valid tokens over the three transports: the welcome carries the sub as
// the userID, the name and exp; the subprotocol path selects roomchat; a
// name claim fixes the name.
func TestIdentityTransports(t *testing.T) {
	rsa, pem := identitytest.WriteRSAKey(t, t.TempDir())
	s := startAccess(t, authConfig("optional", pem))
	claims := identitytest.Claims("alice-1")
	claims["name"] = "Alice"
	exp := claims["exp"].(int64)
	hs := identitytest.SignHS256(t, identitytest.Secret, claims)
	rs := identitytest.Sign(t, rsa, "RS256", claims)
	check := func(how string, c *chattest.Client) {
		t.Helper()
		w := c.Welcome
		if w.UserID != "alice-1" || w.Name != "Alice" || w.Exp != exp {
			t.Fatalf("%s: welcome %+v, want userID alice-1, name Alice, exp %d", how, w, exp)
		}
		c.Send(t, `{"type":"join","payload":{"roomID":"open:r","name":"mallory"}}`)
		var j protocol.Joined
		chattest.Decode(t, c.Expect(t, protocol.TypeJoined), &j)
		if j.You != (protocol.User{UserID: "alice-1", Name: "Alice"}) {
			t.Fatalf("%s: joined as %+v; the token's name is fixed", how, j.You)
		}
		c.Close()
	}
	check("header HS256", dialToken(t, s.URL, hs))
	check("header RS256", dialToken(t, s.URL, rs))
	check("query", chattest.Dial(t, s.URL, "?token="+url.QueryEscape(hs)))

	ctx, cancel := context.WithTimeout(context.Background(), chattest.Timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/ws", &websocket.DialOptions{
		Subprotocols: []string{protocol.Subprotocol, identity.BearerSubprotocol + hs},
	})
	if err != nil {
		t.Fatalf("dial with the bearer subprotocol: %v", err)
	}
	if ws.Subprotocol() != "roomchat" {
		t.Fatalf("server selected subprotocol %q, want roomchat", ws.Subprotocol())
	}
	c := chattest.Wrap(t, ws)
	chattest.Decode(t, c.Expect(t, protocol.TypeWelcome), &c.Welcome)
	check("subprotocol", c)
}

// Every kind of bad token is refused with 401 unauthorized before the
// upgrade, by every transport, in every mode, and harms nothing else: a
// connected client keeps chatting and the server counts no connection.
func TestIdentityBadTokens(t *testing.T) {
	dir := t.TempDir()
	_, pem := identitytest.WriteRSAKey(t, dir)
	pemBytes := readFile(t, pem)
	s := startAccess(t, authConfig("optional", pem))

	keep := chattest.Dial(t, s.URL, "")
	keep.Join(t, "open:r")

	claims := func(mod func(map[string]any)) map[string]any {
		c := identitytest.Claims("bob")
		mod(c)
		return c
	}
	hs := func(mod func(map[string]any)) string {
		return identitytest.SignHS256(t, identitytest.Secret, claims(mod))
	}
	none := func(map[string]any) {}
	bad := []struct{ name, tok string }{
		{"expired", hs(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })},
		{"not yet valid", hs(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })},
		{"wrong key", identitytest.SignHS256(t, "another-secret-0123456789abcdefghij", claims(none))},
		{"alg none", identitytest.Sign(t, jwt.UnsafeAllowNoneSignatureType, "none", claims(none))},
		{"HS256 keyed with the RSA public key", identitytest.Sign(t, pemBytes, "HS256", claims(none))},
		{"missing exp", hs(func(c map[string]any) { delete(c, "exp") })},
		{"missing sub", hs(func(c map[string]any) { delete(c, "sub") })},
		{"malformed", "not.a.jwt"},
		{"empty", ""},
		{"9 KB", hs(func(c map[string]any) { c["pad"] = strings.Repeat("a", 9<<10) })},
	}
	for _, b := range bad {
		for _, via := range []string{"header", "subprotocol", "query"} {
			h, q := http.Header{}, ""
			switch via {
			case "header":
				h.Set("Authorization", "Bearer "+b.tok)
			case "subprotocol":
				if b.tok == "" {
					continue // an empty subprotocol entry is no token
				}
				h.Set("Sec-WebSocket-Protocol", protocol.Subprotocol+", "+identity.BearerSubprotocol+b.tok)
			case "query":
				q = "?token=" + url.QueryEscape(b.tok)
			}
			status, e := upgradeAuth(t, s.URL, q, h)
			if status != http.StatusUnauthorized || e.Code != protocol.CodeUnauthorized || e.Message == "" {
				t.Errorf("%s by %s: %d %+v, want 401 unauthorized", b.name, via, status, e)
			}
			if strings.Contains(e.Message, b.tok) && b.tok != "" {
				t.Errorf("%s by %s: the refusal echoes the token", b.name, via)
			}
		}
	}
	// The connected client chats on; the server holds it and the new one only.
	keep.SendAck(t, "still", "still here")
	if n := chattest.Dial(t, s.URL, "").Welcome.Online; n != 2 {
		t.Fatalf("welcome.online = %d after the refusals, want 2", n)
	}
}

// mode = "required" refuses an anonymous upgrade with 401 and takes a
// token; "optional" takes both; "off" refuses a presented token.
func TestIdentityModes(t *testing.T) {
	_, pem := identitytest.WriteRSAKey(t, t.TempDir())
	tok := token(t, "carol", nil)

	req := startAccess(t, authConfig("required", pem))
	if status, e := upgradeAuth(t, req.URL, "", nil); status != http.StatusUnauthorized || e.Code != protocol.CodeUnauthorized {
		t.Fatalf("required, anonymous: %d %+v, want 401 unauthorized", status, e)
	}
	if w := dialToken(t, req.URL, tok).Welcome; w.UserID != "carol" {
		t.Fatalf("required, token: welcome %+v", w)
	}

	opt := startAccess(t, authConfig("optional", pem))
	if w := chattest.Dial(t, opt.URL, "").Welcome; w.UserID == "" || w.Exp != 0 || w.Name != "" {
		t.Fatalf("optional, anonymous: welcome %+v, want a guest without exp", w)
	}

	off := startAccess(t, "[namespace.open]\n")
	if status, e := upgradeAuth(t, off.URL, "", http.Header{"Authorization": {"Bearer " + tok}}); status != http.StatusUnauthorized || e.Code != protocol.CodeUnauthorized {
		t.Fatalf("off, token: %d %+v, want 401 unauthorized", status, e)
	}
	chattest.Dial(t, off.URL, "")
}

// An auth frame before exp keeps the socket (authed with the new exp);
// silence gets token_expired at exp and a 4001 close after the grace;
// another sub is forbidden.
func TestIdentityExpiry(t *testing.T) {
	_, pem := identitytest.WriteRSAKey(t, t.TempDir())
	const grace = 300 * time.Millisecond
	s := startAccess(t, authConfig("optional", pem), func(c *server.Config) { c.AuthGrace = grace })
	short := func(sub string) (string, time.Time) {
		c := identitytest.Claims(sub)
		exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
		c["exp"] = exp.Unix()
		return identitytest.SignHS256(t, identitytest.Secret, c), exp
	}

	tokA, expA := short("refresher")
	a := dialToken(t, s.URL, tokA)
	tokB, expB := short("silent")
	b := dialToken(t, s.URL, tokB)

	// Another sub is forbidden, and the connection stays.
	a.Sendf(t, `{"type":"auth","id":"x","payload":{"token":%q}}`, token(t, "someone-else", nil))
	denied(t, "auth with another sub", a.ExpectError(t, protocol.CodeForbidden), protocol.CodeForbidden)

	fresh := identitytest.Claims("refresher")
	a.Sendf(t, `{"type":"auth","id":"r","payload":{"token":%q}}`, identitytest.SignHS256(t, identitytest.Secret, fresh))
	f := a.Expect(t, protocol.TypeAuthed)
	var authed protocol.Authed
	chattest.Decode(t, f, &authed)
	if f.ID != "r" || authed.Exp != fresh["exp"].(int64) {
		t.Fatalf("authed %s, want id r and exp %d", f, fresh["exp"])
	}

	// The silent one: token_expired at exp, then 4001 after the grace.
	b.ExpectError(t, protocol.CodeTokenExpired)
	if now := time.Now(); now.Before(expB.Add(-100 * time.Millisecond)) {
		t.Fatalf("token_expired at %v, before exp %v", now, expB)
	}
	if code := b.CloseCode(t, 5*time.Second); code != 4001 {
		t.Fatalf("silent connection closed with %d, want 4001", code)
	}

	// The refreshed one is still up past its first exp and the grace.
	if wait := time.Until(expA.Add(grace + 500*time.Millisecond)); wait > 0 {
		a.Quiet(t, wait)
	}
	a.Send(t, `{"type":"ping","id":"p"}`)
	if f := a.Expect(t, protocol.TypePong); f.ID != "p" {
		t.Fatalf("pong %s", f)
	}
}

// A second connection with the same sub replaces the first (closed with
// 1000); a verified user's resume token does not let an anonymous
// connection in as that user.
func TestIdentityReplaceAndResume(t *testing.T) {
	_, pem := identitytest.WriteRSAKey(t, t.TempDir())
	s := startAccess(t, authConfig("optional", pem))
	first := dialToken(t, s.URL, token(t, "dave", nil))
	second := dialToken(t, s.URL, token(t, "dave", nil))
	if second.Welcome.UserID != "dave" {
		t.Fatalf("second welcome %+v", second.Welcome)
	}
	if code := first.CloseCode(t, chattest.Timeout); code != websocket.StatusNormalClosure {
		t.Fatalf("replaced connection closed with %d, want 1000", code)
	}
	anon := chattest.Dial(t, s.URL, "?resume="+url.QueryEscape(second.Welcome.Resume))
	if anon.Welcome.UserID == "dave" {
		t.Fatal("an anonymous connection resumed the verified user dave")
	}
	// The verified user is still connected and unaffected.
	second.Send(t, `{"type":"ping","id":"p"}`)
	second.Expect(t, protocol.TypePong)
}
