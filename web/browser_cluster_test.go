package web_test

// The cluster walkthrough of SPEC §8, as a person would try it with
// `make cluster`: two browsers in one room on two roomchatd nodes that share
// one redis-server; Redis stopped (SIGSTOP) and continued; one browser
// bounced from node to node and back. Real parts only: the built roomchatd,
// a real redis-server, headless Chromium, and a loopback TCP proxy in front
// of the bounced browser that plays the load balancer.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/redistest"
)

// walkStopEnv names the variable that sets how long the walkthrough holds
// Redis stopped: a Go duration ("30s") or whole seconds ("30").
const walkStopEnv = "ROOMCHAT_WALK_STOP"

// Bounds of the walkthrough, from SPEC §8: a message sent while Redis is
// unreachable is refused within 5 s; a node serves again within 10 s of
// Redis coming back (plus a few seconds for the pages on a shared machine);
// nobody is shown as having left, watched for 10 s after Redis is back and
// for a whole grace period (roomchatd's default, 15 s) after the last
// bounce, when the node the page left would announce a leave if it was
// going to.
const (
	walkErrorWithin  = 5 * time.Second
	walkReadyWithin  = 10 * time.Second
	walkResumeWithin = 15 * time.Second
	walkWatchAfter   = 10 * time.Second
	walkGrace        = 15 * time.Second
	walkPoll         = 200 * time.Millisecond
)

