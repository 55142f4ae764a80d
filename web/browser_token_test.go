package web_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
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

// TestBrowserTokenTwoTabs: two tabs of one signed identity do not take
// the connection from each other for ever (SPEC §10: one connection per
// identity). When the second opens, the first says the room is open in
// another tab or window, with a "Use here" button, and stays
// disconnected: it dials nothing, the server sees no new connection and
// the second keeps its own. Use here takes the connection back, and the
// second tab shows the notice in turn.
func TestBrowserTokenTwoTabs(t *testing.T) {
	browser := newBrowser(t)
	srv := tokenServer(t, 30*time.Second)
	url := srv.url() + "/r/staff:ops?token=" + staffToken(t, "ada", time.Now().Add(time.Hour))
	const notice = `!document.getElementById('replaced-bar').hidden && document.getElementById('composer').hidden &&
		document.getElementById('replaced-note').textContent === 'This room is open in another tab or window.' &&
		document.getElementById('status').dataset.state === 'offline' &&
		document.getElementById('status-text').textContent.includes('another tab or window') && !roomchat.joined`

	first := newPage(t, browser, "first tab")
	first.do(chromedp.Navigate(url))
	first.chooseName("Ada")
	first.waitConnected()
	// Count every dial of the first tab from now on.
	evalJS[bool](first, `(window.dials = 0, window.WebSocket = class extends WebSocket { constructor(...a) { super(...a); window.dials++; } }, true)`)

	second := newPage(t, browser, "second tab")
	second.do(chromedp.Navigate(url))
	second.chooseName("Ada")
	second.waitConnected()
	evalJS[bool](second, `(window.held = roomchat.conn.ws, true)`)
	first.waitJS("the notice that the room is open elsewhere", notice)
	if !evalJS[bool](first, `!document.getElementById('use-here').hidden && document.getElementById('use-here').textContent === 'Use here'`) {
		t.Errorf("first tab: no visible Use here button\n%s", first.state())
	}

	// Stays disconnected: longer than several backoff steps.
	total := srv.metric("roomchat_connections_total")
	time.Sleep(5 * time.Second)
	if n := evalJS[int](first, `window.dials`); n != 0 {
		t.Fatalf("first tab dialled %d times after it was taken over, want 0\n%s", n, first.state())
	}
	if got := srv.metric("roomchat_connections_total"); got != total {
		t.Fatalf("the server accepted %v connections in 5 s after the takeover, want none", got-total)
	}
	if got := srv.metric("roomchat_connections"); got != 1 {
		t.Fatalf("%v open connections, want 1 (the second tab's)", got)
	}
	if !evalJS[bool](second, `roomchat.conn.ws === window.held && roomchat.joined`) {
		t.Fatalf("the second tab lost its connection\n%s", second.state())
	}
	first.waitJS("the notice still shown", notice)
	checkAxe(t, first, "a room open in another tab")

	// Use here: the first tab takes the connection back, once.
	first.do(chromedp.Click(chromedp.ID("use-here")))
	first.waitConnected()
	if id := evalJS[string](first, `roomchat.userID`); id != "ada" {
		t.Errorf("first tab's userID %q after Use here, want ada", id)
	}
	if n := evalJS[int](first, `window.dials`); n != 1 {
		t.Errorf("first tab dialled %d times for Use here, want 1", n)
	}
	if evalJS[bool](first, `document.getElementById('composer').hidden || !document.getElementById('replaced-bar').hidden`) {
		t.Errorf("first tab: the composer is not back after Use here\n%s", first.state())
	}
	second.waitJS("the notice in the second tab", notice)
	for _, p := range []*pageT{first, second} {
		if err := p.problems(); err != nil {
			t.Error(err)
		}
	}
}

// metric reads the server's Prometheus series name (one without labels).
func (s *testServer) metric(name string) float64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url()+"/metrics", nil)
	if err != nil {
		s.t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		s.t.Fatalf("GET /metrics: %s, %v", res.Status, err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				s.t.Fatalf("/metrics: %q: %v", line, err)
			}
			return f
		}
	}
	s.t.Fatalf("/metrics has no series %s", name)
	return 0
}
