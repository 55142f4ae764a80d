package web_test

// Browser test for paged catch-up (SPEC §4: joined.more and history).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/roomchat/roomchat/internal/protocol"
)

// TestBrowserCatchUp opens a room, stops the server, and stores 450
// messages through the HTTP API of a restarted server that does not listen
// yet, so the page cannot be connected while they are posted. Then the
// server listens, a script keeps posting while the page reconnects, and
// the page must show every seq exactly once and in order: the oldest page
// in joined.history, the rest through history requests (after = the last
// seq shown, one at a time), live messages that arrive meanwhile after the
// pages. A message typed during the outage is sent once the page has
// caught up.
func TestBrowserCatchUp(t *testing.T) {
	browser := newBrowser(t)
	limits := protocol.DefaultLimits()
	limits.Rate = 0 // 450 posts in a row from one address
	srv := startLimitedServer(t, filepath.Join(t.TempDir(), "roomchat.db"), limits)
	const roomID = "catch-up"
	const before, missed = 3, 450
	for i := 1; i <= before; i++ {
		srv.post(roomID, "script", fmt.Sprintf("before %d", i))
	}

	alice := newPage(t, browser, "alice")
	alice.do(chromedp.Navigate(srv.url() + "/r/" + roomID))
	alice.chooseName("Alice")
	alice.waitConnected()
	alice.waitMessage(fmt.Sprintf("before %d", before), "script")

	// ---- outage: the page cannot reconnect while the messages are stored --
	addr := srv.addr
	srv.stop()
	alice.waitJS("the reconnecting state", `document.getElementById('status').dataset.state === 'reconnecting'`)
	const typed = "Typed during the outage."
	alice.do(chromedp.SendKeys(chromedp.ID("message-input"), typed+kb.Enter))
	srv = restartServer(t, srv, addr)
	for i := 1; i <= missed; i++ {
		srv.postBeforeListening(roomID, "script", fmt.Sprintf("missed %d", i))
	}
	mark := alice.frameCount()
	srv.listen()

	// A script keeps posting while the page reconnects and pages, so that
	// live messages arrive before, during and after its catch-up.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var live int
	var liveErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err := srv.postErr(roomID, "script", fmt.Sprintf("live %d", live+1)); err != nil {
				liveErr = err
				return
			}
			live++
		}
	})
	// Skip the rest of the backoff wait: the restart test covers waiting.
	evalJS[bool](alice, `(roomchat.conn.reconnectNow(), true)`)
	alice.waitConnected()
	alice.waitMessage(typed, "Alice")
	close(stop)
	wg.Wait()
	if liveErr != nil {
		t.Fatalf("live post %d: %v", live+1, liveErr)
	}
	if live == 0 {
		t.Fatal("no live message was posted while the page caught up")
	}
	alice.waitMessage(fmt.Sprintf("live %d", live), "script")

	// ---- every seq once, in order, with the right text -------------------
	lastSeq := roomLastSeq(t, srv, roomID)
	if want := int64(before + missed + live + 1); lastSeq != want {
		t.Fatalf("room's last seq = %d, want %d (%d before, %d missed, %d live, 1 typed)", lastSeq, want, before, missed, live)
	}
	msgs := alice.messages()
	checkOnceInOrder(t, alice.name, msgs)
	var seqs []int64
	nextLive := 1
	typedSeen := 0
	for i, m := range msgs {
		seq, err := strconv.ParseInt(m.Seq, 10, 64)
		if err != nil {
			t.Fatalf("message %d %q has seq %q", i, m.Text, m.Seq)
		}
		seqs = append(seqs, seq)
		var want string
		switch {
		case seq <= before:
			want = fmt.Sprintf("before %d", seq)
		case seq <= before+missed:
			want = fmt.Sprintf("missed %d", seq-before)
		case m.Text == typed:
			typedSeen++
			continue
		default:
			want = fmt.Sprintf("live %d", nextLive)
			nextLive++
		}
		if m.Text != want {
			t.Errorf("seq %d shows %q, want %q", seq, m.Text, want)
		}
	}
	if int64(len(msgs)) != lastSeq || seqs[0] != 1 || seqs[len(seqs)-1] != lastSeq {
		t.Errorf("the page shows %d messages, seqs %d…%d; want every seq from 1 to %d once", len(msgs), seqs[0], seqs[len(seqs)-1], lastSeq)
	}
	if typedSeen != 1 {
		t.Errorf("%q shows %d times, want once", typed, typedSeen)
	}
	if n := evalJS[int](alice, `document.querySelectorAll('#messages .message.pending, #messages .message.failed').length`); n != 0 {
		t.Errorf("%d messages still pending or failed", n)
	}
	for _, n := range evalJS[[]string](alice, `[...document.querySelectorAll('#messages .notice')].map(n => n.textContent)`) {
		t.Errorf("notice %q after an outage on the same database", n)
	}

	// ---- how the page caught up -------------------------------------------
	checkCatchUp(t, alice.framesSince(mark), before)
	if err := alice.problems(); err != nil {
		t.Error(err)
	}
}

