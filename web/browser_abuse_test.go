package web_test

// Browser test of SPEC §4's limits as a person meets them (§6): a hostile
// script cannot stop a browser tab from joining the room it targets and
// chatting there.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
)

// TestBrowserUnderAbuse runs three attack loops on the room "target" while
// a browser tab opens its link and chats with a bot there:
//
//   - churn: connect, join the target, send typing, drop the connection
//     without a close frame (each drop leaves a ghost in its grace period),
//     200 times a second (the rate that once kept a room full of ghosts);
//   - a typing flood on a joined connection, until the server closes it
//     for abuse, then again on a new one, ten times a second;
//   - 200 joins on one connection (100 rooms, then room_limit), again and
//     again.
//
// The server has the defaults `make run` has, except a room capacity of
// 20: with the default 10,000 the churn could not fill the room even if
// ghosts counted, so the test could not fail on that bound. The tab must
// join, see the bot's message and get its own to the bot, with no error
// on the page; the attacks must have run throughout and met their bounds.
func TestBrowserUnderAbuse(t *testing.T) {
	browser := newBrowser(t)
	limits := protocol.DefaultLimits()
	limits.RoomCapacity = 20
	srv := startLimitedServer(t, filepath.Join(t.TempDir(), "roomchat.db"), limits)
	const roomID = "target"
	bob := dialBot(t, srv.url(), roomID, "bob")

	a := &attacks{base: srv.url(), roomID: roomID}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, loop := range []func(context.Context) error{a.churn, a.typingFlood, a.joinMany} {
		wg.Go(func() {
			if err := loop(ctx); err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	stop := func() {
		cancel()
		wg.Wait()
	}
	defer stop()

	// Let the attacks get going: before the tab arrives, the room holds
	// ghosts, a flood has been cut and the joins have hit room_limit.
	for a.cycles.Load() < 100 || a.floodsClosed.Load() < 1 || a.roomLimits.Load() < 1 {
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("the attacks did not get going: %s", a)
		case <-time.After(50 * time.Millisecond):
		}
	}

	before := a.cycles.Load()
	tabStart := time.Now()
	alice := newPage(t, browser, "alice")
	alice.do(chromedp.Navigate(srv.url() + "/r/" + roomID))
	alice.chooseName("Alice")
	alice.waitConnected()
	bob.say("Can you hear me over this?")
	alice.waitMessage("Can you hear me over this?", "bob")
	alice.do(chromedp.SendKeys(chromedp.ID("message-input"), "Loud and clear."+kb.Enter))
	alice.waitMessage("Loud and clear.", "Alice")
	bob.awaitMessage("Loud and clear.", "Alice")

	// The churn's presence reached the tab, drawn as notices of many
	// members at once: no more than two (a join and a leave notice) per
	// 100 ms redraw, however many events came.
	alice.waitJS("a notice of many joins", `[...document.querySelectorAll('#messages .notice')].some(n => /and \d+ others joined the room\.$/.test(n.textContent))`)
	notices := evalJS[int](alice, `document.querySelectorAll('#messages .notice').length`)
	if most := 2*int(time.Since(tabStart)/(100*time.Millisecond)) + 4; notices > most {
		t.Errorf("the tab shows %d notices after %v, want at most %d: presence is not coalesced", notices, time.Since(tabStart).Round(time.Millisecond), most)
	}
	t.Logf("the tab shows %d notices after %v", notices, time.Since(tabStart).Round(time.Millisecond))

	stop()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("attacks: %s", a)
	if a.cycles.Load() < before+20 {
		t.Errorf("the churn did not go on while the tab chatted: %d cycles before the tab, %s", before, a)
	}
	if err := alice.problems(); err != nil {
		t.Error(err)
	}
}

// attacks are the loops of TestBrowserUnderAbuse and what they saw.
type attacks struct {
	base, roomID string

	cycles       atomic.Int64 // churn: connect, join, drop
	floodsClosed atomic.Int64 // typing floods the server closed with 1008
	roomLimits   atomic.Int64 // joins refused with room_limit
}

func (a *attacks) String() string {
	return fmt.Sprintf("%d churn cycles, %d typing floods closed for abuse, %d joins refused with room_limit",
		a.cycles.Load(), a.floodsClosed.Load(), a.roomLimits.Load())
}

// churn connects, joins the target room, sends typing and drops the
// connection without a close frame, over and over. A join refused with
// room_full means ghosts took the room's places.
func (a *attacks) churn(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ctx.Err() == nil; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		c, _, err := chattest.DialFrom(ctx, a.base, fmt.Sprintf("127.0.5.%d", i%50+1))
		if err != nil {
			return fmt.Errorf("churn %d: %w", i, err)
		}
		c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"join","payload":{"roomID":%q}}`, a.roomID))
		env, err := chattest.AwaitFrame(ctx, c, protocol.TypeJoined)
		if err == nil && env.Type == protocol.TypeJoined {
			c.Write(ctx, websocket.MessageText, []byte(`{"type":"typing"}`))
		}
		c.CloseNow()
		if err != nil {
			return fmt.Errorf("churn %d: join: %w", i, err)
		}
		if env.Type != protocol.TypeJoined {
			return fmt.Errorf("churn %d: join answered %s %s: ghosts count against the capacity", i, env.Type, env.Payload)
		}
		a.cycles.Add(1)
	}
	return nil
}

// typingFlood joins the target room and sends typing as fast as it can
// until the server closes the connection; only a close for abuse (1008)
// is what SPEC §4 says.
func (a *attacks) typingFlood(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		c, _, err := chattest.DialFrom(ctx, a.base, "127.0.6.1")
		if err != nil {
			return fmt.Errorf("typing flood: %w", err)
		}
		c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"join","payload":{"roomID":%q}}`, a.roomID))
		if env, err := chattest.AwaitFrame(ctx, c, protocol.TypeJoined); err != nil || env.Type != protocol.TypeJoined {
			c.CloseNow()
			return fmt.Errorf("typing flood: join answered %s %s (%v)", env.Type, env.Payload, err)
		}
		// The reads drain the server's rate_limited errors, so that the
		// close that follows them is seen.
		read := make(chan error, 1)
		go func() {
			for {
				if _, _, err := c.Read(ctx); err != nil {
					read <- err
					return
				}
			}
		}()
		for c.Write(ctx, websocket.MessageText, []byte(`{"type":"typing"}`)) == nil {
		}
		err = <-read
		c.CloseNow()
		if ctx.Err() != nil {
			return nil
		}
		if code := websocket.CloseStatus(err); code != websocket.StatusPolicyViolation {
			return fmt.Errorf("typing flood: the connection ended with %v (close code %d), want 1008", err, code)
		}
		a.floodsClosed.Add(1)
	}
	return nil
}

