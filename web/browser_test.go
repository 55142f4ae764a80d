package web_test

// Browser tests (SPEC §6, STYLE.md "Browser tests"): the web client in a real
// headless Chromium (Debian's /usr/bin/chromium, driven by chromedp over a
// pipe), against the server in-process with a SQLite file, so that history
// survives the restart in the middle of the flow.
//
// Run with -update-screenshots to rewrite docs/screenshots/*.png.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store/sqlite"
	"github.com/roomchat/roomchat/web"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the screenshots of the browser test into docs/screenshots")

const chromiumPath = "/usr/bin/chromium"

// waitFor bounds every wait on a page; stepTimeout bounds every other action.
const (
	waitFor     = 15 * time.Second
	stepTimeout = 20 * time.Second
)

// TestBrowserChat walks the whole story of SPEC §6 in two separate browser
// contexts (own cookies, localStorage and sessionStorage each): create a room,
// share its link, choose names, chat both ways with typing and pending
// states, see both members, render an HTML-looking message as text, and
// survive a server restart with a message posted during the outage.
func TestBrowserChat(t *testing.T) {
	browser := newBrowser(t)
	dir := t.TempDir()
	srv := startServer(t, filepath.Join(dir, "roomchat.db"), "127.0.0.1:0")
	base := srv.url()

	// ---- landing page: create a room, see and copy its share link --------
	alice := newPage(t, browser, "alice")
	alice.do(chromedp.EmulateViewport(1280, 800))
	alice.do(
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("create-room")),
	)
	alice.do(chromedp.Click(chromedp.ID("create-room")))
	alice.waitJS("the share link is shown", `!document.getElementById('created').hidden && document.getElementById('share-link').value !== ''`)
	roomID := evalJS[string](alice, `document.getElementById('created').dataset.roomId`)
	shareLink := evalJS[string](alice, `document.getElementById('share-link').value`)
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{21}$`).MatchString(roomID) {
		t.Fatalf("created room ID %q is not a 21-character nanoid", roomID)
	}
	if want := base + "/r/" + roomID; shareLink != want {
		t.Fatalf("share link = %q, want %q", shareLink, want)
	}
	// Copy: either the clipboard took it, or the fallback selected the link
	// and says how to copy it. Either way the page says something.
	alice.do(chromedp.Click(chromedp.ID("copy-link")))
	alice.waitJS("the copy button reports", `document.getElementById('copy-status').textContent.trim() !== ''`)
	if got := evalJS[string](alice, `document.getElementById('copy-status').textContent`); !strings.Contains(got, "copied") && !strings.Contains(got, "selected") {
		t.Errorf("copy status = %q, want a copied or selected-fallback sentence", got)
	}
	if *updateScreenshots {
		// The landing page with a room just created and its link copied.
		alice.screenshot("landing.png")
	}

	// ---- alice opens the room and picks a name ----------------------------
	alice.do(chromedp.Click(chromedp.ID("open-room")))
	alice.waitJS("the room page opened", `location.pathname === '/r/' + `+jsString(roomID))
	alice.chooseName("Alice")
	alice.waitConnected()
	if got := evalJS[string](alice, `document.getElementById('share-link').value`); got != shareLink {
		t.Errorf("room page share link = %q, want %q (the landing page's)", got, shareLink)
	}

	// ---- bob, in another browser context, opens the share link on a phone --
	bob := newPage(t, browser, "bob")
	bob.do(chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch))
	bob.do(chromedp.Navigate(shareLink))
	if stored := evalJS[string](bob, `localStorage.getItem('roomchat.name') || ''`); stored != "" {
		t.Fatalf("bob's browser context shares alice's localStorage (name %q)", stored)
	}
	bob.chooseName("Bob")
	bob.waitConnected()
	if w := evalJS[int](bob, `document.documentElement.scrollWidth`); w > 375 {
		t.Errorf("bob's room page is %d px wide on a 375 px screen: it scrolls sideways", w)
	}

	// Member count 2 on both sides, with both names in the list.
	for _, p := range []*pageT{alice, bob} {
		p.waitJS("2 members", `document.getElementById('member-count').textContent === '2' &&
			[...document.querySelectorAll('#members li.member')].map(li => li.firstChild.textContent).sort().join(',') === 'Alice,Bob'`)
	}
	alice.waitJS("bob's join notice", `[...document.querySelectorAll('#messages .notice')].some(n => n.textContent === 'Bob joined the room.')`)
	if aliceID, bobID := evalJS[string](alice, `roomchat.userID`), evalJS[string](bob, `roomchat.userID`); aliceID == "" || aliceID == bobID {
		t.Fatalf("user IDs alice=%q bob=%q: want two different users", aliceID, bobID)
	}

	// ---- messages both ways, typing indicator, pending until ack ---------
	bob.do(chromedp.SendKeys(chromedp.ID("message-input"), "Hi Alice"))
	alice.waitJS("bob's typing indicator", `document.getElementById('typing').textContent === 'Bob is typing…'`)
	bob.watchPending()
	bob.do(chromedp.SendKeys(chromedp.ID("message-input"), kb.Enter))
	bob.waitMessage("Hi Alice", "Bob")
	bob.checkPendingSeen("Hi Alice")
	if got := evalJS[string](bob, `document.getElementById('message-input').value`); got != "" {
		t.Errorf("bob's input after Enter = %q, want it empty", got)
	}
	m := alice.waitMessage("Hi Alice", "Bob")
	if strings.Contains(m.Class, "mine") {
		t.Errorf("alice sees bob's message as her own (class %q)", m.Class)
	}
	alice.waitJS("the typing indicator clears with bob's message", `document.getElementById('typing').textContent === ''`)

	// Shift+Enter starts a new line; Enter sends both lines as one message.
	alice.do(
		chromedp.SendKeys(chromedp.ID("message-input"), "Hi Bob!"),
		chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(kb.ModifierShift)),
		chromedp.SendKeys(chromedp.ID("message-input"), "Two lines, one message."+kb.Enter),
	)
	m = bob.waitMessage("Hi Bob!\nTwo lines, one message.", "Alice")
	if m2 := alice.waitMessage("Hi Bob!\nTwo lines, one message.", "Alice"); !strings.Contains(m2.Class, "mine") {
		t.Errorf("alice's own message lacks the class mine (class %q)", m2.Class)
	}
	bob.do(chromedp.SendKeys(chromedp.ID("message-input"), "Looks good on my phone."+kb.Enter))
	alice.waitMessage("Looks good on my phone.", "Bob")

	// ---- user text is text ------------------------------------------------
	const evil = `<img src=x onerror=alert(1)>`
	alice.do(chromedp.SendKeys(chromedp.ID("message-input"), evil+kb.Enter))
	for _, p := range []*pageT{alice, bob} {
		p.waitMessage(evil, "Alice")
		if n := evalJS[int](p, `document.querySelectorAll('img').length`); n != 0 {
			t.Errorf("%s: %d img elements in the page after %q", p.name, n, evil)
		}
		html := evalJS[string](p, `[...document.querySelectorAll('#messages .message .text')].map(e => e.innerHTML).join('\n')`)
		if !strings.Contains(html, "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: message HTML does not hold the escaped text; got %q", p.name, html)
		}
	}

	if *updateScreenshots {
		alice.do(chromedp.Blur(chromedp.ID("message-input")))
		alice.screenshot("room-desktop.png")
		bob.do(chromedp.Blur(chromedp.ID("message-input")))
		bob.screenshot("room-phone.png")
	}

	// ---- server restart ---------------------------------------------------
	before := map[*pageT][]message{alice: alice.messages(), bob: bob.messages()}
	ids := map[*pageT]string{alice: evalJS[string](alice, `roomchat.userID`), bob: evalJS[string](bob, `roomchat.userID`)}
	addr := srv.addr
	srv.stop()
	for _, p := range []*pageT{alice, bob} {
		p.waitJS("the reconnecting state", `document.getElementById('status').dataset.state === 'reconnecting' &&
			/Reconnecting|Disconnected/.test(document.getElementById('status-text').textContent)`)
	}
	// A message typed while offline waits in the outbox, marked as such.
	alice.do(chromedp.SendKeys(chromedp.ID("message-input"), "Typed while the server was down."+kb.Enter))
	alice.waitJS("the queued message", `[...document.querySelectorAll('#messages .message.pending')].some(m =>
		m.querySelector('.text').textContent === 'Typed while the server was down.' && /Waiting/.test(m.querySelector('.state').textContent))`)

	srv = restartServer(t, srv, addr)
	// A script posts before the pages have reconnected: the new server is
	// not listening yet, so nobody is in the room to receive it live.
	const outage = "Posted by a script during the outage."
	srv.postBeforeListening(roomID, "script", outage)
	srv.listen()
	// And one right after the server listens again, racing the reconnects.
	const racing = "Posted by a script right after the restart."
	srv.post(roomID, "script", racing)

	for _, p := range []*pageT{alice, bob} {
		p.waitConnected()
		p.waitMessage(outage, "script")
		p.waitMessage(racing, "script")
		p.waitMessage("Typed while the server was down.", "Alice")
		p.waitJS("2 members after the restart", `document.getElementById('member-count').textContent === '2'`)
		// Resumed as before, with the token in the subprotocol
		// roomchat.resume.<token>, never in the URL that proxies log.
		if got := evalJS[string](p, `roomchat.userID`); got != ids[p] {
			t.Errorf("%s: userID %q after the restart, want %q (resumed)", p.name, got, ids[p])
		}
		if got := evalJS[string](p, `roomchat.conn.ws.protocol + ' ' + roomchat.conn.ws.url`); got != "roomchat ws://"+addr+"/ws?batch=1" {
			t.Errorf("%s: subprotocol and URL %q, want the subprotocol roomchat and no token in the URL", p.name, got)
		}
	}
	// Give late duplicates a moment to show up: one more round trip each
	// way, so everything the server sent before has been rendered.
	bob.do(chromedp.SendKeys(chromedp.ID("message-input"), "Back again."+kb.Enter))
	alice.waitMessage("Back again.", "Bob")
	alice.do(chromedp.SendKeys(chromedp.ID("message-input"), "Welcome back."+kb.Enter))
	bob.waitMessage("Welcome back.", "Alice")

	for _, p := range []*pageT{alice, bob} {
		msgs := p.messages()
		checkOnceInOrder(t, p.name, msgs)
		var texts []string
		for _, m := range msgs {
			texts = append(texts, m.Text)
		}
		for _, m := range before[p] {
			if countText(msgs, m.Text) != 1 {
				t.Errorf("%s: %q (seen before the restart) shows %d times after it; messages: %q", p.name, m.Text, countText(msgs, m.Text), texts)
			}
		}
		for _, want := range []string{outage, racing, "Typed while the server was down.", "Back again.", "Welcome back."} {
			if n := countText(msgs, want); n != 1 {
				t.Errorf("%s: %q shows %d times, want once; messages: %q", p.name, want, n, texts)
			}
		}
		// The sender's ack may still be on its way when the other page
		// shows the message: wait for it to settle, then require none
		// pending or failed.
		p.waitJS("no message pending", `document.querySelectorAll('#messages .message.pending').length === 0`)
		if n := evalJS[int](p, `document.querySelectorAll('#messages .message.pending, #messages .message.failed').length`); n != 0 {
			t.Errorf("%s: %d messages still pending or failed", p.name, n)
		}
		notices := evalJS[[]string](p, `[...document.querySelectorAll('#messages .notice')].map(n => n.textContent)`)
		for _, n := range notices {
			if strings.Contains(n, "reset") || strings.Contains(n, "no longer available") {
				t.Errorf("%s: notice %q after a restart on the same database", p.name, n)
			}
		}
		if err := p.problems(); err != nil {
			t.Error(err)
		}
	}
}

// TestBrowserLanding checks the rest of the landing page: the copy button's
// fallback without a clipboard, and the join form (a bad ID is refused with
// a sentence, a pasted share link opens its room, Skip gives a guest name).
func TestBrowserLanding(t *testing.T) {
	browser := newBrowser(t)
	srv := startServer(t, filepath.Join(t.TempDir(), "roomchat.db"), "127.0.0.1:0")
	base := srv.url()
	p := newPage(t, browser, "visitor")
	p.do(
		chromedp.Navigate(base+"/"),
		chromedp.SendKeys(chromedp.ID("join-id"), "no spaces allowed"+kb.Enter),
	)
	p.waitJS("the join error", `document.getElementById('join-error').textContent !== '' &&
		document.getElementById('join-id').getAttribute('aria-invalid') === 'true'`)
	// Create a room where the clipboard is not available (as on plain
	// http): creating it tries to copy the link and falls back as the copy
	// button does, selecting the link and saying how to copy it.
	evalJS[bool](p, `(Object.defineProperty(navigator, 'clipboard', {value: undefined, configurable: true}), true)`)
	const fallback = `(() => {
		const i = document.getElementById('share-link');
		return i.value !== '' && /selected, press (Ctrl|⌘)\+C/.test(document.getElementById('copy-status').textContent) &&
			document.activeElement === i && i.selectionStart === 0 && i.selectionEnd === i.value.length;
	})()`
	p.do(chromedp.Click(chromedp.ID("create-room")))
	p.waitJS("the copy fallback after create: the link selected, and a sentence", fallback)
	// The copy button falls back the same way.
	evalJS[bool](p, `(document.getElementById('copy-status').textContent = '', document.getElementById('join-id').focus(), true)`)
	p.do(chromedp.Click(chromedp.ID("copy-link")))
	p.waitJS("the copy button's fallback: the link selected, and a sentence", fallback)

	p.do(
		chromedp.Clear(chromedp.ID("join-id")),
		chromedp.SendKeys(chromedp.ID("join-id"), base+"/r/lobby-42"),
		chromedp.Click(chromedp.ID("join-submit")),
	)
	p.waitJS("the room page", `location.pathname === '/r/lobby-42'`)
	p.do(chromedp.WaitVisible(chromedp.ID("name-skip")), chromedp.Click(chromedp.ID("name-skip")))
	p.waitConnected()
	if got := evalJS[string](p, `document.getElementById('my-name').textContent`); !strings.HasPrefix(got, "guest-") {
		t.Errorf("name after Skip = %q, want the server's guest-… name", got)
	}
	if got := evalJS[string](p, `document.getElementById('room-id').textContent`); got != "lobby-42" {
		t.Errorf("#room-id = %q, want lobby-42", got)
	}
	if err := p.problems(); err != nil {
		t.Error(err)
	}
}

// TestBrowserCreateCopies clicks "Create room" on the landing page with the
// clipboard allowed, and reads the clipboard back: it holds the share link
// the page shows (SPEC §6: create shows and copies the link).
func TestBrowserCreateCopies(t *testing.T) {
	browser := newBrowser(t)
	srv := startServer(t, filepath.Join(t.TempDir(), "roomchat.db"), "127.0.0.1:0")
	base := srv.url()
	p := newPage(t, browser, "creator")
	p.do(chromedp.Navigate(base + "/"))
	p.grantClipboard(base)
	if got := clipboardText(p); got != "" {
		t.Fatalf("clipboard before create = %q, want it empty", got)
	}
	p.do(chromedp.Click(chromedp.ID("create-room")))
	p.waitJS("the link copied", `!document.getElementById('created').hidden &&
		document.getElementById('copy-status').textContent === 'Link copied.'`)
	link := evalJS[string](p, `document.getElementById('share-link').value`)
	roomID := evalJS[string](p, `document.getElementById('created').dataset.roomId`)
	if want := base + "/r/" + roomID; link != want {
		t.Errorf("share link = %q, want %q", link, want)
	}
	if got := clipboardText(p); got != link {
		t.Errorf("clipboard after create = %q, want the shown share link %q", got, link)
	}
	if err := p.problems(); err != nil {
		t.Error(err)
	}
}

// TestBrowserBackoff checks the reconnect backoff of common.js in the
// browser: the wait doubles from 0.5 s up to 10 s, and each wait is random
// between half of that and all of it ("equal jitter"), so that clients
// dropped together by a restart do not all come back in the same instant.
func TestBrowserBackoff(t *testing.T) {
	browser := newBrowser(t)
	srv := startServer(t, filepath.Join(t.TempDir(), "roomchat.db"), "127.0.0.1:0")
	p := newPage(t, browser, "visitor")
	p.do(chromedp.Navigate(srv.url() + "/"))
	type bounds struct{ Low, High, Spread int }
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]bounds](`import('/static/common.js').then(({ backoffDelay }) => {
		const out = [];
		for (let n = 0; n < 8; n++) {
			const seen = new Set();
			for (let i = 0; i < 50; i++) seen.add(backoffDelay(n));
			out.push({Low: backoffDelay(n, 500, 10000, () => 0), High: backoffDelay(n, 500, 10000, () => 1), Spread: seen.size});
		}
		return out;
	})`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	for n, b := range got {
		exp := min(10000, 500<<n)
		if b.Low != exp/2 || b.High != exp {
			t.Errorf("attempt %d: wait from %d to %d ms, want %d to %d", n, b.Low, b.High, exp/2, exp)
		}
		if b.Spread < 10 {
			t.Errorf("attempt %d: 50 waits took only %d values: no jitter", n, b.Spread)
		}
	}
}

// grantClipboard lets pages of origin in p's browser context read and write
// the clipboard without asking, and makes the page count as focused (a
// headless tab is not, and the Clipboard API refuses unfocused documents).
func (p *pageT) grantClipboard(origin string) {
	p.t.Helper()
	p.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		c := chromedp.FromContext(ctx)
		for _, name := range []string{"clipboard-read", "clipboard-write"} {
			if _, err := cdp.Call(ctx, c.Browser, browser.SetPermission, browser.SetPermissionParams{
				Permission:       &browser.PermissionDescriptor{Name: name},
				Setting:          browser.PermissionSettingGranted,
				Origin:           origin,
				BrowserContextID: c.BrowserContextID,
			}); err != nil {
				return fmt.Errorf("grant %s: %w", name, err)
			}
		}
		_, err := cdp.Call(ctx, tg, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true})
		return err
	}))
}

// clipboardText reads the clipboard through the page.
func clipboardText(p *pageT) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("%s: read the clipboard: %v", p.name, err)
	}
	return s
}

// ---- server -----------------------------------------------------------------

// testServer is roomchat's server in-process on a loopback port with a
// SQLite file, stopped and started like roomchatd is on SIGTERM.
type testServer struct {
	t      *testing.T
	dbPath string
	addr   string
	limits protocol.Limits // zero: the defaults
	mods   []func(*server.Config)
	st     *sqlite.Store
	srv    *chattest.InProcess
	once   sync.Once
}

// startServer starts a server on addr ("127.0.0.1:0" picks a port).
func startServer(t *testing.T, dbPath, addr string) *testServer {
	t.Helper()
	s := newServer(t, dbPath, addr, protocol.Limits{})
	s.listen()
	return s
}

// restartServer builds a new server on the old one's database, address and
// limits; it does not listen until listen is called.
func restartServer(t *testing.T, old *testServer, addr string) *testServer {
	t.Helper()
	return newServer(t, old.dbPath, addr, old.limits, old.mods...)
}

// newServer builds a server that does not listen yet; zero limits are the
// defaults, and mods may change the rest of its Config.
func newServer(t *testing.T, dbPath, addr string, limits protocol.Limits, mods ...func(*server.Config)) *testServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	st, err := sqlite.Open(ctx, dbPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, dbPath: dbPath, addr: addr, limits: limits, mods: mods, st: st}
	// Registered before the server's own cleanup, so it runs after it.
	t.Cleanup(s.stop)
	s.srv = chattest.NewInProcess(t, append([]func(*server.Config){func(c *server.Config) {
		c.Store, c.Web, c.Limits = st, web.FS, limits
	}}, mods...)...)
	return s
}

// listen starts serving on s.addr; a fixed port may still be held for a
// moment by the previous server's listener, so it retries briefly.
func (s *testServer) listen() {
	s.t.Helper()
	var ln net.Listener
	var err error
	if !chattest.Poll(5*time.Second, func() bool {
		ln, err = net.Listen("tcp", s.addr)
		return err == nil
	}) {
		s.t.Fatalf("listen on %s: %v", s.addr, err)
	}
	s.addr = ln.Addr().String()
	log := slog.New(slog.NewTextHandler(s.t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	s.srv.Serve(func(hs *httptest.Server) {
		hs.Listener.Close()
		hs.Listener = ln
		hs.Config.ReadHeaderTimeout = 10 * time.Second
		hs.Config.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	})
}

func (s *testServer) url() string { return "http://" + s.addr }

// stop shuts the server down the way roomchatd does: stop accepting, close
// every WebSocket with 1001, then close the store.
func (s *testServer) stop() {
	s.once.Do(func() {
		if s.srv != nil {
			s.srv.Close()
		}
		if err := s.st.Close(); err != nil {
			s.t.Errorf("close store: %v", err)
		}
	})
}

// postBeforeListening sends a bot message through the HTTP API without the
// network: the server is up, but no browser can reach it yet.
func (s *testServer) postBeforeListening(roomID, name, message string) {
	s.t.Helper()
	body := fmt.Sprintf(`{"name":%s,"message":%s}`, jsString(name), jsString(message))
	req := httptest.NewRequest(http.MethodPost, "/api/rooms/"+roomID+"/messages", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	s.srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		s.t.Fatalf("POST %s: %d %s", req.URL, rec.Code, rec.Body)
	}
}

// post sends a bot message through the HTTP API over the network.
func (s *testServer) post(roomID, name, message string) {
	s.t.Helper()
	if err := s.postErr(roomID, name, message); err != nil {
		s.t.Fatal(err)
	}
}

// postErr is post for other goroutines than the test's: it returns the
// error instead of failing the test.
func (s *testServer) postErr(roomID, name, message string) error {
	body := fmt.Sprintf(`{"name":%s,"message":%s}`, jsString(name), jsString(message))
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url()+"/api/rooms/"+roomID+"/messages", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		return fmt.Errorf("POST %s: %s", req.URL, res.Status)
	}
	return nil
}

// ---- browser ------------------------------------------------------------------

// newBrowser starts Chromium with the flags that work on these machines and
// a fresh profile. Without /usr/bin/chromium the test is skipped, except in
// CI (CI=true), where make test installs it and its absence is a bug.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no browser: %v (make test installs chromium with scripts/deps.sh)", err)
		}
		t.Skipf("no browser: %v (run scripts/deps.sh)", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser, which lives as long as the context
	// of that call: so no timeout on it, but a bounded wait.
	if err := runBounded(ctx, 30*time.Second, func(ctx context.Context) error { return chromedp.Do(ctx) }); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

// runBounded runs f(ctx) and waits at most d for it. f gets ctx itself, not a
// context with a deadline, for chromedp's first Run on a context.
func runBounded(ctx context.Context, d time.Duration, f func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("no answer in %v", d)
	}
}

// pageT is one tab in a browser context of its own (an incognito-like
// profile: storage is not shared with other pages).
type pageT struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu         sync.Mutex
	dialogs    []string
	exceptions []string
	logs       []string
	frames     []wsEvent // every event of every WebSocket of the page, in order
}

// wsEvent is one event the page sent or received over a WebSocket (a
// batched frame holds several).
type wsEvent struct {
	Sent    bool // sent by the page, not received
	Type    string
	ID      string
	Payload json.RawMessage
}

func newPage(t *testing.T, browser context.Context, name string) *pageT {
	t.Helper()
	p := &pageT{t: t, name: name}
	var ctx context.Context
	var cancel context.CancelFunc
	ctx, cancel = chromedp.NewContext(browser, chromedp.WithNewBrowserContext(), chromedp.WithListener(func(ev any) {
		switch ev := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			p.mu.Lock()
			p.dialogs = append(p.dialogs, fmt.Sprintf("%s %q", ev.Type, ev.Message))
			p.mu.Unlock()
			// A dialog stalls the page; dismiss it (not from this goroutine,
			// which must not run commands) so that the test can go on and
			// report it.
			go chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
				_, err := cdp.Call(ctx, t, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
				return err
			}))
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			text := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				text = d.Exception.Description
			}
			p.mu.Lock()
			p.exceptions = append(p.exceptions, fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber, text))
			p.mu.Unlock()
		case *network.EventWebSocketFrameSent:
			p.recordFrame(true, ev.Response)
		case *network.EventWebSocketFrameReceived:
			p.recordFrame(false, ev.Response)
		case *cdplog.EventEntryAdded:
			e := ev.Entry
			p.mu.Lock()
			p.logs = append(p.logs, fmt.Sprintf("%s %s: %s", e.Level, e.Source, e.Text))
			p.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeWarning {
				return
			}
			var parts []string
			for _, a := range ev.Args {
				if a.Description != "" {
					parts = append(parts, a.Description)
				} else {
					parts = append(parts, string(a.Value))
				}
			}
			p.mu.Lock()
			p.logs = append(p.logs, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(parts, " ")))
			p.mu.Unlock()
		}
	}))
	p.ctx = ctx
	t.Cleanup(func() {
		cancel()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.logs {
			t.Logf("%s: browser log: %s", name, l)
		}
	})
	// The first Run opens the tab, which lives as long as the context of
	// that call: so no timeout on it, but a bounded wait.
	if err := runBounded(ctx, 30*time.Second, func(ctx context.Context) error { return chromedp.Do(ctx) }); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	return p
}

// recordFrame splits a text frame into its events (one JSON object a line,
// as with batch=1) and appends them to p.frames.
func (p *pageT) recordFrame(sent bool, f *network.WebSocketFrame) {
	if f == nil || f.Opcode != 1 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for line := range strings.SplitSeq(string(f.PayloadData), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e struct {
			Type    string          `json:"type"`
			ID      string          `json:"id"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			p.frames = append(p.frames, wsEvent{Sent: sent, Type: "(unparsable)", Payload: json.RawMessage(strconv.Quote(line))})
			continue
		}
		p.frames = append(p.frames, wsEvent{Sent: sent, Type: e.Type, ID: e.ID, Payload: e.Payload})
	}
}

