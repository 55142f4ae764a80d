package web_test

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// axeSource is axe-core, vendored with its licence and version in
// testdata/axe (docs/architecture.md says why it is vendored).
//
//go:embed testdata/axe/axe.min.js
var axeSource string

// axeTags are the rules every page state must pass: WCAG 2.0, 2.1 and 2.2
// at levels A and AA (SPEC §11: the web client is axe-clean).
var axeTags = []string{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"}

// axeViolation is one rule an axe run found broken, with the elements that
// break it.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	URL    string `json:"helpUrl"`
	Nodes  []struct {
		Target  string `json:"target"`
		Summary string `json:"summary"`
	} `json:"nodes"`
}

// axeRun injects axe-core into p's page (again after each navigation) and
// runs it on the whole document as it is now. It returns the violations,
// and the rules axe could not decide ("needs review") by id.
func axeRun(t *testing.T, p *pageT, state string) (violations []axeViolation, review []string) {
	t.Helper()
	if !evalJS[bool](p, `typeof window.axe === 'object'`) {
		evalJS[bool](p, axeSource+"\n;true")
	}
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	tags := `["` + strings.Join(axeTags, `","`) + `"]`
	type result struct {
		Violations []axeViolation `json:"violations"`
		Review     []string       `json:"review"`
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[result](`axe.run(document, {
		runOnly: {type: 'tag', values: `+tags+`},
		resultTypes: ['violations', 'incomplete'],
	}).then(r => ({
		violations: r.violations.map(v => ({
			id: v.id, impact: v.impact ?? '', help: v.help, helpUrl: v.helpUrl,
			nodes: v.nodes.map(n => ({target: n.target.map(String).join(' '), summary: n.failureSummary ?? ''})),
		})),
		review: r.incomplete.map(v => v.id + ' (' + v.nodes.map(n => n.target.map(String).join(' ')).join(', ') + ')'),
	}))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %s: axe.run: %v", p.name, state, err)
	}
	return got.Violations, got.Review
}

// checkAxe fails the test, once in the light colour scheme and once in the
// dark one, with every violation axe finds on p's page now:
// its rule, impact, the selectors of the elements and what to fix. Hidden
// elements are not checked, which is why each state to check (an open
// menu, a notice) is reached first. What axe leaves for review is logged.
func checkAxe(t *testing.T, p *pageT, state string) {
	t.Helper()
	for _, scheme := range []string{"light", "dark"} {
		p.colorScheme(scheme)
		if dark := evalJS[bool](p, `matchMedia('(prefers-color-scheme: dark)').matches`); dark != (scheme == "dark") {
			t.Fatalf("%s: the page prefers the dark scheme: %v, want %v", p.name, dark, scheme == "dark")
		}
		checkAxeNow(t, p, state+" ("+scheme+")")
	}
	p.colorScheme("")
}

// colorScheme makes p's page prefer the light or the dark colour scheme;
// "" gives it the browser's own preference again.
func (p *pageT) colorScheme(scheme string) {
	p.t.Helper()
	features := []*emulation.MediaFeature{}
	if scheme != "" {
		features = append(features, &emulation.MediaFeature{Name: "prefers-color-scheme", Value: scheme})
	}
	p.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: features})
		return err
	}))
}

// checkAxeNow is checkAxe in the colour scheme the page has now.
func checkAxeNow(t *testing.T, p *pageT, state string) {
	t.Helper()
	got, review := axeRun(t, p, state)
	if len(review) > 0 {
		t.Logf("%s: %s: axe leaves for review: %s", p.name, state, strings.Join(review, "; "))
	}
	if len(got) == 0 {
		return
	}
	var b strings.Builder
	for _, v := range got {
		fmt.Fprintf(&b, "\n  %s (%s): %s <%s>", v.ID, v.Impact, v.Help, v.URL)
		for _, n := range v.Nodes {
			fmt.Fprintf(&b, "\n    %s\n      %s", n.Target, strings.ReplaceAll(n.Summary, "\n", "\n      "))
		}
	}
	t.Errorf("%s: %s: %d axe violations:%s", p.name, state, len(got), b.String())
}

// TestBrowserAxe runs axe-core's WCAG 2 A and AA rules, light and dark, on
// every state of the web client a user can meet: the landing page, with a
// join error and with a created room; the name dialog; a room with members
// and messages; the moderator's tools (remove buttons, someone typing, an
// open member menu, the post policy, the moderator link, the status line);
// a removed message; a muted user's disabled input; a refused message, the
// members list and an over-long message on a phone; the notice of a kick
// and of a ban; a lost connection with a message waiting.
func TestBrowserAxe(t *testing.T) {
	browser := newBrowser(t)
	srv := moderationServer(t)
	base := srv.url()

	// ---- landing page ------------------------------------------------------
	owner := newPage(t, browser, "owner")
	owner.do(chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("create-room")))
	checkAxe(t, owner, "the landing page")
	// The check itself: a button without a name and grey on white text
	// are found, by rule and element.
	evalJS[bool](owner, `(() => {
		const b = document.createElement('button');
		b.id = 'axe-unnamed';
		const p = document.createElement('p');
		p.id = 'axe-faint';
		p.textContent = 'faint';
		p.style.cssText = 'color: #bbb; background: #fff';
		document.getElementById('main').append(b, p);
		return true;
	})()`)
	bad, _ := axeRun(t, owner, "the landing page with two planted violations")
	found := map[string]string{}
	for _, v := range bad {
		for _, n := range v.Nodes {
			found[v.ID] += n.Target
		}
	}
	if !strings.Contains(found["button-name"], "#axe-unnamed") || !strings.Contains(found["color-contrast"], "#axe-faint") {
		t.Errorf("axe missed a planted violation: found %+v, want button-name on #axe-unnamed and color-contrast on #axe-faint", found)
	}
	evalJS[bool](owner, `(document.getElementById('axe-unnamed').remove(), document.getElementById('axe-faint').remove(), true)`)
	owner.do(chromedp.SendKeys(chromedp.ID("join-id"), "no spaces allowed"+kb.Enter))
	owner.waitJS("the join error", `document.getElementById('join-id').getAttribute('aria-invalid') === 'true'`)
	checkAxe(t, owner, "the landing page with a join error")
	evalJS[bool](owner, `(Object.defineProperty(navigator, 'clipboard', {value: undefined, configurable: true}), true)`)
	owner.do(chromedp.Click(chromedp.ID("create-room")))
	owner.waitJS("the created room", `!document.getElementById('created').hidden &&
		document.getElementById('copy-status').textContent !== ''`)
	checkAxe(t, owner, "the landing page with a created room")
	roomID := evalJS[string](owner, `document.getElementById('created').dataset.roomId`)

	// ---- the room: name dialog, members, messages ----------------------------
	owner.do(chromedp.Navigate(base+"/r/"+roomID), chromedp.WaitVisible(chromedp.ID("name-input")))
	checkAxe(t, owner, "the name dialog")
	owner.chooseName("owner")
	owner.waitConnected()
	owner.waitJS("the moderation panel", `!document.getElementById('mod-panel').hidden && roomchat.moderator`)

	guest := newPage(t, browser, "guest")
	guest.do(chromedp.Navigate(base + "/r/" + roomID))
	guest.chooseName("spammer")
	guest.waitConnected()
	guestID := evalJS[string](guest, `roomchat.userID`)
	owner.do(chromedp.SendKeys(chromedp.ID("message-input"), "Welcome, everyone."+kb.Enter))
	guest.do(chromedp.SendKeys(chromedp.ID("message-input"), "buy cheap pills"+kb.Enter))
	spam := owner.waitMessage("buy cheap pills", "spammer")
	guest.waitMessage("Welcome, everyone.", "owner")
	guest.waitJS("2 members", `document.getElementById('member-count').textContent === '2'`)
	checkAxe(t, guest, "a room with members and messages")

	// ---- the moderator's tools ---------------------------------------------
	toggle := `#members .member[data-user-id="` + guestID + `"] .mod-toggle`
	owner.waitJS("the remove buttons and member menus", `document.querySelector('#messages .message[data-seq="`+spam.Seq+`"] .mod-remove') !== null &&
		document.querySelector(`+jsString(toggle)+`) !== null`)
	checkAxe(t, owner, "the moderator's page")
	owner.do(chromedp.Focus(chromedp.CSS(toggle)), chromedp.KeyEvent(kb.Enter))
	owner.waitJS("the member menu open", `document.activeElement.closest('.mod-menu') !== null`)
	checkAxe(t, owner, "the moderator's page with a member menu open")
	owner.do(chromedp.KeyEvent(kb.Escape))

	// ---- a removed message -------------------------------------------------
	owner.do(chromedp.Focus(chromedp.CSS(`#messages .message[data-seq="`+spam.Seq+`"] .mod-remove`)), chromedp.KeyEvent(kb.Enter))
	removedJS := `document.querySelector('#messages .message[data-seq="` + spam.Seq + `"] .text')?.textContent === 'removed by a moderator'`
	owner.waitJS("the message removed", removedJS)
	guest.waitJS("the message removed for the guest", removedJS)
	checkAxe(t, owner, "the moderator's page with a removed message")
	checkAxe(t, guest, "a room with a removed message")

	// ---- a muted user ------------------------------------------------------
	owner.do(chromedp.Click(chromedp.CSS(toggle)), chromedp.Click(chromedp.CSS(`#members .member[data-user-id="`+guestID+`"] button[data-action="mute-10m"]`)))
	guest.waitJS("the input disabled, and until when", `document.getElementById('message-input').disabled &&
		/muted you until /.test(document.getElementById('muted-note').textContent)`)
	checkAxe(t, guest, "a muted user's page")
	owner.waitJS("the mute confirmed", `document.getElementById('mod-status').textContent !== ''`)
	checkAxe(t, owner, "the moderator's page with a status line")
	// Only moderators may post: the switch, then everyone again.
	evalJS[bool](owner, `(() => { const s = document.getElementById('post-policy'); s.value = 'moderators'; return s.dispatchEvent(new Event('change')); })()`)
	owner.waitJS("the policy switched", `document.getElementById('mod-status').textContent === 'Only moderators may post now.'`)
	checkAxe(t, owner, "the moderator's page, moderators only")

	// ---- a message refused, on a phone -------------------------------------
	late := newPage(t, browser, "late")
	late.do(chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch))
	late.do(chromedp.Navigate(base + "/r/" + roomID))
	late.chooseName("late")
	late.waitConnected()
	lateID := evalJS[string](late, `roomchat.userID`)
	// Joined under moderators only: the input is disabled, and says why.
	late.waitJS("the input disabled, and why", `document.getElementById('message-input').disabled &&
		document.getElementById('muted-note').textContent === 'Only moderators can post in this room right now.'`)
	checkAxe(t, late, "a member's page, moderators only")
	setPost := func(post string) {
		t.Helper()
		evalJS[bool](owner, `(() => { const s = document.getElementById('post-policy'); s.value = `+jsString(post)+`; return s.dispatchEvent(new Event('change')); })()`)
	}
	setPost("members")
	late.waitJS("the input enabled", `!document.getElementById('message-input').disabled`)
	late.do(chromedp.SendKeys(chromedp.ID("message-input"), "may I?"))
	owner.waitJS("the typing line", `document.getElementById('typing').textContent === 'late is typing…'`)
	checkAxe(t, owner, "the moderator's page, someone typing")
	// Sent while offline, out after the switch to moderators only: refused.
	evalJS[bool](late, `(roomchat.conn.stop(), true)`)
	late.do(chromedp.SendKeys(chromedp.ID("message-input"), kb.Enter))
	late.waitJS("the message kept for later", `document.querySelector('#messages .message.pending') !== null`)
	setPost("moderators")
	owner.waitJS("the policy switched again", `document.getElementById('mod-status').textContent === 'Only moderators may post now.'`)
	evalJS[bool](late, `(roomchat.conn.start(), true)`)
	late.waitJS("the refusal, the message failed", `/Not allowed/.test(document.getElementById('error').textContent) &&
		document.querySelector('#messages .message.failed .retry') !== null`)
	checkAxe(t, late, "a phone's page with a refused message")
	late.do(chromedp.Click(chromedp.ID("members-toggle")))
	late.waitJS("the members shown", `document.getElementById('members-toggle').getAttribute('aria-expanded') === 'true'`)
	checkAxe(t, late, "a phone's page with the members shown")
	// Over the length limit, the count says by how much.
	evalJS[bool](late, `(() => {
		const i = document.getElementById('message-input');
		i.value = 'x'.repeat(9000); // over the default 4000
		return i.dispatchEvent(new Event('input'));
	})()`)
	late.waitJS("the count over the limit", `document.getElementById('char-count').classList.contains('over')`)
	checkAxe(t, late, "a phone's page with a message over the limit")
	evalJS[bool](late, `(() => {
		const i = document.getElementById('message-input');
		i.value = '';
		return i.dispatchEvent(new Event('input'));
	})()`)

	// ---- kicked, then banned -----------------------------------------------
	lateToggle := `#members .member[data-user-id="` + lateID + `"] .mod-toggle`
	owner.waitJS("late's member menu", `document.querySelector(`+jsString(lateToggle)+`) !== null`)
	owner.do(chromedp.Click(chromedp.CSS(lateToggle)), chromedp.Click(chromedp.CSS(`#members .member[data-user-id="`+lateID+`"] button[data-action="kick"]`)))
	late.waitJS("the kick notice", `/You were removed from this room by owner/.test(document.getElementById('error').textContent)`)
	checkAxe(t, late, "a kicked user's page")
	// The list is drawn again as late leaves it, menus closed: wait for that
	// before opening the next menu.
	owner.waitJS("late gone from the list", `document.querySelector(`+jsString(lateToggle)+`) === null`)

	owner.do(chromedp.Click(chromedp.CSS(toggle)), chromedp.Click(chromedp.CSS(`#members .member[data-user-id="`+guestID+`"] button[data-action="ban-1h"]`)))
	guest.waitJS("the ban notice", `/You were banned from this room by owner, until /.test(document.getElementById('error').textContent)`)
	checkAxe(t, guest, "a banned user's page")
	guest.do(chromedp.Reload())
	guest.waitJS("the ban after a reload", `/You are banned from this room: .*until/.test(document.getElementById('error').textContent)`)
	checkAxe(t, guest, "a banned user's page after a reload")

	// ---- the server gone: reconnecting, a message waiting -------------------
	srv.stop()
	owner.waitJS("the reconnecting state", `document.getElementById('status').dataset.state !== 'connected' &&
		!document.getElementById('reconnect-now').hidden`)
	owner.do(chromedp.SendKeys(chromedp.ID("message-input"), "Anyone there?"+kb.Enter))
	owner.waitJS("the message waiting", `[...document.querySelectorAll('#messages .message.pending .state')].some(s => /Waiting/.test(s.textContent))`)
	checkAxe(t, owner, "the page of a lost connection, a message waiting")

	for _, p := range []*pageT{owner, guest, late} {
		if err := p.problems(); err != nil {
			t.Error(err)
		}
	}
}

// TestBrowserAxeToken runs axe-core's WCAG 2 A and AA rules on the notices of
// signed identity (SPEC §10): a private room refused without a token, and a
// token that expired with no way to refresh it.
func TestBrowserAxeToken(t *testing.T) {
	browser := newBrowser(t)
	srv := tokenServer(t, 500*time.Millisecond)

	anon := newPage(t, browser, "anon")
	anon.do(chromedp.Navigate(srv.url() + "/r/staff:ops"))
	anon.chooseName("Anon")
	anon.waitJS("the forbidden reason", `document.getElementById('error').textContent.includes('staff')`)
	checkAxe(t, anon, "a private room refused without a token")

	p := newPage(t, browser, "ada")
	p.do(chromedp.Navigate(srv.url() + "/r/staff:ops?token=" + staffToken(t, "ada", time.Now().Add(2*time.Second))))
	p.chooseName("Ada")
	p.waitConnected()
	p.waitJS("the expired token's notice", `document.getElementById('status').dataset.state === 'offline' &&
		document.getElementById('error').textContent.includes('token')`)
	checkAxe(t, p, "an expired token's notice")

	for _, pg := range []*pageT{anon, p} {
		if err := pg.problems(); err != nil {
			t.Error(err)
		}
	}
}
