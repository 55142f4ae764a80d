package web_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/identity/identitytest"
	"github.com/roomchat/roomchat/internal/protocol"
)

// tokenConfig turns signed identity on (SPEC §10) with a private
// namespace (§9): staff rooms need a token that grants them.
const tokenConfig = `
[auth]
mode = "optional"
algorithms = ["HS256"]
hmac_secret_env = "ROOMCHAT_JWT_SECRET"
leeway = "0s"

[namespace.staff]
join = "token"
`

// tokenServer is a browser test's server with tokenConfig, whose expired
// tokens are closed with 4001 after grace.
func tokenServer(t *testing.T, grace time.Duration) *testServer {
	t.Helper()
	srv := newServer(t, filepath.Join(t.TempDir(), "roomchat.db"), "127.0.0.1:0", protocol.Limits{},
		chattest.WithConfig(t, tokenConfig, map[string]string{"ROOMCHAT_JWT_SECRET": identitytest.Secret}, grace))
	srv.listen()
	return srv
}

func staffToken(t *testing.T, sub string, exp time.Time) string {
	return identitytest.Token(t, sub, exp, map[string]any{"staff:*": "member"})
}

// TestBrowserToken: a page without a token cannot join a private room and
// shows the forbidden reason; one opened with ?token= joins, the token
// leaves the address bar for sessionStorage and goes in the subprotocol.
func TestBrowserToken(t *testing.T) {
	browser := newBrowser(t)
	srv := tokenServer(t, 30*time.Second)

	anon := newPage(t, browser, "anon")
	anon.do(chromedp.Navigate(srv.url() + "/r/staff:ops"))
	anon.chooseName("Anon")
	anon.waitJS("the forbidden reason", `document.getElementById('error').textContent.includes('staff')`)
	if msg := evalJS[string](anon, `document.getElementById('error').textContent`); !strings.Contains(msg, "Not allowed") {
		t.Errorf("error shown without a token: %q, want the forbidden reason", msg)
	}
	if evalJS[bool](anon, `roomchat.joined`) {
		t.Error("a page without a token joined the private room")
	}

	tok := staffToken(t, "ada", time.Now().Add(time.Hour))
	p := newPage(t, browser, "ada")
	p.do(chromedp.Navigate(srv.url() + "/r/staff:ops?token=" + tok))
	p.chooseName("Ada")
	p.waitConnected()
	if href := evalJS[string](p, `location.href`); strings.Contains(href, "token") || !strings.HasSuffix(href, "/r/staff:ops") {
		t.Errorf("address bar %q still holds the token", href)
	}
	if got := evalJS[string](p, `sessionStorage.getItem('roomchat.token')`); got != tok {
		t.Errorf("stored token %q, want the one given", got)
	}
	if id := evalJS[string](p, `roomchat.userID`); id != "ada" {
		t.Errorf("userID %q, want the token's sub ada", id)
	}
	for _, pg := range []*pageT{anon, p} {
		if err := pg.problems(); err != nil {
			t.Error(err)
		}
	}
}

// TestBrowserStopsOn4001: a page whose token expires without a refresh URL
// is told, and after the server's 4001 close it does not reconnect: it
// says why.
func TestBrowserStopsOn4001(t *testing.T) {
	browser := newBrowser(t)
	srv := tokenServer(t, 500*time.Millisecond)
	tok := staffToken(t, "ada", time.Now().Add(3*time.Second))
	p := newPage(t, browser, "ada")
	p.do(chromedp.Navigate(srv.url() + "/r/staff:ops?token=" + tok))
	p.chooseName("Ada")
	p.waitConnected()
	// Count every dial from now on.
	evalJS[bool](p, `(window.dials = 0, window.WebSocket = class extends WebSocket { constructor(...a) { super(...a); window.dials++; } }, true)`)
	p.waitJS("the refusal", `document.getElementById('status').dataset.state === 'offline' && document.getElementById('error').textContent.includes('token')`)
	time.Sleep(3 * time.Second) // longer than the first backoff steps
	if n := evalJS[int](p, `window.dials`); n != 0 {
		t.Fatalf("%d reconnects after the 4001 close, want none\n%s", n, p.state())
	}
	if err := p.problems(); err != nil {
		t.Error(err)
	}
}
