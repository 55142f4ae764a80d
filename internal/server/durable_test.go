package server_test

// Durable history over real WebSocket connections to an in-process server
// whose store is a real SQLite file in t.TempDir() (SPEC §4 "Guarantees"):
// resume with
// since while others send, a retried msg after a lost ack, the grace
// period, the messages API and a failing store. The restart, kill -9,
// retention, start-up fault and shutdown tests run the roomchatd binary:
// see cmd/roomchatd/durable_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/sqlite"
)

// newSQLiteServer starts a server (rate limit off) whose store is a SQLite
// file at path. The store is closed after the server has shut down.
func newSQLiteServer(t *testing.T, path string, opts sqlite.Options, mod ...func(*server.Config)) (*chattest.InProcess, *sqlite.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the server's cleanup, so it runs after it.
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	mods := append([]func(*server.Config){chattest.NoRate, func(c *server.Config) { c.Store = st }}, mod...)
	return chattest.StartInProcess(t, mods...), st
}

func dbPath(t *testing.T) string { return filepath.Join(t.TempDir(), "roomchat.db") }

// catchUp follows SPEC §4's catch-up after j, the joined answer to a join
// with since: while more is true it asks for history pages after the last
// seq it has, until it has every seq up to j.LastSeq, buffering the live
// msg events that arrive meanwhile. It returns the messages in seq order,
// each once: j.History, the pages, then the buffered live ones after them.
func catchUp(t *testing.T, c *chattest.Client, roomID string, since int64, j protocol.Joined) []protocol.Message {
	t.Helper()
	out := j.History
	last := since
	if len(out) > 0 {
		last = out[len(out)-1].Seq
	}
	var live []protocol.Message
	for more, n := j.More, 0; more && last < j.LastSeq; n++ {
		id := fmt.Sprint("page-", n)
		c.Sendf(t, `{"type":"history","id":%q,"payload":{"roomID":%q,"after":%d}}`, id, roomID, last)
		for {
			f := c.Next(t)
			if f.Type == protocol.TypeMsg {
				live = append(live, chattest.MsgOf(t, f))
				continue
			}
			if f.Type != protocol.TypeHistory || f.ID != id {
				if f.Type == protocol.TypePresence || f.Type == protocol.TypeTyping {
					continue
				}
				t.Fatalf("waiting for history %s: got %s", id, f)
			}
			var h protocol.History
			chattest.Decode(t, f, &h)
			if len(h.Messages) == 0 {
				t.Fatalf("history after %d: empty page (more %v), want messages up to %d", last, h.More, j.LastSeq)
			}
			for _, m := range h.Messages {
				if m.Seq > last {
					out = append(out, m)
					last = m.Seq
				}
			}
			more = h.More
			break
		}
	}
	for _, m := range live {
		if m.Seq > last {
			out = append(out, m)
			last = m.Seq
		}
	}
	return out
}

// nextMsgs reads events until n msg events have arrived (skipping others)
// and returns the messages; it fails after d.
func nextMsgs(t *testing.T, c *chattest.Client, n int, d time.Duration) []protocol.Message {
	t.Helper()
	deadline := time.Now().Add(d)
	var out []protocol.Message
	for len(out) < n {
		f, err := c.Read(time.Until(deadline))
		if err != nil {
			t.Fatalf("got %d of %d msg events: %v", len(out), n, err)
		}
		if f.Type == protocol.TypeMsg {
			out = append(out, chattest.MsgOf(t, f))
		}
	}
	return out
}