// checkCatchUp checks the WebSocket events of a reconnect after an outage:
// a join with since = the last seq shown, a joined with more: true and at
// most 200 messages, then history requests one at a time, each after the
// last seq shown so far, until the page reached joined.lastSeq; and no msg
// sent before the catch-up ended.
func checkCatchUp(t *testing.T, events []wsEvent, since int64) {
	t.Helper()
	var (
		joined      *protocol.Joined
		joinID      string
		shown       int64 // highest seq the pages brought so far
		outstanding string
		requests    int
		liveDuring  int // msg events that arrived while paging
		done        bool
	)
	for _, e := range events {
		switch {
		case e.Sent && e.Type == "join":
			var p protocol.Join
			if err := json.Unmarshal(e.Payload, &p); err != nil {
				t.Fatalf("join payload %s: %v", e.Payload, err)
			}
			if p.Since == nil || *p.Since != since {
				t.Errorf("join after the outage has since %v, want %d", p.Since, since)
			}
			joinID = e.ID
		case !e.Sent && e.Type == "joined" && joined == nil && e.ID == joinID:
			joined = new(protocol.Joined)
			if err := json.Unmarshal(e.Payload, joined); err != nil {
				t.Fatalf("joined payload: %v", err)
			}
			if !joined.More {
				t.Fatalf("joined after an outage of 450 messages has more: false (history holds %d messages, lastSeq %d): the server does not page", len(joined.History), joined.LastSeq)
			}
			if n := len(joined.History); n == 0 || n > 200 {
				t.Errorf("joined.history holds %d messages, want 1 to 200", n)
			}
			shown = joined.History[len(joined.History)-1].Seq
		case e.Sent && e.Type == "history":
			requests++
			if done {
				t.Errorf("history request %s after the catch-up ended", e.ID)
			}
			if outstanding != "" {
				t.Errorf("history request %s sent while %s was unanswered", e.ID, outstanding)
			}
			if len(e.ID) == 0 || len(e.ID) > 64 {
				t.Errorf("history request id %q: want 1 to 64 characters", e.ID)
			}
			var p protocol.HistoryRequest
			if err := json.Unmarshal(e.Payload, &p); err != nil {
				t.Fatalf("history payload %s: %v", e.Payload, err)
			}
			if p.RoomID == "" || p.After == nil || *p.After != shown {
				t.Errorf("history request %s: %s, want roomID and after %d (the last seq shown)", e.ID, e.Payload, shown)
			}
			outstanding = e.ID
		case !e.Sent && e.Type == "history":
			if e.ID != outstanding {
				t.Errorf("history reply %s, want the reply to %q", e.ID, outstanding)
				continue
			}
			outstanding = ""
			var p protocol.History
			if err := json.Unmarshal(e.Payload, &p); err != nil {
				t.Fatalf("history reply payload: %v", err)
			}
			if n := len(p.Messages); n > 200 {
				t.Errorf("history page of %d messages, want at most 200", n)
			}
			if n := len(p.Messages); n > 0 {
				shown = max(shown, p.Messages[n-1].Seq)
			}
			if shown >= joined.LastSeq || !p.More {
				done = true
			}
		case !e.Sent && e.Type == "msg" && joined != nil && !done:
			liveDuring++
		case e.Sent && e.Type == "msg" && joined != nil && !done:
			t.Errorf("msg %s sent before the catch-up ended", e.ID)
		case !e.Sent && e.Type == "error":
			t.Errorf("error %s: %s", e.ID, e.Payload)
		}
	}
	if joined == nil {
		t.Fatal("no joined after the outage")
	}
	// 450 missed messages and the live ones: joined holds at most 200, so at
	// least two pages follow.
	if requests < 2 {
		t.Errorf("%d history requests, want at least 2", requests)
	}
	if !done {
		t.Errorf("the catch-up did not end: last seq paged %d, joined.lastSeq %d, outstanding request %q", shown, joined.LastSeq, outstanding)
	}
	t.Logf("joined: %d messages, lastSeq %d; %d history requests; %d live msg events arrived while paging", len(joined.History), joined.LastSeq, requests, liveDuring)
}

// roomLastSeq reads a room's last seq from GET /api/rooms/{id}.
func roomLastSeq(t *testing.T, srv *testServer, roomID string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.url()+"/api/rooms/"+roomID, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var info struct {
		LastSeq int64 `json:"lastSeq"`
	}
	if err := json.NewDecoder(res.Body).Decode(&info); err != nil {
		t.Fatalf("GET %s: %s: %v", req.URL, res.Status, err)
	}
	return info.LastSeq
}