// framesSince returns the WebSocket events recorded after the first n.
func (p *pageT) framesSince(n int) []wsEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]wsEvent(nil), p.frames[min(n, len(p.frames)):]...)
}

// frameCount is how many WebSocket events were recorded so far.
func (p *pageT) frameCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.frames)
}

// do runs actions on the page, bounded by stepTimeout.
func (p *pageT) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v\n%s", p.name, err, p.state())
	}
}

// evalJS evaluates expr on p and decodes its value.
func evalJS[T any](p *pageT, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: evaluate %s: %v", p.name, expr, err)
	}
	return v
}

// waitJS waits until the JavaScript condition cond holds on p, at most
// waitFor; what names the condition in the failure. It evaluates cond every
// 50 ms from Go rather than with chromedp.Poll, so that a wait may span a
// navigation (a poll dies with the page's JavaScript context).
func (p *pageT) waitJS(what, cond string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitFor)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!(`+cond+`)`))
		if err == nil && ok {
			return
		}
		if err != nil && ctx.Err() == nil {
			lastErr = err // for example a navigation between two evaluations
		}
		select {
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			p.t.Fatalf("%s: waiting %v for %s: %v\n%s", p.name, waitFor, what, lastErr, p.state())
		case <-tick.C:
		}
	}
}

// state describes the page for a failure message.
func (p *pageT) state() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const t = (id) => document.getElementById(id)?.textContent ?? '(none)';
		const lines = [
			'url: ' + location.href,
			'status: ' + (document.getElementById('status')?.dataset.state ?? '-') + ' ' + t('status-text'),
			'error: ' + t('error') + ' ' + t('create-status'),
			'members: ' + t('member-count') + ' ' + t('members'),
			'typing: ' + t('typing'),
		];
		for (const m of document.querySelectorAll('#messages > *, #messages .outbox > *')) {
			lines.push('  ' + m.className + ' seq=' + (m.dataset.seq ?? '') + ' ' + JSON.stringify(m.textContent));
		}
		return lines.join('\n');
	})()`))
	if err != nil {
		s = "(page state unavailable: " + err.Error() + ")"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.exceptions {
		s += "\nexception: " + l
	}
	for _, l := range p.logs {
		s += "\nlog: " + l
	}
	return s
}