// TestResumeSinceWhileOthersSend: a client drops mid-stream (no close frame)
// while three others keep sending; it reconnects with resume, joins with
// since = the last seq it saw, and ends up with every seq exactly once, in
// order, across the joined.history / live boundary.
func TestResumeSinceWhileOthersSend(t *testing.T) {
	ts, st := newSQLiteServer(t, dbPath(t), sqlite.Options{})
	const roomID = "resume"
	r := chattest.Dial(t, ts.URL, "")
	r.Join(t, roomID)
	const senders = 3
	var ss []*chattest.Client
	for range senders {
		c := chattest.Dial(t, ts.URL, "?batch=1")
		c.Join(t, roomID)
		ss = append(ss, c)
	}

	stop := make(chan struct{})
	stopOnce := sync.OnceFunc(func() { close(stop) })
	errs := make(chan error, senders)
	var wg sync.WaitGroup
	defer func() {
		stopOnce()
		wg.Wait()
	}()
	for i, c := range ss {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.Writef(`{"type":"msg","payload":{"message":"s%d k%d"}}`, i, k); err != nil {
					errs <- fmt.Errorf("sender %d: %w", i, err)
					return
				}
				time.Sleep(500 * time.Microsecond)
			}
		})
	}

	// Five times: see some messages, drop the TCP connection (no close
	// frame), wait while the others keep sending, resume and join with
	// since = the last seq seen. Across all of it the client must see
	// every seq once, in order.
	var got []int64 // every seq the client saw, in order
	got = append(got, chattest.Seqs(nextMsgs(t, r, 100, 20*time.Second))...)
	chattest.CheckSeqs(t, "before the first drop", got, 1, got[len(got)-1])
	var fromHistory, gaps int
	for cycle := range 5 {
		lastSeen := got[len(got)-1]
		r.Close()
		time.Sleep(time.Duration(cycle) * 30 * time.Millisecond) // 0 to 120 ms
		r2 := chattest.Dial(t, ts.URL, "?resume="+url.QueryEscape(r.Welcome.Resume))
		if r2.Welcome.UserID != r.Welcome.UserID {
			t.Fatalf("cycle %d: resumed userID = %q, want %q", cycle, r2.Welcome.UserID, r.Welcome.UserID)
		}
		r2.Sendf(t, `{"type":"join","payload":{"roomID":%q,"since":%d}}`, roomID, lastSeen)
		var j protocol.Joined
		chattest.Decode(t, r2.Expect(t, protocol.TypeJoined), &j)
		if j.Truncated {
			t.Fatalf("cycle %d: joined.truncated = true, want false (nothing was trimmed)", cycle)
		}
		caught := catchUp(t, r2, roomID, lastSeen, j)
		got = append(got, chattest.Seqs(caught)...)
		fromHistory += len(caught)
		if len(caught) > 0 {
			gaps++
		}
		got = append(got, chattest.Seqs(nextMsgs(t, r2, 60, 20*time.Second))...)
		chattest.CheckSeqs(t, fmt.Sprintf("cycle %d", cycle), got, 1, got[len(got)-1])
		r = r2
	}
	stopOnce()
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if gaps == 0 {
		t.Fatal("no joined.history had messages; the others were meant to send during the gaps")
	}

	// Every sender's last frame is processed once its ack arrives, and a
	// connection's messages get seqs in the order they were sent, so the
	// highest of these acks is the room's last seq.
	var last int64
	for i, c := range ss {
		c.Sendf(t, `{"type":"msg","id":"final","payload":{"message":"s%d final"}}`, i)
		last = max(last, c.AwaitAck(t, "final").Seq)
	}
	if ri, err := st.Room(context.Background(), roomID); err != nil || ri.LastSeq != last {
		t.Fatalf("store: lastSeq %d (err %v), want %d", ri.LastSeq, err, last)
	}
	if n := last - got[len(got)-1]; n > 0 {
		got = append(got, chattest.Seqs(nextMsgs(t, r, int(n), 20*time.Second))...)
	}
	r.Quiet(t, 100*time.Millisecond)
	chattest.CheckSeqs(t, "in all", got, 1, last)
	t.Logf("%d messages, %d of them through joined.history after 5 drops", last, fromHistory)
}