// joinMany joins 200 rooms on one connection, a join a time: the first
// 100 must be joined and every one after them room_limit. rate_limited
// answers are waited out, as a persistent script would.
func (a *attacks) joinMany(ctx context.Context) error {
	for ctx.Err() == nil {
		c, _, err := chattest.DialFrom(ctx, a.base, "127.0.6.2")
		if err != nil {
			return fmt.Errorf("joins: %w", err)
		}
		for i := 0; i < 200 && ctx.Err() == nil; {
			c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"join","payload":{"roomID":"spam-%d"}}`, i))
			env, err := chattest.AwaitFrame(ctx, c, protocol.TypeJoined)
			if err != nil {
				c.CloseNow()
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("join %d: %w", i, err)
			}
			var code string
			if env.Type == protocol.TypeError {
				var e protocol.Error
				if err := json.Unmarshal(env.Payload, &e); err != nil {
					c.CloseNow()
					return fmt.Errorf("join %d: %s: %w", i, env.Payload, err)
				}
				code = e.Code
			}
			switch {
			case code == protocol.CodeRateLimited:
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
				continue
			case i < 100 && env.Type != protocol.TypeJoined, i >= 100 && code != protocol.CodeRoomLimit:
				c.CloseNow()
				return fmt.Errorf("join %d: %s %s; want joined for the first 100, then room_limit", i, env.Type, env.Payload)
			case code == protocol.CodeRoomLimit:
				a.roomLimits.Add(1)
			}
			i++
		}
		c.CloseNow()
	}
	return nil
}

// awaitMessage reads the bot's events until a msg with text from a member
// named from arrives.
func (b *bot) awaitMessage(text, from string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for {
		env, _, err := b.c.Next(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				b.t.Fatalf("bot: no message %q from %s within %v", text, from, waitFor)
			}
			b.t.Fatalf("bot: waiting for %q: %v", text, err)
		}
		var m protocol.Message
		if env.Type == protocol.TypeMsg && json.Unmarshal(env.Payload, &m) == nil && m.Message == text && m.From.Name == from {
			return
		}
	}
}