// TestBrowserClusterWalk is the walkthrough. Alice's page talks to node 1,
// Bob's to node 2 through the proxy; they chat both ways. Then:
//   - Redis is stopped for ROOMCHAT_WALK_STOP (10 s by default). A message
//     Alice sends as it stops, and one Bob sends late in the stop, are each
//     marked failed, with the error bar's sentence, within 5 s, and are
//     never stored. Neither page shows the other leaving, polled every
//     200 ms and watched by a MutationObserver, through the stop and 10 s
//     after it.
//   - Redis continues: both nodes answer /readyz within 10 s, and then,
//     without a reload, each page sends a message and sees the other's,
//     all within 15 s of SIGCONT.
//   - Bob's page is bounced twice, node 2 → node 1 → node 2: the proxy holds
//     what the node sends while Bob sends a message, waits until the message
//     is stored, then drops every connection and forwards new ones to the
//     other node. The page resumes there with its token and sends the
//     unanswered message again with the same id. Bob keeps his userID and
//     name, Alice sees no leave and no join, and each message is stored
//     once and shown once.
func TestBrowserClusterWalk(t *testing.T) {
	stopFor := walkStop(t)
	browser := newBrowser(t)
	rds := redistest.Start(t, redistest.Options{})
	// Continued before redistest's SIGKILL and after the nodes are gone, so
	// that nothing is left stopped if the test ends early.
	t.Cleanup(func() {
		if pid := rds.PID(); pid != 0 {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	nodes := [2]*chattest.Server{startWalkNode(t, rds), startWalkNode(t, rds)}
	proxy := startBounceProxy(t, nodes[1].Addr)
	const roomID = "walkthrough"

	// ---- two browsers, one room, one on each node -------------------------
	alice := newPage(t, browser, "alice")
	alice.do(chromedp.Navigate(nodes[0].URL + "/r/" + roomID))
	alice.chooseName("Alice")
	alice.waitConnected()
	bob := newPage(t, browser, "bob")
	bob.do(chromedp.Navigate(proxy.url() + "/r/" + roomID))
	bob.chooseName("Bob")
	bob.waitConnected()
	for _, p := range []*pageT{alice, bob} {
		p.waitJS("2 members", `document.getElementById('member-count').textContent === '2' &&
			[...document.querySelectorAll('#members li.member')].map(li => li.firstChild.textContent).sort().join(',') === 'Alice,Bob'`)
	}
	alice.waitJS("bob's join notice", `[...document.querySelectorAll('#messages .notice')].some(n => n.textContent === 'Bob joined the room.')`)
	aliceID, bobID := evalJS[string](alice, `roomchat.userID`), evalJS[string](bob, `roomchat.userID`)
	if aliceID == "" || bobID == "" || aliceID == bobID {
		t.Fatalf("user IDs alice=%q bob=%q: want two different users", aliceID, bobID)
	}
	watch := newPresenceWatch(t, alice, bob, aliceID, bobID)

	sayIn(alice, "Hello from node 1.")
	bob.waitMessage("Hello from node 1.", "Alice")
	sayIn(bob, "Hello from node 2.")
	alice.waitMessage("Hello from node 2.", "Bob")
	watch.check()

	// ---- Redis stopped ------------------------------------------------------
	// Alice sends at once, into the first request that meets the stopped
	// Redis; Bob sends late in the stop, to a node that has long known.
	sends := []*stopSend{
		{p: alice, text: "Alice, while Redis is stopped."},
		{p: bob, text: "Bob, late in the stop.", after: stopFor - walkErrorWithin - time.Second},
	}
	pid := rds.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP redis-server (pid %d): %v", pid, err)
	}
	stoppedAt := time.Now()
	for time.Now().Before(stoppedAt.Add(stopFor)) {
		for _, send := range sends {
			send.poll(stoppedAt)
		}
		watch.poll()
	}
	for _, send := range sends {
		send.check(t)
		t.Logf("Redis stopped for %v: %s's page showed the error %v after the send, %v into the stop",
			stopFor, send.p.name, send.errorAfter.Round(10*time.Millisecond), send.sentAt.Sub(stoppedAt).Round(100*time.Millisecond))
	}

	// ---- Redis continued: chat resumes by itself ------------------------------
	// Once both nodes say they are ready again (SPEC §8: within 10 s),
	// each page sends a message on the connection it kept, with no reload.
	// (A message sent in the instant before a node has noticed Redis back
	// is refused like those above; that is the bound, not a failure.)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT redis-server (pid %d): %v", pid, err)
	}
	contAt := time.Now()
	const fromAlice, fromBob = "Alice, after the outage.", "Bob, after the outage."
	var readyAfter, bobSaw, aliceSaw time.Duration
	for time.Since(contAt) < walkWatchAfter || bobSaw == 0 || aliceSaw == 0 {
		watch.poll()
		if readyAfter == 0 && nodeReady(nodes[0]) && nodeReady(nodes[1]) {
			readyAfter = time.Since(contAt)
			sayIn(alice, fromAlice)
			sayIn(bob, fromBob)
		}
		if readyAfter != 0 && bobSaw == 0 && evalJS[bool](bob, confirmedJS(fromAlice)) {
			bobSaw = time.Since(contAt)
		}
		if readyAfter != 0 && aliceSaw == 0 && evalJS[bool](alice, confirmedJS(fromBob)) {
			aliceSaw = time.Since(contAt)
		}
		if time.Since(contAt) > walkResumeWithin && (bobSaw == 0 || aliceSaw == 0) {
			t.Fatalf("%v after Redis continued: both nodes ready after %v, bob sees alice's message after %v, alice sees bob's after %v (0: not yet)\nalice:\n%s\nbob:\n%s",
				walkResumeWithin, readyAfter, bobSaw, aliceSaw, alice.state(), bob.state())
		}
	}
	if readyAfter > walkReadyWithin {
		t.Errorf("both nodes ready %v after Redis continued, want within %v", readyAfter.Round(10*time.Millisecond), walkReadyWithin)
	}
	t.Logf("after SIGCONT: both nodes ready after %v; bob saw alice's message after %v, alice saw bob's after %v",
		readyAfter.Round(10*time.Millisecond), bobSaw.Round(10*time.Millisecond), aliceSaw.Round(10*time.Millisecond))
	alice.waitMessage(fromAlice, "Alice")
	bob.waitMessage(fromBob, "Bob")
	// Refused, it stays refused: still shown as failed (the page does not
	// send it again by itself), and stored nowhere.
	for _, send := range sends {
		if !evalJS[bool](send.p, failedJS(send.text)) {
			t.Errorf("%s: the message refused during the stop is no longer shown as failed:\n%s", send.p.name, send.p.state())
		}
		if n := storedCount(t, nodes[0].URL, roomID, send.text); n != 0 {
			t.Errorf("%s: the message refused during the stop is stored %d times, want 0", send.p.name, n)
		}
	}

	// ---- Bob bounced: node 2 → node 1 → node 2 ------------------------------
	var lastBounce time.Time
	for i, to := range []int{0, 1} {
		text := fmt.Sprintf("Bob, just before bounce %d.", i+1)
		dials := proxy.dialsTo(nodes[to].Addr)
		evalJS[bool](bob, `(window.walkDropped = roomchat.conn.ws, true)`)
		mark := bob.frameCount()
		// The node's answers stop at the proxy: the ack of this message is
		// lost in the drop, and the page must send it again on the other
		// node, which must answer with the first ack.
		proxy.hold()
		sayIn(bob, text)
		if !chattest.Poll(waitFor, func() bool { return storedCount(t, nodes[0].URL, roomID, text) == 1 }) {
			t.Fatalf("bounce %d: %q not stored within %v:\n%s", i+1, text, waitFor, bob.state())
		}
		bouncedAt := time.Now()
		proxy.repoint(nodes[to].Addr)
		bob.waitJS(fmt.Sprintf("a new connection after bounce %d", i+1), `roomchat.conn.ws !== window.walkDropped &&
			document.getElementById('status').dataset.state === 'connected' && roomchat.joined`)
		t.Logf("bounce %d (to node %d): bob connected and joined again %v after the drop", i+1, to+1, time.Since(bouncedAt).Round(100*time.Millisecond))
		lastBounce = bouncedAt
		if got := proxy.dialsTo(nodes[to].Addr); got <= dials {
			t.Fatalf("bounce %d: the proxy made no connection to node %d", i+1, to+1)
		}
		bob.waitMessage(text, "Bob")
		bob.waitJS("no message pending", `document.querySelectorAll('#messages .message.pending').length === 0`)
		alice.waitMessage(text, "Bob")
		checkSentAgain(t, i+1, bob.framesSince(mark), text)
		if got := evalJS[string](bob, `roomchat.userID`); got != bobID {
			t.Errorf("bounce %d: bob's userID is %q, want %q (resumed)", i+1, got, bobID)
		}
		if got := evalJS[string](bob, `document.getElementById('my-name').textContent`); got != "Bob" {
			t.Errorf("bounce %d: bob's page shows the name %q, want Bob", i+1, got)
		}
		if n := storedCount(t, nodes[to].URL, roomID, text); n != 1 {
			t.Errorf("bounce %d: %q is stored %d times, want once", i+1, text, n)
		}
		for _, p := range []*pageT{alice, bob} {
			if n := countText(p.messages(), text); n != 1 {
				t.Errorf("bounce %d: %s's page shows %q %d times, want once", i+1, p.name, text, n)
			}
		}
		watch.check()
	}

	// Chat goes on; then the rest of the grace period of the connections
	// Bob's page left behind passes without a leave.
	sayIn(bob, "Bob, back on node 2.")
	alice.waitMessage("Bob, back on node 2.", "Bob")
	sayIn(alice, "Alice, still on node 1.")
	bob.waitMessage("Alice, still on node 1.", "Alice")
	for time.Now().Before(lastBounce.Add(walkGrace + 2*time.Second)) {
		watch.poll()
	}
	watch.check()
	watch.finish()

	for _, p := range []*pageT{alice, bob} {
		checkOnceInOrder(t, p.name, p.messages())
		if err := p.problems(); err != nil {
			t.Error(err)
		}
	}
	for _, text := range []string{"Hello from node 1.", "Hello from node 2.", fromAlice, fromBob, "Bob, back on node 2.", "Alice, still on node 1."} {
		if n := storedCount(t, nodes[1].URL, roomID, text); n != 1 {
			t.Errorf("%q is stored %d times, want once", text, n)
		}
	}
}

// checkSentAgain checks, in the page's WebSocket events since just before
// it sent text, that the bounce did what it is for: the page sent text
// twice with one id (to the node it left, whose ack the proxy held back,
// and again to the node it moved to) and received one ack for that id.
func checkSentAgain(t *testing.T, bounce int, events []wsEvent, text string) {
	t.Helper()
	var ids []string
	for _, e := range events {
		var m struct {
			Message string `json:"message"`
		}
		if e.Sent && e.Type == "msg" && json.Unmarshal(e.Payload, &m) == nil && m.Message == text {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) != 2 || ids[0] != ids[1] {
		t.Fatalf("bounce %d: the page sent %q with the ids %q, want twice with one id (once to each node)", bounce, text, ids)
	}
	acks := 0
	for _, e := range events {
		if !e.Sent && e.Type == "ack" && e.ID == ids[0] {
			acks++
		}
	}
	if acks != 1 {
		t.Errorf("bounce %d: the page received %d acks for %q, want one (from the node it moved to)", bounce, acks, text)
	}
}

// stopSend is a message sent through a page's composer while Redis is
// stopped, after the stop began.
type stopSend struct {
	p          *pageT
	text       string
	after      time.Duration // into the stop
	sentAt     time.Time     // zero until sent
	errorAfter time.Duration // from sentAt to the page showing it failed; 0 until then
}

// poll sends the message once its time has come, and notes when the page
// first shows it as failed.
func (s *stopSend) poll(stoppedAt time.Time) {
	s.p.t.Helper()
	if s.sentAt.IsZero() {
		if time.Since(stoppedAt) < s.after {
			return
		}
		s.p.do(chromedp.SendKeys(chromedp.ID("message-input"), s.text))
		s.sentAt = time.Now()
		s.p.do(chromedp.SendKeys(chromedp.ID("message-input"), kb.Enter))
	}
	if s.errorAfter == 0 && evalJS[bool](s.p, failedJS(s.text)) {
		s.errorAfter = time.Since(s.sentAt)
	}
}

// check fails the test unless the page showed the message as failed
// within walkErrorWithin of the send, saying why in a sentence.
func (s *stopSend) check(t *testing.T) {
	t.Helper()
	switch {
	case s.sentAt.IsZero():
		t.Errorf("%s: %q was never sent", s.p.name, s.text)
		return
	case s.errorAfter == 0:
		t.Errorf("%s: %q is not shown as failed %v after it was sent, when Redis continues:\n%s", s.p.name, s.text, time.Since(s.sentAt).Round(100*time.Millisecond), s.p.state())
		return
	case s.errorAfter > walkErrorWithin:
		t.Errorf("%s: %q was shown as failed %v after it was sent, want within %v", s.p.name, s.text, s.errorAfter.Round(100*time.Millisecond), walkErrorWithin)
	}
	checkSentence(t, s.p, "The server cannot save messages right now, so your message was not sent. Try again shortly.", "store_unavailable")
	label := evalJS[string](s.p, `[...document.querySelectorAll('#messages .message.failed')].find(m => m.querySelector('.text').textContent === `+jsString(s.text)+`).querySelector('.state').textContent`)
	if !strings.HasPrefix(label, "Not sent. ") {
		t.Errorf("%s: the failed message says %q, want Not sent. and why", s.p.name, label)
	}
}

// walkStop is how long the walkthrough holds Redis stopped: $ROOMCHAT_WALK_STOP,
// or 10 s. It must leave room for the 5 s bound on the error.
func walkStop(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv(walkStopEnv)
	if v == "" {
		return 10 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		s, err2 := strconv.Atoi(v)
		if err2 != nil {
			t.Fatalf("%s=%q: want a duration (30s) or seconds (30): %v", walkStopEnv, v, err)
		}
		d = time.Duration(s) * time.Second
	}
	if d < walkErrorWithin+time.Second {
		t.Fatalf("%s=%v: want at least %v, so that the error shows during the stop", walkStopEnv, d, walkErrorWithin+time.Second)
	}
	return d
}

// startWalkNode starts the built roomchatd as make cluster does: on
// loopback, on rds, with every other setting at its default (grace,
// resume window, rate limit).
func startWalkNode(t *testing.T, rds *redistest.Server) *chattest.Server {
	t.Helper()
	return chattest.StartEnv(t, nil, "-addr", "127.0.0.1:0", "-db", ":memory:", "-redis", rds.URL())
}

// nodeReady reports whether node's GET /readyz answers 200 within a second.
func nodeReady(node *chattest.Server) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, node.URL+"/readyz", nil)
	if err != nil {
		return false
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// sayIn types text into p's composer and sends it with Enter.
func sayIn(p *pageT, text string) {
	p.t.Helper()
	p.do(chromedp.SendKeys(chromedp.ID("message-input"), text+kb.Enter))
}

// failedJS is true when p shows text as a message that was not sent.
func failedJS(text string) string {
	return `[...document.querySelectorAll('#messages .message.failed')].some(m => m.querySelector('.text')?.textContent === ` + jsString(text) + `)`
}

// confirmedJS is true when p shows text as a stored message (with a seq).
func confirmedJS(text string) string {
	return `[...document.querySelectorAll('#messages .message[data-seq]')].some(m => m.querySelector('.text')?.textContent === ` + jsString(text) + `)`
}

// storedCount is how many messages of roomID hold text, read from
// GET /api/rooms/{id}/messages on the node at base.
func storedCount(t *testing.T, base, roomID, text string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/rooms/"+url.PathEscape(roomID)+"/messages?limit=200", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %s %s", req.URL, res.Status, body)
	}
	var page struct {
		Messages []struct {
			Message string `json:"message"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(res.Body).Decode(&page); err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	n := 0
	for _, m := range page.Messages {
		if m.Message == text {
			n++
		}
	}
	return n
}

// ---- presence watch ---------------------------------------------------------

// presenceWatch checks that two pages keep showing each other in the room:
// the member list holds the other's userID under its name, the count stays
// 2, and no notice (a leave, a join, a history reset) is added. It polls
// both pages every walkPoll from Go, and a MutationObserver in each page
// records any change in between, however short.
type presenceWatch struct {
	t       *testing.T
	pages   [2]*pageT
	peers   [2]peer
	notices [2]int // notices on each page when the watch began
	start   time.Time
}

type peer struct{ id, name string }

const presenceStateJS = `(() => {
	const lis = [...document.querySelectorAll('#members li.member')];
	return {
		members: lis.map(li => li.dataset.userId + '=' + li.firstChild.textContent),
		count: document.getElementById('member-count').textContent,
		notices: [...document.querySelectorAll('#messages .notice')].map(n => n.textContent),
	};
})()`

type presenceState struct {
	Members []string `json:"members"`
	Count   string   `json:"count"`
	Notices []string `json:"notices"`
}

func newPresenceWatch(t *testing.T, a, b *pageT, aID, bID string) *presenceWatch {
	t.Helper()
	w := &presenceWatch{t: t, pages: [2]*pageT{a, b}, peers: [2]peer{{bID, "Bob"}, {aID, "Alice"}}, start: time.Now()}
	for i, p := range w.pages {
		w.notices[i] = len(evalJS[presenceState](p, presenceStateJS).Notices)
		evalJS[bool](p, fmt.Sprintf(`(() => {
			const peer = %s, name = %s, start = Date.now();
			window.walkFlickers = [];
			const note = (what) => window.walkFlickers.push(((Date.now() - start) / 1000).toFixed(2) + ' s: ' + what);
			const check = () => {
				const lis = [...document.querySelectorAll('#members li.member')];
				const li = lis.find(li => li.dataset.userId === peer);
				if (!li) note('member list without ' + name + ': ' + lis.map(li => li.textContent).join(', '));
				else if (li.firstChild.textContent !== name) note(name + ' listed as ' + li.firstChild.textContent);
				const count = document.getElementById('member-count').textContent;
				if (count !== '2') note('member count ' + count);
			};
			const opts = {childList: true, subtree: true, characterData: true};
			new MutationObserver(check).observe(document.getElementById('members'), opts);
			new MutationObserver(check).observe(document.getElementById('member-count'), opts);
			new MutationObserver((records) => {
				for (const r of records) for (const n of r.addedNodes) {
					if (n.nodeType === 1 && n.classList.contains('notice')) note('notice: ' + n.textContent);
				}
			}).observe(document.getElementById('messages'), {childList: true, subtree: true});
			return true;
		})()`, jsString(w.peers[i].id), jsString(w.peers[i].name)))
	}
	return w
}

// check polls both pages once and fails the test on anything but the
// other member, under its name, in a room of two, and no new notice.
func (w *presenceWatch) check() {
	w.t.Helper()
	at := time.Since(w.start).Round(100 * time.Millisecond)
	for i, p := range w.pages {
		s := evalJS[presenceState](p, presenceStateJS)
		want := w.peers[i].id + "=" + w.peers[i].name
		found := false
		for _, m := range s.Members {
			found = found || m == want
		}
		if !found || s.Count != "2" {
			w.t.Errorf("%s, %v into the watch: members %q (count %s), want %s among 2", p.name, at, s.Members, s.Count, want)
		}
		if len(s.Notices) > w.notices[i] {
			w.t.Errorf("%s, %v into the watch: new notices %q", p.name, at, s.Notices[w.notices[i]:])
			w.notices[i] = len(s.Notices)
		}
	}
}

// poll checks both pages, then waits walkPoll.
func (w *presenceWatch) poll() {
	w.t.Helper()
	w.check()
	time.Sleep(walkPoll)
}

// finish fails the test on anything the pages' observers recorded.
func (w *presenceWatch) finish() {
	w.t.Helper()
	for _, p := range w.pages {
		if got := evalJS[[]string](p, `window.walkFlickers`); len(got) > 0 {
			w.t.Errorf("%s's page showed, between polls:\n  %s", p.name, strings.Join(got, "\n  "))
		}
	}
}

// ---- the load balancer --------------------------------------------------------

// bounceProxy is a TCP proxy on loopback in front of one node, as a load
// balancer is. repoint sends new connections to another node and closes
// every connection it holds, so that a page's socket drops and its
// reconnect lands on the other node. hold stops forwarding what the node
// sends (until the next repoint), so that an answer can be lost in the
// drop.
type bounceProxy struct {
	ln net.Listener
	wg sync.WaitGroup // the accept loop and every connection's pumps

	mu     sync.Mutex
	target string                // guarded by mu: where new connections go
	gen    int                   // guarded by mu: counts repoints
	conns  map[net.Conn]struct{} // guarded by mu: both ends of every pair
	held   chan struct{}         // guarded by mu: non-nil while held; closed to release
	dials  map[string]int        // guarded by mu: connections made, by target
	closed bool                  // guarded by mu
}

// startBounceProxy listens on a free loopback port, forwards to target,
// and is closed (with every connection) when the test ends.
func startBounceProxy(t *testing.T, target string) *bounceProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &bounceProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, dials: map[string]int{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *bounceProxy) url() string { return "http://" + p.ln.Addr().String() }

// dialsTo is how many connections the proxy has made to target.
func (p *bounceProxy) dialsTo(target string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dials[target]
}

// hold stops forwarding what the nodes send, until the next repoint.
func (p *bounceProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = make(chan struct{})
	}
}

// repoint sends new connections to target and closes every connection the
// proxy holds. What a hold kept back is dropped with them.
func (p *bounceProxy) repoint(target string) {
	p.mu.Lock()
	p.target = target
	p.gen++
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	// Closed before the release: a pump let go writes to a closed
	// connection and nothing held reaches the page.
	for _, c := range conns {
		c.Close()
	}
	p.release()
}

func (p *bounceProxy) release() {
	p.mu.Lock()
	h := p.held
	p.held = nil
	p.mu.Unlock()
	if h != nil {
		close(h)
	}
}

// close stops accepting, closes every connection and waits for the pumps.
func (p *bounceProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.release()
	p.wg.Wait()
}

func (p *bounceProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		gen, target := p.gen, p.target
		if !p.track(c, gen) {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.dials[target]++
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(c, target, gen) })
	}
}

// track adds c to the connections repoint and close end, unless one of
// them came since generation gen. p.mu must be held.
func (p *bounceProxy) track(c net.Conn, gen int) bool {
	if p.closed || p.gen != gen {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *bounceProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// serve connects c to target and forwards both ways until either side
// closes or a repoint closes them.
func (p *bounceProxy) serve(c net.Conn, target string, gen int) {
	defer p.untrack(c)
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	ok := p.track(up, gen)
	p.mu.Unlock()
	if !ok {
		up.Close()
		return
	}
	defer p.untrack(up)
	p.wg.Go(func() {
		io.Copy(up, c)
		up.Close()
		c.Close()
	})
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			p.mu.Lock()
			h := p.held
			p.mu.Unlock()
			if h != nil {
				<-h
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