// TestRetryAfterLostAck: a client sends a msg with an id and its connection
// is cut before the ack; it resumes, joins again and re-sends the same id.
// Exactly one message exists, the ack names it, and another member sees
// neither a presence leave nor a join, through and past the grace period.
func TestRetryAfterLostAck(t *testing.T) {
	t.Parallel() // waits out grace periods
	cases := []struct {
		name string
		// stored waits until the other member has the message before the
		// drop, so the retry is certainly a duplicate.
		stored bool
	}{
		{"dropped right after writing", false},
		{"dropped after the message was stored", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const grace = time.Second
			ts, st := newSQLiteServer(t, dbPath(t), sqlite.Options{}, func(c *server.Config) { withRoom(c, room.Options{Grace: grace}) })
			const roomID = "retry"
			const frame = `{"type":"msg","id":"r-1","payload":{"message":"exactly once"}}`
			other := chattest.Dial(t, ts.URL, "")
			other.Join(t, roomID)
			a := chattest.Dial(t, ts.URL, "")
			a.Join(t, roomID)
			other.Expect(t, protocol.TypePresence)

			a.Send(t, frame)
			var seen []protocol.Message // what other received
			if tc.stored {
				seen = append(seen, chattest.MsgOf(t, other.Expect(t, protocol.TypeMsg)))
			}
			a.WS.CloseNow()
			dropped := time.Now()

			a2 := chattest.Dial(t, ts.URL, "?resume="+url.QueryEscape(a.Welcome.Resume))
			if a2.Welcome.UserID != a.Welcome.UserID {
				t.Fatalf("resumed userID = %q, want %q", a2.Welcome.UserID, a.Welcome.UserID)
			}
			a2.Sendf(t, `{"type":"join","payload":{"roomID":%q,"since":0}}`, roomID)
			var j protocol.Joined
			for j.RoomID == "" {
				// An ack of the first send may come first, on the new
				// connection: acks go to the user.
				f := a2.Next(t)
				switch f.Type {
				case protocol.TypeJoined:
					chattest.Decode(t, f, &j)
				case protocol.TypeAck:
				default:
					t.Fatalf("after resuming, got %s, want joined", f)
				}
			}
			if tc.stored && len(j.History) != 1 {
				t.Fatalf("joined.history has %d messages, want the stored one", len(j.History))
			}
			a2.Send(t, frame)
			ack := a2.AwaitAck(t, "r-1")

			msgs, err := st.Messages(context.Background(), roomID, store.Query{})
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 1 || msgs[0].Message != "exactly once" {
				t.Fatalf("stored %d messages (%v), want exactly one", len(msgs), msgs)
			}
			if ack.MsgID != msgs[0].ID || ack.Seq != msgs[0].Seq || ack.Seq != 1 {
				t.Fatalf("ack %+v, want msgID %q seq %d (the stored message)", ack, msgs[0].ID, msgs[0].Seq)
			}
			if msgs[0].From.UserID != a.Welcome.UserID {
				t.Fatalf("stored message is from %q, want %q", msgs[0].From.UserID, a.Welcome.UserID)
			}

			// The other member: the message once, and no presence at all,
			// until well past the end of the grace period.
			for {
				f, err := other.Read(time.Until(dropped.Add(grace + 700*time.Millisecond)))
				if err != nil {
					break
				}
				if f.Type != protocol.TypeMsg {
					t.Fatalf("the other member got %s; want no presence flicker", f)
				}
				seen = append(seen, chattest.MsgOf(t, f))
			}
			if len(seen) != 1 || seen[0].ID != ack.MsgID || seen[0].Seq != ack.Seq {
				t.Fatalf("the other member got %v, want the one message %s", seen, ack.MsgID)
			}
			// Still a member after the grace period: a2 receives the room.
			other.Send(t, `{"type":"msg","payload":{"message":"still there?"}}`)
			if m := nextMsgs(t, a2, 1, 5*time.Second)[0]; m.Seq != 2 {
				t.Fatalf("after the grace period the resumed client got seq %d, want 2", m.Seq)
			}
		})
	}
}

// TestGracePeriod: a connection dropped without a close frame is announced
// as a presence leave only after the grace period; a close frame or an
// explicit leave is announced at once.
func TestGracePeriod(t *testing.T) {
	const grace = time.Second
	ts, _ := newSQLiteServer(t, dbPath(t), sqlite.Options{}, func(c *server.Config) { withRoom(c, room.Options{Grace: grace}) })
	cases := []struct {
		name   string
		end    func(c *chattest.Client) // must not block: the clock runs
		atOnce bool
	}{
		{"drop without close frame", func(c *chattest.Client) { c.WS.CloseNow() }, false},
		{"close frame 1000", func(c *chattest.Client) { go c.WS.Close(websocket.StatusNormalClosure, "bye") }, true},
		{"close frame 1001", func(c *chattest.Client) { go c.WS.Close(websocket.StatusGoingAway, "page closed") }, true},
		{"explicit leave", func(c *chattest.Client) { c.Send(t, `{"type":"leave","payload":{}}`) }, true},
		// Resuming restores the userID only: a room not joined again is
		// left when the grace period ends.
		{"drop, resume, no re-join", func(c *chattest.Client) {
			c.WS.CloseNow()
			chattest.Dial(t, ts.URL, "?resume="+url.QueryEscape(c.Welcome.Resume))
		}, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			roomID := fmt.Sprintf("grace-%d", i)
			watcher := chattest.Dial(t, ts.URL, "")
			watcher.Join(t, roomID)
			c := chattest.Dial(t, ts.URL, "")
			c.Join(t, roomID)
			watcher.Expect(t, protocol.TypePresence)

			start := time.Now()
			tc.end(c)
			f, err := watcher.Read(3 * grace)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("no presence leave within %v: %v", 3*grace, err)
			}
			var p protocol.Presence
			if f.Type == protocol.TypePresence {
				chattest.Decode(t, f, &p)
			}
			if p.Event != protocol.PresenceLeave || p.User.UserID != c.Welcome.UserID || p.Count != 1 || p.RoomID != roomID {
				t.Fatalf("got %s, want a presence leave of %s with count 1", f, c.Welcome.UserID)
			}
			if tc.atOnce && elapsed > grace/2 {
				t.Fatalf("leave announced after %v, want at once (grace is %v)", elapsed, grace)
			}
			if !tc.atOnce && elapsed < grace {
				t.Fatalf("leave announced after %v, want no earlier than the grace period (%v)", elapsed, grace)
			}
			t.Logf("leave announced after %v", elapsed.Round(time.Millisecond))
			watcher.Quiet(t, 100*time.Millisecond)
		})
	}
}

// httpResult is one HTTP exchange.
type httpResult struct {
	status int
	ctype  string
	body   []byte
}