// chooseName answers the first-visit name dialog.
func (p *pageT) chooseName(name string) {
	p.t.Helper()
	p.do(
		chromedp.WaitVisible(chromedp.ID("name-input")),
		chromedp.SendKeys(chromedp.ID("name-input"), name),
		chromedp.Click(chromedp.ID("name-save")),
		chromedp.WaitNotVisible(chromedp.ID("name-dialog")),
	)
	p.waitJS("my name", `document.getElementById('my-name').textContent === `+jsString(name))
	if got := evalJS[string](p, `localStorage.getItem('roomchat.name')`); got != name {
		p.t.Errorf("%s: stored name = %q, want %q", p.name, got, name)
	}
}

// waitConnected waits until the page has joined its room.
func (p *pageT) waitConnected() {
	p.t.Helper()
	p.waitJS("the connected state", `document.getElementById('status').dataset.state === 'connected' &&
		document.getElementById('status-text').textContent === 'Connected' && roomchat.joined`)
}

// message is one rendered message of #messages.
type message struct {
	Seq      string `json:"seq"`
	ID       string `json:"id"`
	From     string `json:"from"`
	Time     string `json:"time"`
	DateTime string `json:"datetime"`
	Title    string `json:"title"`
	Text     string `json:"text"`
	Class    string `json:"class"`
}

