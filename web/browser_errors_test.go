package web_test

// Browser tests of the web client's errors and unread count (SPEC §6):
// errors reach the person as sentences, and the tab title counts unread
// messages while the tab is hidden.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
)

// TestBrowserErrorsAndUnread runs against a server with a rate limit of one
// frame a second (burst 2) and rooms of two:
//   - a burst of four messages from the page: two go through, two are
//     refused as rate_limited, marked failed with Retry and Delete, and #error
//     holds a sentence (not the code); Retry later sends one, Delete drops one;
//   - a third person opening the full room (alice in the browser, a bot over
//     the Go client) is told in a sentence that it is full, and gets in by
//     the page's own retry once the bot leaves;
//   - while alice's tab is hidden, two messages from the bot put "(2) " in
//     front of her title; showing the tab again removes it.
func TestBrowserErrorsAndUnread(t *testing.T) {
	browser := newBrowser(t)
	limits := protocol.DefaultLimits()
	limits.Rate, limits.Burst, limits.RoomCapacity = 1, 2, 2
	srv := startLimitedServer(t, filepath.Join(t.TempDir(), "roomchat.db"), limits)
	base := srv.url()
	const roomID = "errors-and-unread"
	baseTitle := "roomchat · " + roomID

	// A first message from a script gives the room its history epoch, so the
	// page's join learns it and sends no second join (one more frame against
	// the limit) when the first live message arrives.
	srv.post(roomID, "script", "Welcome.")

	// ---- rate_limited: a burst from the page ------------------------------
	alice := newPage(t, browser, "alice")
	alice.do(chromedp.Navigate(base + "/r/" + roomID))
	alice.chooseName("Alice")
	alice.waitConnected()
	alice.waitMessage("Welcome.", "script")
	// Let the bucket fill up again after the join: 2 tokens.
	time.Sleep(2100 * time.Millisecond)
	// Four sends in one task through the page's own path (the composer's
	// submit), without input events, so no typing frames count too.
	evalJS[bool](alice, `(() => {
		const input = document.getElementById('message-input');
		const form = document.getElementById('composer');
		for (let i = 1; i <= 4; i++) {
			input.value = 'burst ' + i;
			form.requestSubmit();
		}
		return true;
	})()`)
	alice.waitMessage("burst 1", "Alice")
	alice.waitMessage("burst 2", "Alice")
	const tooFast = "You are sending messages too fast. Wait a moment, then try again."
	alice.waitJS("two failed messages", `document.querySelectorAll('#messages .message.failed').length === 2`)
	type failed struct {
		Text, Class, State string
		Retry, Discard     bool
	}
	got := evalJS[[]failed](alice, `[...document.querySelectorAll('#messages .message.failed')].map(m => ({
		Text: m.querySelector('.text').textContent, Class: m.className,
		State: m.querySelector('.state')?.textContent ?? '',
		Retry: !!m.querySelector('button.retry'), Discard: !!m.querySelector('button.discard'),
	}))`)
	for i, f := range got {
		if want := fmt.Sprintf("burst %d", i+3); f.Text != want {
			t.Errorf("failed message %d is %q, want %q", i, f.Text, want)
		}
		if strings.Contains(f.Class, "pending") {
			t.Errorf("failed message %q is still pending (class %q)", f.Text, f.Class)
		}
		if f.State != "Not sent. "+tooFast {
			t.Errorf("failed message %q says %q, want %q", f.Text, f.State, "Not sent. "+tooFast)
		}
		if !f.Retry || !f.Discard {
			t.Errorf("failed message %q: retry button %v, delete button %v; want both", f.Text, f.Retry, f.Discard)
		}
	}
	checkSentence(t, alice, tooFast, "rate_limited")

	// Delete drops one; Retry, once the bucket has a token again, sends the
	// other. Dismiss hides the error bar.
	evalJS[bool](alice, `(() => {
		const m = [...document.querySelectorAll('#messages .message.failed')].find(m => m.querySelector('.text').textContent === 'burst 4');
		m.querySelector('button.discard').click();
		return true;
	})()`)
	alice.do(chromedp.Click(chromedp.ID("error-dismiss")))
	alice.waitJS("the error bar hidden", `document.getElementById('error-bar').hidden && document.getElementById('error').textContent === ''`)
	time.Sleep(1500 * time.Millisecond)
	evalJS[bool](alice, `(() => {
		const m = [...document.querySelectorAll('#messages .message.failed')].find(m => m.querySelector('.text').textContent === 'burst 3');
		m.querySelector('button.retry').click();
		return true;
	})()`)
	alice.waitMessage("burst 3", "Alice")
	alice.waitJS("no pending or failed message left", `document.querySelectorAll('#messages .message.pending, #messages .message.failed').length === 0`)
	if n := countText(alice.messages(), "burst 4"); n != 0 {
		t.Errorf("the deleted message shows %d times", n)
	}

	// ---- room_full: a bot takes the second seat, carol finds no room -----
	bot := dialBot(t, srv.url(), roomID, "Bot")
	alice.waitJS("2 members", `document.getElementById('member-count').textContent === '2'`)

	carol := newPage(t, browser, "carol")
	carol.do(chromedp.Navigate(base + "/r/" + roomID))
	carol.chooseName("Carol")
	carol.waitJS("the room full state", `document.getElementById('status').dataset.state === 'reconnecting' &&
		/full/.test(document.getElementById('status-text').textContent) && !roomchat.joined`)
	checkSentence(t, carol, "This room is full. Trying again in 10 seconds.", "room_full")
	roomFullAt := time.Now()

	// ---- unread count in the title while alice's tab is hidden -----------
	if got := evalJS[string](alice, `document.title`); got != baseTitle {
		t.Errorf("alice's title = %q, want %q", got, baseTitle)
	}
	setVisibility(alice, false)
	bot.say("Are you there?")
	bot.say("Hello?")
	alice.waitMessage("Hello?", "Bot")
	alice.waitJS("the unread count (2) in the title", `document.title === `+jsString("(2) "+baseTitle))
	setVisibility(alice, true)
	alice.waitJS("the title without a count", `document.title === `+jsString(baseTitle))

	// ---- the bot leaves; carol's retry gets her in ------------------------
	bot.leave()
	bot.close()
	carol.waitConnected()
	t.Logf("carol joined %v after the room_full answer", time.Since(roomFullAt).Round(100*time.Millisecond))
	carol.waitMessage("Hello?", "Bot")
	alice.waitJS("carol's join notice", `[...document.querySelectorAll('#messages .notice')].some(n => n.textContent === 'Carol joined the room.')`)
	for _, p := range []*pageT{alice, carol} {
		p.waitJS("2 members", `document.getElementById('member-count').textContent === '2'`)
		if err := p.problems(); err != nil {
			t.Error(err)
		}
	}
}