func doHTTP(t *testing.T, method, u, ctype string, body []byte) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return httpResult{res.StatusCode, res.Header.Get("Content-Type"), b}
}

// wantHTTPError checks a 4xx (or the given status) JSON {code, message}.
func wantHTTPError(t *testing.T, r httpResult, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d (%s), want %d", r.status, r.body, status)
	}
	if !strings.HasPrefix(r.ctype, "application/json") {
		t.Fatalf("Content-Type %q, want application/json", r.ctype)
	}
	var e protocol.Error
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	if e.Code == "" || e.Message == "" || (code != "" && e.Code != code) {
		t.Fatalf("error body %s, want {code:%q, message}", r.body, code)
	}
}

// messagePage is the body of GET /api/rooms/{id}/messages.
type messagePage struct {
	RoomID   string             `json:"roomID"`
	Messages []protocol.Message `json:"messages"`
	LastSeq  int64              `json:"lastSeq"`
}

// TestMessagesAPI: POST /api/rooms/{id}/messages stores a bot message and
// delivers it live; GET pages through history with before/after/limit;
// bad input gets 4xx {code,message}, never a 5xx.
func TestMessagesAPI(t *testing.T) {
	ts, _ := newSQLiteServer(t, dbPath(t), sqlite.Options{})
	const roomID = "paging"
	base := ts.URL + "/api/rooms/" + roomID + "/messages"
	member := chattest.Dial(t, ts.URL, "?batch=1")
	member.Join(t, roomID)

	const n = 120
	var posted []protocol.Message
	for i := 1; i <= n; i++ {
		r := doHTTP(t, http.MethodPost, base, "application/json", fmt.Appendf(nil, `{"name":"bot %d","message":"hello %d"}`, i%3, i))
		if r.status != http.StatusCreated {
			t.Fatalf("POST %d: status %d (%s), want 201", i, r.status, r.body)
		}
		var m protocol.Message
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatalf("POST %d: body %s: %v", i, r.body, err)
		}
		if m.Seq != int64(i) || m.ID == "" || m.RoomID != roomID || m.Message != fmt.Sprintf("hello %d", i) ||
			m.From.Name != fmt.Sprintf("bot %d", i%3) || m.From.UserID == "" || m.TS.IsZero() {
			t.Fatalf("POST %d: stored message %s", i, r.body)
		}
		posted = append(posted, m)
	}
	live := nextMsgs(t, member, n, 10*time.Second)
	for i, m := range live {
		if m.ID != posted[i].ID || m.Seq != posted[i].Seq || m.Message != posted[i].Message || !m.TS.Equal(posted[i].TS) {
			t.Fatalf("live msg %d = %+v, want the posted %+v", i, m, posted[i])
		}
	}
	member.Quiet(t, 50*time.Millisecond)

	get := func(t *testing.T, query string) messagePage {
		t.Helper()
		r := doHTTP(t, http.MethodGet, base+query, "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: status %d (%s)", query, r.status, r.body)
		}
		var p messagePage
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("GET %s: %s: %v", query, r.body, err)
		}
		if p.RoomID != roomID || p.LastSeq != n {
			t.Fatalf("GET %s: roomID %q lastSeq %d, want %q and %d", query, p.RoomID, p.LastSeq, roomID, n)
		}
		for _, m := range p.Messages {
			if want := posted[m.Seq-1]; m.ID != want.ID || m.Message != want.Message || m.From != want.From || !m.TS.Equal(want.TS) {
				t.Fatalf("GET %s: message %+v, want %+v", query, m, want)
			}
		}
		return p
	}
	pages := []struct {
		query    string
		from, to int64 // the seqs expected, oldest first
	}{
		{"", 71, 120},
		{"?limit=10", 111, 120},
		{"?limit=500", 1, 120},
		{"?before=71", 21, 70},
		{"?before=11&limit=5", 6, 10},
		{"?before=3", 1, 2},
		{"?after=100", 101, 120},
		{"?after=10&limit=5", 11, 15},
		{"?after=10&before=20", 11, 19},
		{"?after=120", 1, 0},
		{"?before=1", 1, 0},
		// after=0 is "after seq 0": the oldest page (docs/scripting.md
		// pages a whole room from after=0), not the newest.
		{"?after=0&limit=1", 1, 1},
		{"?after=0", 1, 50},
	}
	for _, pg := range pages {
		t.Run("GET"+pg.query, func(t *testing.T) {
			p := get(t, pg.query)
			chattest.CheckSeqs(t, pg.query, chattest.Seqs(p.Messages), pg.from, pg.to)
		})
	}

	t.Run("page forward with after", func(t *testing.T) {
		var seqs []int64
		for after := int64(0); ; {
			p := get(t, fmt.Sprintf("?after=%d&limit=7", after))
			if len(p.Messages) == 0 {
				break
			}
			seqs = append(seqs, chattest.Seqs(p.Messages)...)
			after = p.Messages[len(p.Messages)-1].Seq
		}
		chattest.CheckSeqs(t, "forward", seqs, 1, n)
	})
	t.Run("page backward with before", func(t *testing.T) {
		var pagesSeen [][]int64
		p := get(t, "?limit=13")
		for len(p.Messages) > 0 {
			pagesSeen = append(pagesSeen, chattest.Seqs(p.Messages))
			p = get(t, fmt.Sprintf("?before=%d&limit=13", p.Messages[0].Seq))
		}
		var seqs []int64
		for i := len(pagesSeen) - 1; i >= 0; i-- {
			seqs = append(seqs, pagesSeen[i]...)
		}
		chattest.CheckSeqs(t, "backward", seqs, 1, n)
	})
	t.Run("unknown room", func(t *testing.T) {
		r := doHTTP(t, http.MethodGet, ts.URL+"/api/rooms/nobody-here/messages", "", nil)
		if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"messages":[]`)) || !bytes.Contains(r.body, []byte(`"lastSeq":0`)) {
			t.Fatalf("GET unknown room: %d %s, want 200, an empty page and lastSeq 0", r.status, r.body)
		}
	})

	badQueries := []string{
		"?limit=0", "?limit=501", "?limit=-1", "?limit=abc", "?limit=1.5", "?limit=", "?limit=99999999999999999999",
		"?before=-1", "?before=x", "?after=-5", "?after=1e3", "?after=%20",
	}
	for _, q := range badQueries {
		t.Run("GET bad "+q, func(t *testing.T) {
			r := doHTTP(t, http.MethodGet, base+q, "", nil)
			if q == "?limit=" {
				// An empty value is the same as none: the default page.
				if r.status != http.StatusOK {
					t.Fatalf("status %d (%s), want 200", r.status, r.body)
				}
				return
			}
			wantHTTPError(t, r, http.StatusBadRequest, protocol.CodeBadPayload)
		})
	}
	t.Run("GET bad room ID", func(t *testing.T) {
		wantHTTPError(t, doHTTP(t, http.MethodGet, ts.URL+"/api/rooms/a.b/messages", "", nil), http.StatusBadRequest, "")
		wantHTTPError(t, doHTTP(t, http.MethodGet, ts.URL+"/api/rooms/"+strings.Repeat("x", 65)+"/messages", "", nil), http.StatusBadRequest, "")
	})

	badBodies := []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"not JSON", []byte("hello"), 400, protocol.CodeBadJSON},
		{"empty", nil, 400, protocol.CodeBadJSON},
		{"truncated", []byte(`{"message":"hi"`), 400, protocol.CodeBadJSON},
		{"array", []byte(`["hi"]`), 400, ""},
		{"string", []byte(`"hi"`), 400, ""},
		{"null", []byte(`null`), 400, ""},
		{"duplicated key", []byte(`{"message":"a","message":"b"}`), 400, protocol.CodeBadJSON},
		{"duplicated name", []byte(`{"name":"a","name":"b","message":"x"}`), 400, protocol.CodeBadJSON},
		{"missing message", []byte(`{"name":"bot"}`), 400, protocol.CodeBadPayload},
		{"message key case", []byte(`{"Message":"hi"}`), 400, protocol.CodeBadPayload},
		{"blank message", []byte(`{"message":"  \n "}`), 400, protocol.CodeBadPayload},
		{"message not string", []byte(`{"message":42}`), 400, protocol.CodeBadPayload},
		{"message too long", fmt.Appendf(nil, `{"message":%q}`, strings.Repeat("é", 4001)), 400, protocol.CodeTooLong},
		{"name too long", fmt.Appendf(nil, `{"name":%q,"message":"x"}`, strings.Repeat("n", 33)), 400, ""},
		{"name control char", []byte(`{"name":"a\u0007b","message":"x"}`), 400, protocol.CodeBadPayload},
		{"invalid UTF-8", []byte("{\"message\":\"\xff\xfe\"}"), 400, ""},
		{"body over 64 KiB", fmt.Appendf(nil, `{"message":%q}`, strings.Repeat("a", 70<<10)), 413, protocol.CodeTooLarge},
	}
	for _, tc := range badBodies {
		t.Run("POST "+tc.name, func(t *testing.T) {
			wantHTTPError(t, doHTTP(t, http.MethodPost, base, "application/json", tc.body), tc.status, tc.code)
		})
	}
	// None of that stored anything or reached the member.
	if p := get(t, "?limit=1"); p.LastSeq != n {
		t.Fatalf("lastSeq %d after bad posts, want %d", p.LastSeq, n)
	}
	member.Quiet(t, 50*time.Millisecond)

	t.Run("POST without name, unknown field", func(t *testing.T) {
		r := doHTTP(t, http.MethodPost, base, "application/json", []byte(`{"message":"anonymous","extra":{"x":1}}`))
		if r.status != http.StatusCreated {
			t.Fatalf("status %d (%s), want 201", r.status, r.body)
		}
		var m protocol.Message
		if err := json.Unmarshal(r.body, &m); err != nil || m.Seq != n+1 || m.From.Name == "" {
			t.Fatalf("stored %s (%v), want seq %d with a default name", r.body, err, n+1)
		}
		if got := nextMsgs(t, member, 1, 5*time.Second)[0]; got.ID != m.ID {
			t.Fatalf("member got %+v, want %s", got, m.ID)
		}
	})
}

// TestStoreUnavailable holds SQLite's write lock from a second connection:
// a msg gets store_unavailable (with its id) and no ack, /readyz says 503,
// the connection and other rooms keep working, and once the lock is gone
// every room stores again with no gap in seq and /readyz says 200.
func TestStoreUnavailable(t *testing.T) {
	path := dbPath(t)
	ts, st := newSQLiteServer(t, path, sqlite.Options{BusyTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	a := chattest.Dial(t, ts.URL, "")
	a.Join(t, "one")
	b := chattest.Dial(t, ts.URL, "")
	b.Join(t, "two")
	a.Send(t, `{"type":"msg","id":"ok-1","payload":{"message":"before the fault"}}`)
	if ack := a.AwaitAck(t, "ok-1"); ack.Seq != 1 {
		t.Fatalf("first ack seq %d, want 1", ack.Seq)
	}
	ready := func() httpResult { return doHTTP(t, http.MethodGet, ts.URL+"/readyz", "", nil) }
	if r := ready(); r.status != http.StatusOK {
		t.Fatalf("/readyz before the fault: %d %s", r.status, r.body)
	}

	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(100)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lock, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			lock.ExecContext(ctx, "ROLLBACK")
		}
	}()

	for _, c := range []*chattest.Client{a, b} {
		c.Send(t, `{"type":"msg","id":"f-1","payload":{"message":"during the fault"}}`)
		f := c.Next(t)
		var e protocol.Error
		if f.Type == protocol.TypeError {
			chattest.Decode(t, f, &e)
		}
		if f.ID != "f-1" || e.Code != protocol.CodeStoreUnavailable || e.Message == "" {
			t.Fatalf("msg while the store is locked: got %s, want error store_unavailable with id f-1", f)
		}
		// The connection stays usable.
		c.Send(t, `{"type":"ping","id":"p"}`)
		if f := c.Expect(t, protocol.TypePong); f.ID != "p" {
			t.Fatalf("pong %s", f)
		}
	}
	if r := ready(); r.status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while the store is locked: %d %s, want 503", r.status, r.body)
	} else {
		wantHTTPError(t, r, http.StatusServiceUnavailable, protocol.CodeStoreUnavailable)
	}
	r := doHTTP(t, http.MethodPost, ts.URL+"/api/rooms/two/messages", "application/json", []byte(`{"message":"bot during the fault"}`))
	wantHTTPError(t, r, http.StatusServiceUnavailable, protocol.CodeStoreUnavailable)
	// Reads do not need the write lock (WAL): joining with history and
	// paging still work while writes fail.
	late := chattest.Dial(t, ts.URL, "")
	if j := late.Join(t, "one"); len(j.History) != 1 || j.History[0].Message != "before the fault" || j.LastSeq != 1 {
		t.Fatalf("join during the fault: history %v lastSeq %d, want the one stored message", j.History, j.LastSeq)
	}
	a.Expect(t, protocol.TypePresence)
	if r := doHTTP(t, http.MethodGet, ts.URL+"/api/rooms/one/messages", "", nil); r.status != http.StatusOK || !bytes.Contains(r.body, []byte("before the fault")) {
		t.Fatalf("GET messages during the fault: %d %s", r.status, r.body)
	}
	// No ack, no msg came later for the failed sends.
	a.Quiet(t, 200*time.Millisecond)
	b.Quiet(t, 0)

	if _, err := lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	locked = false
	var last httpResult
	if !chattest.Poll(10*time.Second, func() bool { last = ready(); return last.status == http.StatusOK }) {
		t.Fatalf("/readyz still not 200 10 s after the lock is gone: %s", last.body)
	}
	b.Send(t, `{"type":"msg","id":"ok-2","payload":{"message":"after the fault"}}`)
	if ack := b.AwaitAck(t, "ok-2"); ack.Seq != 1 {
		t.Fatalf("room two after the fault: seq %d, want 1 (the failed message used none)", ack.Seq)
	}
	a.Send(t, `{"type":"msg","id":"ok-3","payload":{"message":"after the fault"}}`)
	if ack := a.AwaitAck(t, "ok-3"); ack.Seq != 2 {
		t.Fatalf("room one after the fault: seq %d, want 2 (no gap)", ack.Seq)
	}
	if m := nextMsgs(t, late, 1, 5*time.Second)[0]; m.Seq != 2 {
		t.Fatalf("the member who joined during the fault got seq %d, want 2", m.Seq)
	}
	// Re-sending the failed id now stores it: nothing of it was kept.
	a.Send(t, `{"type":"msg","id":"f-1","payload":{"message":"during the fault"}}`)
	if ack := a.AwaitAck(t, "f-1"); ack.Seq != 3 {
		t.Fatalf("retried failed id: seq %d, want 3 (a new message)", ack.Seq)
	}
	for room, want := range map[string][]string{"one": {"before the fault", "after the fault", "during the fault"}, "two": {"after the fault"}} {
		msgs, err := st.Messages(ctx, room, store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range msgs {
			got = append(got, m.Message)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("room %s holds %q, want %q", room, got, want)
		}
		chattest.CheckSeqs(t, "room "+room, chattest.Seqs(msgs), 1, int64(len(want)))
	}
}

// TestWelcomeFirstAfterResume: a client that drops while acks for its msgs
// are still coming and resumes at once gets welcome first on the new
// connection; the late acks follow it. (They come late because the server
// still reads the frames a dropped connection had sent.)
func TestWelcomeFirstAfterResume(t *testing.T) {
	ts, _ := newSQLiteServer(t, dbPath(t), sqlite.Options{Synchronous: "NORMAL"})
	a := chattest.Dial(t, ts.URL, "")
	a.Join(t, "late-acks")
	token := a.Welcome.Resume
	for round := range 40 {
		for i := range 200 {
			a.Sendf(t, `{"type":"msg","id":"%d-%d","payload":{"message":"x"}}`, round, i)
		}
		a.WS.CloseNow()
		a = chattest.DialNoWelcome(t, ts.URL, "?resume="+url.QueryEscape(token), nil)
		if f := a.Next(t); f.Type != protocol.TypeWelcome {
			t.Fatalf("round %d: the resumed connection's first frame is %s, want welcome", round, f)
		} else {
			chattest.Decode(t, f, &a.Welcome)
		}
		token = a.Welcome.Resume
		a.Sendf(t, `{"type":"join","payload":{"roomID":"late-acks","since":%d}}`, int64(1)<<40)
		for a.Next(t).Type != protocol.TypeJoined {
		}
	}
}

// TestResumeToken: a resume token works once (the new connection gets a
// fresh one), works while the old connection is still open (which is then
// closed with 1000 and no presence flicker), and stops working after the
// resume window.
func TestResumeToken(t *testing.T) {
	t.Parallel() // waits out grace periods
	const grace, window = 300 * time.Millisecond, 600 * time.Millisecond
	ts, _ := newSQLiteServer(t, dbPath(t), sqlite.Options{}, func(c *server.Config) {
		withRoom(c, room.Options{Grace: grace, ResumeWindow: window})
	})
	other := chattest.Dial(t, ts.URL, "")
	other.Join(t, "tok")
	a := chattest.Dial(t, ts.URL, "")
	a.Join(t, "tok")
	other.Expect(t, protocol.TypePresence)

	// Resume while a is still open: a is closed with 1000, a2 is the same
	// user, and re-joining is silent.
	a2 := chattest.Dial(t, ts.URL, "?resume="+url.QueryEscape(a.Welcome.Resume))
	if a2.Welcome.UserID != a.Welcome.UserID || a2.Welcome.Resume == a.Welcome.Resume || a2.Welcome.Resume == "" {
		t.Fatalf("resumed welcome %+v; want userID %s and a new token", a2.Welcome, a.Welcome.UserID)
	}
	a.ExpectClose(t, websocket.StatusNormalClosure)
	a2.Join(t, "tok")
	other.Quiet(t, grace+300*time.Millisecond)
	other.Send(t, `{"type":"msg","payload":{"message":"to the resumed"}}`)
	if m := nextMsgs(t, a2, 1, 5*time.Second)[0]; m.Message != "to the resumed" {
		t.Fatalf("resumed connection got %+v", m)
	}

	// The used token stops working once its overlap (a quarter of the
	// resume window here) is over: a new user.
	time.Sleep(window/4 + 100*time.Millisecond)
	if w := chattest.Dial(t, ts.URL, "?resume="+url.QueryEscape(a.Welcome.Resume)).Welcome; w.UserID == a.Welcome.UserID {
		t.Fatal("a used resume token resumed the user again after its overlap")
	}
	// An unknown token: a new user, no error.
	if w := chattest.Dial(t, ts.URL, "?resume=no-such-token").Welcome; w.UserID == "" || w.UserID == a.Welcome.UserID {
		t.Fatalf("unknown token: welcome %+v", w)
	}

	// After a drop the token works within the window only.
	a2.WS.CloseNow()
	p := protocol.Presence{}
	chattest.Decode(t, other.Await(t, protocol.TypePresence), &p)
	if p.Event != protocol.PresenceLeave || p.User.UserID != a.Welcome.UserID {
		t.Fatalf("after the grace period: %+v, want a leave of %s", p, a.Welcome.UserID)
	}
	time.Sleep(window + 300*time.Millisecond)
	if w := chattest.Dial(t, ts.URL, "?resume="+url.QueryEscape(a2.Welcome.Resume)).Welcome; w.UserID == a.Welcome.UserID {
		t.Fatalf("token resumed %s after the resume window (%v) had passed", w.UserID, window)
	}
}

// TestGraceRestartsOnEachDrop: a client that drops, resumes and re-joins
// within the grace period, then drops again, gets a whole grace period
// after its second drop before the others see it leave.
func TestGraceRestartsOnEachDrop(t *testing.T) {
	t.Parallel() // waits out grace periods
	const grace = time.Second
	ts, _ := newSQLiteServer(t, dbPath(t), sqlite.Options{}, func(c *server.Config) { withRoom(c, room.Options{Grace: grace}) })
	watcher := chattest.Dial(t, ts.URL, "")
	watcher.Join(t, "flaky")
	a := chattest.Dial(t, ts.URL, "")
	a.Join(t, "flaky")
	watcher.Expect(t, protocol.TypePresence)

	a.WS.CloseNow()
	time.Sleep(100 * time.Millisecond)
	a2 := chattest.Dial(t, ts.URL, "?resume="+url.QueryEscape(a.Welcome.Resume))
	a2.Join(t, "flaky")
	time.Sleep(grace / 2)
	second := time.Now()
	a2.WS.CloseNow()

	f, err := watcher.Read(3 * grace)
	elapsed := time.Since(second)
	if err != nil {
		t.Fatalf("no presence leave within %v after the second drop: %v", 3*grace, err)
	}
	if f.Type != protocol.TypePresence || !strings.Contains(string(f.Payload), `"leave"`) {
		t.Fatalf("got %s, want a presence leave", f)
	}
	if elapsed < grace {
		t.Fatalf("leave announced %v after the second drop, want a whole grace period (%v): the first drop's timer ended it", elapsed.Round(time.Millisecond), grace)
	}
}

// TestKeepaliveTimeoutIsADrop: a connection that stops answering pings (a
// half-open peer) is closed PingTimeout after its first unanswered ping,
// which comes between PingInterval/2 and PingInterval after connecting
// (the keepalive wheel deals connections over half its slots), and, being
// a drop, announced as a leave one grace period later.
func TestKeepaliveTimeoutIsADrop(t *testing.T) {
	t.Parallel()
	const ping, pingTimeout, grace = 200 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond
	ts, _ := newSQLiteServer(t, dbPath(t), sqlite.Options{}, func(c *server.Config) {
		c.PingInterval, c.PingTimeout = ping, pingTimeout
		withRoom(c, room.Options{Grace: grace})
	})
	watcher := chattest.Dial(t, ts.URL, "")
	watcher.Join(t, "half-open")

	// A raw client: handshake, one join frame, then it never reads again,
	// so it answers no ping.
	nc, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if res, err := http.ReadResponse(bufio.NewReader(nc), nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	join := []byte(`{"type":"join","payload":{"roomID":"half-open"}}`)
	// FIN + text, masked with the key 0,0,0,0 (which leaves the payload as is).
	nc.Write(append([]byte{0x81, 0x80 | byte(len(join)), 0, 0, 0, 0}, join...))
	start := time.Now()
	f := watcher.Expect(t, protocol.TypePresence)
	if !strings.Contains(string(f.Payload), `"join"`) {
		t.Fatalf("got %s, want the raw client's presence join", f)
	}
	f, err = watcher.Read(10 * time.Second)
	elapsed := time.Since(start)
	if err != nil || f.Type != protocol.TypePresence || !strings.Contains(string(f.Payload), `"leave"`) {
		t.Fatalf("got %v (%v), want a presence leave of the half-open client", f, err)
	}
	// The wheel checks at its ticks (PingInterval/25 here), so the timeout
	// is met to within a tick or two: half of it is the lower bound.
	if least := ping/2 + pingTimeout/2 + grace; elapsed < least {
		t.Fatalf("leave after %v, want no earlier than half an interval, the timeout and a grace period, %v", elapsed, least)
	}
	if most := ping + pingTimeout + grace; elapsed > most+time.Second {
		t.Fatalf("leave after %v, want it within interval + timeout + grace = %v (and a second of slack)", elapsed, most)
	}
	t.Logf("half-open client left after %v", elapsed.Round(time.Millisecond))
}
