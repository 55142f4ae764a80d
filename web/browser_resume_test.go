package web_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
)

// The web client keeps the token of a resume event (SPEC §4): on a server
// whose tokens resume for 4 s (renewed every 2 s on a connection), a page
// whose connection outlives its welcome's token resumes as the same user
// after a drop, sending the renewed token in the subprotocol.
func TestBrowserKeepsRenewedToken(t *testing.T) {
	const maxAge = 4 * time.Second
	browser := newBrowser(t)
	srv := newServer(t, filepath.Join(t.TempDir(), "roomchat.db"), "127.0.0.1:0", protocol.Limits{}, func(c *server.Config) {
		c.PingInterval = 100 * time.Millisecond
		lim := protocol.DefaultLimits() // c.Limits is zero: the defaults
		c.Registry = room.New(c.Store, room.Options{Limits: lim, ResumeMaxAge: maxAge, Logger: server.Throttled(c.Logger), Budgets: room.DefaultBudgets(lim)})
	})
	srv.listen()
	p := newPage(t, browser, "alice")
	p.do(chromedp.Navigate(srv.url() + "/r/renew"))
	p.chooseName("Alice")
	p.waitConnected()
	connected := time.Now()
	id := evalJS[string](p, `roomchat.userID`)
	first := evalJS[string](p, `sessionStorage.getItem('roomchat.resume')`)
	if id == "" || first == "" {
		t.Fatalf("userID %q, stored token %q after the welcome", id, first)
	}
	p.waitJS("a renewed token in sessionStorage", `sessionStorage.getItem('roomchat.resume') !== `+jsString(first))

	// The welcome's token no longer resumes; only a renewed one can.
	time.Sleep(time.Until(connected.Add(maxAge + 500*time.Millisecond)))
	evalJS[bool](p, `(window.dropped = roomchat.conn.ws, roomchat.conn.ws.close(), true)`)
	p.waitJS("a new connection", `roomchat.conn.ws !== window.dropped && document.getElementById('status').dataset.state === 'connected' && roomchat.joined`)
	if got := evalJS[string](p, `roomchat.userID`); got != id {
		t.Fatalf("userID %q after the drop, want %q: the renewed token was not used", got, id)
	}
	if err := p.problems(); err != nil {
		t.Error(err)
	}
}
