package web_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/roomchat/roomchat/internal/protocol"
)

// moderationServer serves the room page from the test server's SQLite
// file, which keeps moderation state (bans, mutes, tombstones).
func moderationServer(t *testing.T) *testServer {
	t.Helper()
	s := newServer(t, filepath.Join(t.TempDir(), "roomchat.db"), "127.0.0.1:0", protocol.Limits{})
	s.listen()
	return s
}

// TestBrowserModeration is SPEC §11 as a new user meets it: the creator's
// browser keeps the room's owner key and gets the moderator tools; it
// removes a guest's message and bans the guest, who sees why and cannot
// come back with the same identity; a browser joining later sees "removed
// by a moderator", not the text, and no tools; the moderator link gives
// another browser the tools.
func TestBrowserModeration(t *testing.T) {
	browser := newBrowser(t)
	srv := moderationServer(t)
	base := srv.url()

	owner := newPage(t, browser, "owner")
	owner.do(chromedp.Navigate(base + "/"))
	evalJS[bool](owner, `(Object.defineProperty(navigator, 'clipboard', {value: undefined, configurable: true}), true)`)
	owner.do(chromedp.Click(chromedp.ID("create-room")))
	owner.waitJS("the created room", `!document.getElementById('created').hidden`)
	roomID := evalJS[string](owner, `document.getElementById('created').dataset.roomId`)
	if key := evalJS[string](owner, `localStorage.getItem('roomchat.key.' + `+jsString(roomID)+`) ?? ''`); !strings.HasPrefix(key, "k1.") {
		t.Fatalf("owner key kept after create = %q", key)
	}
	owner.do(chromedp.Navigate(base + "/r/" + roomID))
	owner.chooseName("owner")
	owner.waitConnected()
	owner.waitJS("the moderation panel", `!document.getElementById('mod-panel').hidden && roomchat.moderator`)
	joins := owner.framesSince(0)
	keyed := false
	for _, f := range joins {
		if f.Sent && f.Type == "join" && strings.Contains(string(f.Payload), `"key":"k1.`) {
			keyed = true
		}
	}
	if !keyed {
		t.Errorf("the owner's join carries no key: %+v", joins)
	}

	guest := newPage(t, browser, "guest")
	guest.do(chromedp.Navigate(base + "/r/" + roomID))
	guest.chooseName("spammer")
	guest.waitConnected()
	if evalJS[bool](guest, `!document.getElementById('mod-panel').hidden || document.querySelector('.mod-remove, .mod-toggle') !== null`) {
		t.Error("a guest without the key sees moderator tools")
	}
	guest.do(chromedp.SendKeys(chromedp.ID("message-input"), "buy cheap pills"+kb.Enter))
	spam := owner.waitMessage("buy cheap pills", "spammer")
	guestID := evalJS[string](guest, `roomchat.userID`)

	// Remove it with the keyboard: focus the button, press Enter.
	sel := `#messages .message[data-seq="` + spam.Seq + `"] .mod-remove`
	owner.do(chromedp.Focus(chromedp.CSS(sel)), chromedp.KeyEvent(kb.Enter))
	removedJS := `(() => {
		const m = document.querySelector('#messages .message[data-seq="` + spam.Seq + `"]');
		return m && m.querySelector('.text').textContent === 'removed by a moderator' &&
			!document.getElementById('messages').textContent.includes('buy cheap pills');
	})()`
	owner.waitJS("the message removed", removedJS)
	guest.waitJS("the message removed for the guest too", removedJS)

	// The member menu: Escape closes it and gives the focus back.
	toggle := `#members .member[data-user-id="` + guestID + `"] .mod-toggle`
	owner.do(chromedp.Focus(chromedp.CSS(toggle)), chromedp.KeyEvent(kb.Enter))
	owner.waitJS("the menu open, focus in it", `document.activeElement.closest('.mod-menu') !== null &&
		document.querySelector(`+jsString(toggle)+`).getAttribute('aria-expanded') === 'true'`)
	owner.do(chromedp.KeyEvent(kb.Escape))
	owner.waitJS("the menu closed, focus on its toggle", `document.activeElement === document.querySelector(`+jsString(toggle)+`) &&
		document.querySelector(`+jsString(toggle)+`).nextElementSibling.hidden`)
	owner.do(chromedp.KeyEvent(kb.Enter))
	owner.waitJS("the menu open again", `document.activeElement.closest('.mod-menu') !== null`)
	owner.do(chromedp.Click(chromedp.CSS(`#members .member[data-user-id="` + guestID + `"] button[data-action="ban-1h"]`)))
	owner.waitJS("the ban confirmed", `/^Banned spammer until /.test(document.getElementById('mod-status').textContent)`)
	owner.waitJS("the guest gone from the list", `!document.querySelector('#members .member[data-user-id="`+guestID+`"]')`)

	bannedJS := `/You were banned from this room by owner, until /.test(document.getElementById('error').textContent) &&
		document.getElementById('message-input').disabled && !roomchat.joined`
	guest.waitJS("the guest told why", bannedJS)
	// Reloading resumes the same userID: the join is refused, and said so.
	guest.do(chromedp.Reload())
	guest.waitJS("the ban after a reload", `/You are banned from this room: .*until/.test(document.getElementById('error').textContent) &&
		roomchat.userID === `+jsString(guestID)+` && !roomchat.joined`)

	// A later browser sees the tombstone, not the text, and no tools.
	late := newPage(t, browser, "late")
	late.do(chromedp.Navigate(base + "/r/" + roomID))
	late.chooseName("late")
	late.waitConnected()
	late.waitJS("the tombstone", removedJS)
	late.waitJS("the redaction line", `[...document.querySelectorAll('#messages .message.redaction .text')].some(t => t.textContent === 'owner removed a message.')`)
	if evalJS[bool](late, `!document.getElementById('mod-panel').hidden || document.querySelector('.mod-remove, .mod-toggle') !== null`) {
		t.Error("a member without the key sees moderator tools")
	}

	// The moderator link gives another browser the tools, and leaves the
	// address bar without the key.
	link := evalJS[string](owner, `document.getElementById('mod-link').value`)
	if !strings.HasPrefix(link, base+"/r/"+roomID+"#key=k1.") {
		t.Fatalf("moderator link %q", link)
	}
	mod := newPage(t, browser, "moderator")
	mod.do(chromedp.Navigate(link))
	mod.chooseName("helper")
	mod.waitConnected()
	mod.waitJS("the tools from the link", `location.hash === '' && !location.href.includes('key') && roomchat.moderator &&
		localStorage.getItem('roomchat.key.' + `+jsString(roomID)+`) !== null &&
		!document.getElementById('mod-panel').hidden`)
	lateID := evalJS[string](late, `roomchat.userID`)
	mod.waitJS("a member menu", `document.querySelector('#members .member[data-user-id="`+lateID+`"] .mod-toggle') !== null`)

	// The post policy switch: only moderators may post, then everyone. A
	// member's input is disabled with the reason (configured); the other
	// moderators keep theirs and see the switch.
	switchPost := func(post string) {
		t.Helper()
		evalJS[bool](mod, `(() => { const s = document.getElementById('post-policy'); s.value = `+jsString(post)+`; return s.dispatchEvent(new Event('change')); })()`)
	}
	lockedJS := `document.getElementById('message-input').disabled && document.getElementById('send').disabled &&
		!document.getElementById('muted-note').hidden &&
		document.getElementById('muted-note').textContent === 'Only moderators can post in this room right now.'`
	unlockedJS := `!document.getElementById('message-input').disabled && !document.getElementById('send').disabled &&
		document.getElementById('muted-note').hidden`
	switchPost("moderators")
	mod.waitJS("the policy switched", `document.getElementById('mod-status').textContent === 'Only moderators may post now.'`)
	late.waitJS("a member's input disabled, and why", lockedJS)
	owner.waitJS("the owner's input enabled, the switch shown", unlockedJS+` && document.getElementById('post-policy').value === 'moderators'`)
	mod.waitJS("the moderator's input enabled", unlockedJS)
	switchPost("members")
	late.waitJS("a member's input enabled again", unlockedJS)
	owner.waitJS("the switch back shown", `document.getElementById('post-policy').value === 'members'`)

	// A line the member wrote offline before the switch goes out after it
	// and is refused; the join after the reconnect says the rule
	// (joined.post), and the input is disabled again.
	evalJS[bool](late, `(roomchat.conn.stop(), true)`)
	late.do(chromedp.SendKeys(chromedp.ID("message-input"), "may I?"+kb.Enter))
	late.waitJS("the line kept for later", `document.querySelector('#messages .message.pending') !== null`)
	switchPost("moderators")
	mod.waitJS("the policy switched again", `document.getElementById('mod-status').textContent === 'Only moderators may post now.'`)
	evalJS[bool](late, `(roomchat.conn.start(), true)`)
	late.waitJS("the refusal", `/Not allowed/.test(document.getElementById('error').textContent)`)
	late.waitJS("the input disabled after the join", lockedJS+` && roomchat.joined && roomchat.postRule === 'moderators'`)
	switchPost("members")
	late.waitJS("the input enabled once every member may post", unlockedJS)

	// A mute disables the input until it is lifted.
	mod.do(chromedp.Click(chromedp.CSS(`#members .member[data-user-id="`+lateID+`"] .mod-toggle`)),
		chromedp.Click(chromedp.CSS(`#members .member[data-user-id="`+lateID+`"] button[data-action="mute-10m"]`)))
	late.waitJS("the input disabled, and until when", `document.getElementById('message-input').disabled &&
		/muted you until /.test(document.getElementById('muted-note').textContent)`)
	mod.do(chromedp.Click(chromedp.CSS(`#members .member[data-user-id="`+lateID+`"] .mod-toggle`)),
		chromedp.Click(chromedp.CSS(`#members .member[data-user-id="`+lateID+`"] button[data-action="unmute"]`)))
	late.waitJS("the input enabled again", `!document.getElementById('message-input').disabled && document.getElementById('muted-note').hidden`)

	for _, p := range []*pageT{owner, guest, late, mod} {
		if err := p.problems(); err != nil {
			t.Error(err)
		}
	}
}
