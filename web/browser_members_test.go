package web_test

// Browser test for rooms with more members than joined lists (SPEC §4:
// joined.members lists at most 100, count is exact, and the web client
// shows "and N more").

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserMemberOverflow fills a room with 105 members over the Go
// client, then opens it in the browser: joined lists at most 100 of the
// 106, and the page shows "and N more" for the rest. Members leaving and
// joining keep the count and N right.
func TestBrowserMemberOverflow(t *testing.T) {
	browser := newBrowser(t)
	srv := startServer(t, filepath.Join(t.TempDir(), "roomchat.db"), "127.0.0.1:0")
	const roomID = "crowd"
	const nbots = 105
	bots := make([]*bot, nbots)
	for i := range bots {
		bots[i] = dialBot(t, srv.url(), roomID, fmt.Sprintf("bot-%03d", i+1))
	}

	alice := newPage(t, browser, "alice")
	alice.do(chromedp.Navigate(srv.url() + "/r/" + roomID))
	alice.chooseName("Alice")
	alice.waitConnected()
	checkMembers(t, alice, nbots+1)
	if n := evalJS[int](alice, `document.querySelectorAll('#members li.member').length`); n > 101 {
		t.Errorf("%d members listed right after joining; joined lists at most 100 (and the page adds itself)", n)
	}

	// Three leave (clean closes are announced at once), one more joins.
	for _, b := range bots[:3] {
		b.close()
	}
	checkMembers(t, alice, nbots+1-3)
	dialBot(t, srv.url(), roomID, "late-bot")
	checkMembers(t, alice, nbots+1-3+1)
	alice.waitJS("the late member listed", `[...document.querySelectorAll('#members li.member')].some(li => li.textContent === 'late-bot')`)
	if err := alice.problems(); err != nil {
		t.Error(err)
	}
}

// checkMembers waits until the page shows count members and, below the
// listed ones, "and N more" with N = count − listed.
func checkMembers(t *testing.T, p *pageT, count int) {
	t.Helper()
	p.waitJS(fmt.Sprintf("%d members, with the unlisted ones as “and N more”", count), fmt.Sprintf(`(() => {
		const listed = document.querySelectorAll('#members li.member').length;
		const more = document.getElementById('members-more');
		return document.getElementById('member-count').textContent === '%d' && listed < %d &&
			more !== null && more.textContent === 'and ' + (%d - listed) + ' more' &&
			more === document.getElementById('members').lastElementChild;
	})()`, count, count, count))
	listed := evalJS[int](p, `document.querySelectorAll('#members li.member').length`)
	t.Logf("%d members: %d listed, %q", count, listed, evalJS[string](p, `document.getElementById('members-more').textContent`))
	if more := count - listed; more < 5 {
		t.Errorf("%d members, %d listed: want at least 5 unlisted (joined lists at most 100)", count, listed)
	}
}