const messagesJS = `[...document.querySelectorAll('#messages .message')].map(m => ({
	seq: m.dataset.seq ?? '', id: m.dataset.id ?? '', class: m.className,
	from: m.querySelector('.from')?.textContent ?? '',
	time: m.querySelector('.time')?.textContent ?? '',
	datetime: m.querySelector('.time')?.getAttribute('datetime') ?? '',
	title: m.querySelector('.time')?.title ?? '',
	text: m.querySelector('.text')?.textContent ?? '',
}))`

func (p *pageT) messages() []message {
	p.t.Helper()
	return evalJS[[]message](p, messagesJS)
}

var hhmm = regexp.MustCompile(`^\d\d:\d\d$`)

// waitMessage waits for a confirmed message (with a seq) with this text and
// checks its sender and time.
func (p *pageT) waitMessage(text, from string) message {
	p.t.Helper()
	p.waitJS(fmt.Sprintf("the message %q", text), `[...document.querySelectorAll('#messages .message[data-seq]')].some(m =>
		m.querySelector('.text')?.textContent === `+jsString(text)+`)`)
	for _, m := range p.messages() {
		if m.Text != text || m.Seq == "" {
			continue
		}
		if m.From != from {
			p.t.Errorf("%s: %q is from %q, want %q", p.name, text, m.From, from)
		}
		if !hhmm.MatchString(m.Time) || m.Title == "" {
			p.t.Errorf("%s: %q shows the time %q (title %q), want HH:MM with the full date in the title", p.name, text, m.Time, m.Title)
		}
		if _, err := time.Parse(time.RFC3339, m.DateTime); err != nil {
			p.t.Errorf("%s: %q has datetime %q: %v", p.name, text, m.DateTime, err)
		}
		return m
	}
	p.t.Fatalf("%s: message %q vanished", p.name, text)
	return message{}
}