// checkSentence checks that #error shows want in a visible error bar, and
// that neither the error code nor the server's raw message shows instead.
func checkSentence(t *testing.T, p *pageT, want, code string) {
	t.Helper()
	p.waitJS("the error sentence "+jsString(want), `!document.getElementById('error-bar').hidden &&
		document.getElementById('error').textContent === `+jsString(want))
	got := evalJS[string](p, `document.getElementById('error').textContent`)
	if strings.Contains(got, code) || strings.Contains(got, "_") {
		t.Errorf("%s: #error = %q shows an error code", p.name, got)
	}
}

// setVisibility makes the page believe its tab is hidden or visible and
// tells it, as the browser would.
func setVisibility(p *pageT, visible bool) {
	p.t.Helper()
	state := "hidden"
	if visible {
		state = "visible"
	}
	evalJS[bool](p, fmt.Sprintf(`(() => {
		Object.defineProperty(document, 'visibilityState', {get: () => %q, configurable: true});
		Object.defineProperty(document, 'hidden', {get: () => %t, configurable: true});
		document.dispatchEvent(new Event('visibilitychange'));
		return document.visibilityState === %q;
	})()`, state, !visible, state))
}

// startLimitedServer is startServer with limits of its own, on a free port.
func startLimitedServer(t *testing.T, dbPath string, limits protocol.Limits) *testServer {
	t.Helper()
	s := newServer(t, dbPath, "127.0.0.1:0", limits)
	s.listen()
	return s
}

// bot is a room member over the project's Go client (no batching).
type bot struct {
	t      *testing.T
	c      *client.Conn
	roomID string
}

// dialBot connects and joins roomID as name. The connection is closed at
// the end of the test if close was not called.
func dialBot(t *testing.T, baseURL, roomID, name string) *bot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	c, err := client.Dial(ctx, baseURL, client.Options{})
	if err != nil {
		t.Fatalf("bot: dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	b := &bot{t: t, c: c, roomID: roomID}
	b.do("join", func(ctx context.Context) error {
		_, err := c.Join(ctx, roomID, name, nil)
		return err
	})
	return b
}

// say sends a message to the bot's room and waits for its ack.
func (b *bot) say(text string) {
	b.t.Helper()
	b.do("msg", func(ctx context.Context) error {
		_, err := b.c.SendMessage(ctx, b.roomID, text)
		return err
	})
}

// leave leaves the bot's room and waits for left.
func (b *bot) leave() {
	b.t.Helper()
	b.do("leave", func(ctx context.Context) error { return b.c.Leave(ctx, b.roomID) })
}

// close closes the connection with 1000.
func (b *bot) close() { b.c.Close() }

// do makes one request and waits for its reply; a rate_limited reply is
// retried after a second (the server's bucket refills at one frame a
// second), anything else that is an error fails the test.
func (b *bot) do(what string, request func(context.Context) error) {
	b.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := request(ctx)
		cancel()
		if err == nil {
			return
		}
		pe, ok := errors.AsType[*protocol.Error](err)
		if !ok || pe.Code != protocol.CodeRateLimited || time.Now().Add(time.Second).After(deadline) {
			b.t.Fatalf("bot: %s: %v", what, err)
		}
		time.Sleep(time.Second)
	}
}