// watchPending records, from now on, every message element that is added
// in the pending state, with its state label.
func (p *pageT) watchPending() {
	p.t.Helper()
	evalJS[bool](p, `(() => {
		window.__pendingSeen = [];
		new MutationObserver((records) => {
			for (const r of records) for (const n of r.addedNodes) {
				if (n.nodeType === 1 && n.classList.contains('pending')) {
					window.__pendingSeen.push({text: n.querySelector('.text')?.textContent ?? '', state: n.querySelector('.state')?.textContent ?? ''});
				}
			}
		}).observe(document.getElementById('messages'), {childList: true, subtree: true});
		return true;
	})()`)
}

// checkPendingSeen checks that text was shown as pending ("Sending…")
// before its ack confirmed it, and that no pending copy is left.
func (p *pageT) checkPendingSeen(text string) {
	p.t.Helper()
	type seen struct {
		Text  string `json:"text"`
		State string `json:"state"`
	}
	got := evalJS[[]seen](p, `window.__pendingSeen`)
	found := false
	for _, s := range got {
		if s.Text == text {
			found = true
		}
	}
	if !found {
		p.t.Errorf("%s: %q never showed as pending; pending elements seen: %+v", p.name, text, got)
	}
	p.waitJS("no pending message left", `document.querySelectorAll('#messages .message.pending').length === 0`)
}

// screenshot writes a PNG of the viewport into docs/screenshots.
func (p *pageT) screenshot(name string) {
	p.t.Helper()
	// Let fonts and layout settle: two animation frames after load.
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`, chromedp.EvalAwaitPromise)); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	dir := filepath.Join("..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("wrote docs/screenshots/%s", name)
}

// problems reports dialogs, uncaught exceptions and Content-Security-Policy
// violations seen on the page.
func (p *pageT) problems() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, d := range p.dialogs {
		errs = append(errs, fmt.Errorf("%s: a JavaScript dialog opened: %s", p.name, d))
	}
	for _, e := range p.exceptions {
		errs = append(errs, fmt.Errorf("%s: uncaught exception: %s", p.name, e))
	}
	for _, l := range p.logs {
		if strings.Contains(l, "Content Security Policy") {
			errs = append(errs, fmt.Errorf("%s: CSP violation: %s", p.name, l))
		}
	}
	return errors.Join(errs...)
}

// checkOnceInOrder checks that every confirmed message shows once and in
// seq order.
func checkOnceInOrder(t *testing.T, name string, msgs []message) {
	t.Helper()
	seen := map[string]bool{}
	last := 0
	for _, m := range msgs {
		if m.Seq == "" {
			continue
		}
		if seen[m.Seq] {
			t.Errorf("%s: seq %s shows twice", name, m.Seq)
		}
		seen[m.Seq] = true
		var n int
		fmt.Sscan(m.Seq, &n)
		if n <= last {
			t.Errorf("%s: seq %d after %d: out of order", name, n, last)
		}
		last = n
	}
}

func countText(msgs []message, text string) int {
	n := 0
	for _, m := range msgs {
		if m.Text == text {
			n++
		}
	}
	return n
}

// jsString quotes s as a JavaScript (and JSON) string literal.
func jsString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x2028 || r == 0x2029:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
