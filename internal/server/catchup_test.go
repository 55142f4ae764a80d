package server_test

// Tests of protocol 1.1 (SPEC §4): paged catch-up, the byte budget of a
// reply, a slow reader catching up, join storms on a large room, request
// ids, the members cap, custom events and POST rules.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/sqlite"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// seed appends n messages of text(i) to roomID straight into st, with no
// rate limit in the way, and returns once all are stored.
func seed(t *testing.T, st store.Store, roomID string, n int, text func(i int) string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for i := 1; i <= n; i++ {
		m := storetest.Msg(roomID, text(i))
		m.ID = fmt.Sprint("seed-", i)
		wg.Add(1)
		st.Append(m, "", func(_ protocol.Message, _ bool, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
			wg.Done()
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("seeding %s: %v", roomID, err)
	default:
	}
}

// TestPagedCatchUp: in a room with 700 messages, join since 0 gives at
// most 200 and more; paging with history yields 1..700 exactly once and in
// order while another member sends, whose messages arrive live with seq >
// joined.lastSeq.
func TestPagedCatchUp(t *testing.T) {
	ts, st := newSQLiteServer(t, dbPath(t), sqlite.Options{})
	seed(t, st, "big", 700, func(i int) string { return fmt.Sprint("old ", i) })

	sender := chattest.Dial(t, ts.URL, "")
	sender.Join(t, "big")
	r := chattest.Dial(t, ts.URL, "?batch=1")
	r.Send(t, `{"type":"join","payload":{"roomID":"big","since":0}}`)
	var j protocol.Joined
	chattest.Decode(t, r.Expect(t, protocol.TypeJoined), &j)
	if len(j.History) == 0 || len(j.History) > 200 || !j.More || j.LastSeq != 700 || j.History[0].Seq != 1 {
		t.Fatalf("joined since 0: %d messages from %v, more %v, lastSeq %d; want 1..≤200, more, lastSeq 700", len(j.History), chattest.Seqs(j.History[:min(3, len(j.History))]), j.More, j.LastSeq)
	}

	// Live traffic while the reader pages.
	const live = 50
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range live {
			if err := sender.Writef(`{"type":"msg","payload":{"message":"live %d"}}`, i); err != nil {
				t.Errorf("live sender: %v", err)
				return
			}
		}
	}()
	got := catchUp(t, r, "big", 0, j)
	<-done
	last := got[len(got)-1].Seq
	if last < 700+live {
		got = append(got, nextMsgs(t, r, int(700+live-last), 10*time.Second)...)
	}
	chattest.CheckSeqs(t, "history pages and live messages", chattest.Seqs(got), 1, 700+live)
	for _, m := range got[700:] {
		if !strings.HasPrefix(m.Message, "live ") {
			t.Fatalf("seq %d is %q, want a live message after the 700 stored ones", m.Seq, m.Message)
		}
	}

	// A page after the end is empty, without more; paging needs the room.
	r.Send(t, `{"type":"history","id":"end","payload":{"roomID":"big","after":750}}`)
	var h protocol.History
	chattest.Decode(t, r.Await(t, protocol.TypeHistory), &h)
	if len(h.Messages) != 0 || h.More {
		t.Fatalf("history after the last seq: %d messages, more %v; want none", len(h.Messages), h.More)
	}
	r.Send(t, `{"type":"history","id":"lim","payload":{"roomID":"big","after":10,"limit":3}}`)
	chattest.Decode(t, r.Await(t, protocol.TypeHistory), &h)
	if !slices.Equal(chattest.Seqs(h.Messages), []int64{11, 12, 13}) || !h.More {
		t.Fatalf("history after 10 limit 3: %v more %v", chattest.Seqs(h.Messages), h.More)
	}
	out := chattest.Dial(t, ts.URL, "")
	out.Send(t, `{"type":"history","id":"x","payload":{"roomID":"big","after":0}}`)
	out.ExpectError(t, protocol.CodeNotInRoom)
}

// TestHistoryBadInput: every bad history request gets its error, with the
// request's id, and the connection stays usable.
func TestHistoryBadInput(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	c := chattest.Dial(t, ts.URL, "")
	c.Join(t, "h")
	for _, tc := range []struct{ frame, code, field string }{
		{`{"type":"history","id":"a","payload":{"roomID":"h"}}`, protocol.CodeBadPayload, "after"},
		{`{"type":"history","id":"a","payload":{"roomID":"h","after":-1}}`, protocol.CodeBadPayload, "after"},
		{`{"type":"history","id":"a","payload":{"roomID":"h","after":"1"}}`, protocol.CodeBadPayload, "after"},
		{`{"type":"history","id":"a","payload":{"roomID":"h","after":0,"limit":201}}`, protocol.CodeBadPayload, "limit"},
		{`{"type":"history","id":"a","payload":{"roomID":"h","after":0,"limit":-5}}`, protocol.CodeBadPayload, "limit"},
		{`{"type":"history","id":"a","payload":{"roomID":"no such!","after":0}}`, protocol.CodeBadPayload, "roomID"},
		{`{"type":"history","id":"a","payload":{"roomID":"other","after":0}}`, protocol.CodeNotInRoom, ""},
	} {
		c.Send(t, tc.frame)
		f := c.Expect(t, protocol.TypeError)
		var e protocol.Error
		chattest.Decode(t, f, &e)
		if e.Code != tc.code || e.Field != tc.field || f.ID != "a" {
			t.Errorf("%s → %s; want code %s field %q id a", tc.frame, f, tc.code, tc.field)
		}
	}
	c.Send(t, `{"type":"ping","id":"p"}`)
	c.Expect(t, protocol.TypePong)
}

// bigText is a 4000-character message whose JSON takes several bytes per
// character: control characters (\u00XX), quotes and non-ASCII letters.
func bigText(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%06d ", i)
	pattern := []rune{'\x01', '"', 'é', '\\', '€', '\x1f', 'a', '<'}
	for n := 7; n < 4000; n++ {
		b.WriteRune(pattern[n%len(pattern)])
	}
	return b.String()
}

// TestReplyByteBudget: with messages that JSON-escape to several bytes a
// character, no joined or history frame holds more than MaxPageBytes of
// messages, every page holds at least one message, and paging still
// yields every seq once.
func TestReplyByteBudget(t *testing.T) {
	ts, st := newSQLiteServer(t, dbPath(t), sqlite.Options{})
	const n = 300
	seed(t, st, "fat", n, bigText)
	lim := protocol.DefaultLimits()
	one := protocol.EncodedSize(protocol.Message{ID: strings.Repeat("x", 21), RoomID: "fat", Seq: 1, From: protocol.User{UserID: "u1", Name: "alice"}, Message: bigText(1), TS: time.Now()})
	if one < 5*4000/2 {
		t.Fatalf("a test message encodes to %d bytes; want several per character", one)
	}
	// The envelope around the messages: type, id, roomID, members, you…
	const overhead = 4 << 10
	c := chattest.Dial(t, ts.URL, "")
	c.Send(t, `{"type":"join","payload":{"roomID":"fat","since":0}}`)
	f := c.Expect(t, protocol.TypeJoined)
	var j protocol.Joined
	chattest.Decode(t, f, &j)
	if len(f.Raw) > lim.MaxPageBytes+overhead || len(j.History) == 0 || !j.More {
		t.Fatalf("joined: %d bytes, %d messages, more %v; want ≤ %d bytes, ≥ 1 message, more", len(f.Raw), len(j.History), j.More, lim.MaxPageBytes+overhead)
	}
	got := j.History
	for page := 0; ; page++ {
		after := got[len(got)-1].Seq
		c.Sendf(t, `{"type":"history","id":"p%d","payload":{"roomID":"fat","after":%d}}`, page, after)
		f := c.Expect(t, protocol.TypeHistory)
		var h protocol.History
		chattest.Decode(t, f, &h)
		if len(f.Raw) > lim.MaxPageBytes+overhead || len(h.Messages) == 0 {
			t.Fatalf("history page %d: %d bytes, %d messages; want ≤ %d bytes and ≥ 1 message", page, len(f.Raw), len(h.Messages), lim.MaxPageBytes+overhead)
		}
		got = append(got, h.Messages...)
		if !h.More {
			break
		}
	}
	chattest.CheckSeqs(t, "pages of large messages", chattest.Seqs(got), 1, n)
	// Without since, the newest messages that fit, ending at the last.
	c2 := chattest.Dial(t, ts.URL, "")
	f = func() chattest.Frame {
		c2.Send(t, `{"type":"join","payload":{"roomID":"fat"}}`)
		return c2.Expect(t, protocol.TypeJoined)
	}()
	chattest.Decode(t, f, &j)
	if len(f.Raw) > lim.MaxPageBytes+overhead || len(j.History) == 0 || j.History[len(j.History)-1].Seq != n || j.More {
		t.Fatalf("joined without since: %d bytes, %d messages ending at %d, more %v", len(f.Raw), len(j.History), j.History[len(j.History)-1].Seq, j.More)
	}
}

// slowConn reads at most rate bytes per second: a client on a slow link.
type slowConn struct {
	net.Conn
	rate int
}

func (c *slowConn) Read(p []byte) (int, error) {
	chunk := c.rate / 20 // 50 ms worth
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := c.Conn.Read(p)
	time.Sleep(time.Duration(n) * time.Second / time.Duration(c.rate))
	return n, err
}

// TestSlowReaderCatchesUp: a client reading at about 1 MB/s catches up on
// a room of large messages by paging, with live messages arriving
// meanwhile, and is never closed as too slow (1013).
func TestSlowReaderCatchesUp(t *testing.T) {
	t.Parallel() // about 20 s of reading at 1 MB/s
	ts, st := newSQLiteServer(t, dbPath(t), sqlite.Options{})
	const n = 1000 // about 12 MB of JSON
	start := time.Now()
	seed(t, st, "slow", n, bigText)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dialer := &net.Dialer{}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// A small receive buffer, so that the server's writes wait for
		// this reader rather than for the kernel.
		c.(*net.TCPConn).SetReadBuffer(64 << 10)
		return &slowConn{Conn: c, rate: 1 << 20}, nil
	}}}
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?batch=1", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(-1)
	read := func() []chattest.Frame {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("reading: %v (close status %d)", err, websocket.CloseStatus(err))
		}
		var out []chattest.Frame
		for _, ev := range protocol.SplitBatch(b) {
			env, perr := protocol.DecodeEnvelope(ev)
			if perr != nil {
				t.Fatalf("bad frame %q: %v", ev, perr)
			}
			out = append(out, chattest.Frame{Envelope: env, Raw: ev})
		}
		return out
	}
	write := func(s string) {
		if err := ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	read() // welcome
	write(`{"type":"join","payload":{"roomID":"slow","since":0}}`)

	sender := chattest.Dial(t, ts.URL, "")
	sender.Join(t, "slow")
	stopLive := make(chan struct{})
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		for i := 0; ; i++ {
			select {
			case <-stopLive:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if err := sender.Writef(`{"type":"msg","payload":{"message":"live %d"}}`, i); err != nil {
				t.Errorf("live sender: %v", err)
				return
			}
		}
	}()

	var j *protocol.Joined
	var got, live []protocol.Message
	last, waiting := int64(0), false
	for pages := 0; ; {
		for _, f := range read() {
			switch f.Type {
			case protocol.TypeJoined:
				j = new(protocol.Joined)
				chattest.Decode(t, f, j)
				got = append(got, j.History...)
			case protocol.TypeHistory:
				var h protocol.History
				chattest.Decode(t, f, &h)
				got = append(got, h.Messages...)
				waiting = false
				pages++
			case protocol.TypeMsg:
				live = append(live, chattest.MsgOf(t, f))
			}
		}
		if j == nil || waiting {
			continue
		}
		last = got[len(got)-1].Seq
		if last >= j.LastSeq {
			t.Logf("caught up on %d messages in %d history pages after %v", last, pages, time.Since(start).Round(time.Millisecond))
			break
		}
		write(fmt.Sprintf(`{"type":"history","id":"p%d","payload":{"roomID":"slow","after":%d}}`, pages, last))
		waiting = true
	}
	close(stopLive)
	<-liveDone
	for _, m := range live {
		if m.Seq > last {
			got = append(got, m)
			last = m.Seq
		}
	}
	chattest.CheckSeqs(t, "slow reader", chattest.Seqs(got), 1, last)
	if last <= n {
		t.Fatalf("no live message arrived while catching up (last seq %d)", last)
	}
}

// TestJoinStormOnLargeRoom: connections that join a 2,000-message room
// with since 0 and close at once, over and over, do not slow a msg round
// trip in another room much, and leave the heap bounded.
func TestJoinStormOnLargeRoom(t *testing.T) {
	ts, st := newSQLiteServer(t, dbPath(t), sqlite.Options{})
	seed(t, st, "large", 2000, bigText)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var storms int64
	var mu sync.Mutex
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", nil)
				if err == nil {
					ws.Write(ctx, websocket.MessageText, []byte(`{"type":"join","payload":{"roomID":"large","since":0}}`))
					ws.CloseNow()
					mu.Lock()
					storms++
					mu.Unlock()
				}
				cancel()
			}
		})
	}
	a, b := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	a.Join(t, "quiet")
	b.Join(t, "quiet")
	a.Await(t, protocol.TypePresence)
	var rtts []time.Duration
	for i := range 100 {
		t0 := time.Now()
		a.Sendf(t, `{"type":"msg","id":"r%d","payload":{"message":"ping %d"}}`, i, i)
		nextMsgs(t, b, 1, 10*time.Second)
		rtts = append(rtts, time.Since(t0))
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	slices.Sort(rtts)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	mu.Lock()
	t.Logf("%d join-since-0-and-close cycles on a 2,000-message room beside 100 round trips: p50 %v, p99 %v, max %v; heap in use %d → %d KiB",
		storms, rtts[50], rtts[98], rtts[99], before.HeapInuse>>10, after.HeapInuse>>10)
	mu.Unlock()
	// Each abandoned join reads at most one page (≤ 256 KiB of messages);
	// after the storm nothing of it stays.
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 64<<20 {
		t.Fatalf("heap in use grew by %d MiB over the storm", grew>>20)
	}
}

// TestRequestIDs: an id of 64 characters is echoed; 65 is bad_envelope and
// nothing is stored; the same id in two rooms stores two messages.
func TestRequestIDs(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	c := chattest.Dial(t, ts.URL, "")
	c.Join(t, "one")
	c.Join(t, "two")
	id64, id65 := strings.Repeat("é", 64), strings.Repeat("i", 65)
	c.Sendf(t, `{"type":"msg","id":%q,"payload":{"roomID":"one","message":"ok"}}`, id64)
	if a := c.AwaitAck(t, id64); a.Seq != 1 {
		t.Fatalf("ack of a 64-character id: %+v", a)
	}
	c.Sendf(t, `{"type":"msg","id":%q,"payload":{"roomID":"one","message":"too long an id"}}`, id65)
	f := c.Await(t, protocol.TypeError)
	var e protocol.Error
	chattest.Decode(t, f, &e)
	if e.Code != protocol.CodeBadEnvelope || e.Field != "id" || f.ID != "" {
		t.Fatalf("65-character id: %s; want bad_envelope on field id, id not echoed", f)
	}
	c.Send(t, `{"type":"msg","id":"same","payload":{"roomID":"one","message":"in one"}}`)
	a1 := c.AwaitAck(t, "same")
	c.Send(t, `{"type":"msg","id":"same","payload":{"roomID":"two","message":"in two"}}`)
	a2 := c.AwaitAck(t, "same")
	if a1.MsgID == a2.MsgID || a2.Seq != 1 || a1.Seq != 2 {
		t.Fatalf("same id in two rooms: acks %+v and %+v; want two messages (seq 2 in one, 1 in two)", a1, a2)
	}
	msgs, err := ts.Store.Messages(context.Background(), "one", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("room one holds %d messages, want 2 (the 65-character id stored nothing)", len(msgs))
	}
}

// TestMembersCap: with 105 members, joined.members and GET /api/rooms/{id}
// list 100 and count 105.
func TestMembersCap(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	for range 104 {
		chattest.Dial(t, ts.URL, "").Join(t, "crowd")
	}
	j := chattest.Dial(t, ts.URL, "").Join(t, "crowd")
	if len(j.Members) != 100 || j.Count != 105 {
		t.Fatalf("joined: %d members listed, count %d; want 100 and 105", len(j.Members), j.Count)
	}
	var info server.RoomInfo
	r := doHTTP(t, http.MethodGet, ts.URL+"/api/rooms/crowd", "", nil)
	if err := json.Unmarshal(r.body, &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Members) != 100 || info.Count != 105 {
		t.Fatalf("GET: %d members listed, count %d; want 100 and 105", len(info.Members), info.Count)
	}
}

// TestRoomLimit: a connection in MaxRooms rooms gets room_limit for one
// more; joining one it is in still works, and leaving makes room.
func TestRoomLimit(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	c := chattest.Dial(t, ts.URL, "")
	for i := range 100 {
		c.Sendf(t, `{"type":"join","payload":{"roomID":"r%d"}}`, i)
		c.Expect(t, protocol.TypeJoined)
	}
	c.Send(t, `{"type":"join","id":"x","payload":{"roomID":"one-more"}}`)
	if e := c.ExpectError(t, protocol.CodeRoomLimit); !strings.Contains(e.Message, "100") {
		t.Fatalf("room_limit message %q does not say the limit", e.Message)
	}
	c.Join(t, "r7")
	c.Send(t, `{"type":"leave","payload":{"roomID":"r7"}}`)
	c.Expect(t, protocol.TypeLeft)
	c.Join(t, "one-more")
}

// TestTypingThrottle: typing is forwarded at most once per 2 s per user
// and room.
func TestTypingThrottle(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	a, b := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	a.Join(t, "t")
	b.Join(t, "t")
	a.Await(t, protocol.TypePresence)
	for range 20 {
		b.Send(t, `{"type":"typing"}`)
	}
	b.Send(t, `{"type":"ping","id":"done"}`)
	b.Expect(t, protocol.TypePong)
	a.Expect(t, protocol.TypeTyping)
	a.Quiet(t, 300*time.Millisecond)
}

// TestCustomEvents: an event reaches the room's other members with from,
// not the sender and not other rooms; it is not stored and has no seq;
// bad names and data get their errors; POST …/events reaches everyone.
func TestCustomEvents(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	a, b, other := chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, ""), chattest.Dial(t, ts.URL, "")
	a.Join(t, "ev")
	b.Join(t, "ev")
	other.Join(t, "elsewhere")
	a.Await(t, protocol.TypePresence)

	b.Send(t, `{"type":"event","payload":{"name":"reaction","data":{"emoji":"👍","to":3}}}`)
	var ev protocol.Event
	f := a.Expect(t, protocol.TypeEvent)
	chattest.Decode(t, f, &ev)
	if ev.RoomID != "ev" || ev.Name != "reaction" || ev.From.UserID != b.Welcome.UserID || ev.From.Name == "" {
		t.Fatalf("event: %s", f)
	}
	var data struct {
		Emoji string `json:"emoji"`
		To    int    `json:"to"`
	}
	if err := json.Unmarshal(ev.Data, &data); err != nil || data.Emoji != "👍" || data.To != 3 {
		t.Fatalf("event data %s: %+v %v", ev.Data, data, err)
	}
	if strings.Contains(string(f.Raw), `"seq"`) {
		t.Fatalf("event has a seq: %s", f)
	}
	b.Send(t, `{"type":"event","payload":{"name":"ready"}}`)
	chattest.Decode(t, a.Expect(t, protocol.TypeEvent), &ev)
	if string(ev.Data) != "null" {
		t.Fatalf("event without data: data %s, want null", ev.Data)
	}
	b.Send(t, `{"type":"ping","id":"p"}`)
	b.Expect(t, protocol.TypePong) // the sender got neither event
	other.Quiet(t, 100*time.Millisecond)
	if msgs, _ := ts.Store.Messages(context.Background(), "ev", store.Query{}); len(msgs) != 0 {
		t.Fatalf("events stored %d messages", len(msgs))
	}

	for _, tc := range []struct{ payload, code, field string }{
		{`{"data":1}`, protocol.CodeBadPayload, "name"},
		{`{"name":""}`, protocol.CodeBadPayload, "name"},
		{`{"name":"has space"}`, protocol.CodeBadPayload, "name"},
		{`{"name":"` + strings.Repeat("n", 65) + `"}`, protocol.CodeBadPayload, "name"},
		{`{"name":"big","data":"` + strings.Repeat("d", 8<<10) + `"}`, protocol.CodeTooLong, "data"},
		{`{"name":"x","roomID":"elsewhere"}`, protocol.CodeNotInRoom, ""},
	} {
		b.Sendf(t, `{"type":"event","id":"e","payload":%s}`, tc.payload)
		f := b.Expect(t, protocol.TypeError)
		var e protocol.Error
		chattest.Decode(t, f, &e)
		if e.Code != tc.code || e.Field != tc.field || f.ID != "e" {
			t.Errorf("event %.60s → %s; want %s on %q", tc.payload, f, tc.code, tc.field)
		}
	}
	b.Send(t, `{"type":"event","payload":{"name":"a.b:c_d-9","data":[1,2]}}`)
	a.Expect(t, protocol.TypeEvent)

	r := doHTTP(t, http.MethodPost, ts.URL+"/api/rooms/ev/events", "application/json", []byte(`{"name":"deploy","data":{"v":2}}`))
	if r.status != http.StatusAccepted {
		t.Fatalf("POST events: %d %s", r.status, r.body)
	}
	for _, c := range []*chattest.Client{a, b} {
		chattest.Decode(t, c.Expect(t, protocol.TypeEvent), &ev)
		if ev.Name != "deploy" || ev.From.UserID != "" || string(ev.Data) != `{"v":2}` {
			t.Fatalf("posted event: %+v", ev)
		}
	}
	other.Quiet(t, 100*time.Millisecond)
	wantHTTPError(t, doHTTP(t, http.MethodPost, ts.URL+"/api/rooms/ev/events", "application/json", []byte(`{"name":"bad name"}`)), 400, protocol.CodeBadPayload)
	wantHTTPError(t, doHTTP(t, http.MethodPost, ts.URL+"/api/rooms/ev/events", "application/json", []byte(`{"name":"x","data":"`+strings.Repeat("d", 8<<10)+`"}`)), 400, protocol.CodeTooLong)
}

// TestPostRules: a POST from a foreign browser origin is 403 and a body
// that is not application/json is 415; scripts (no Origin), the server's
// own pages and allowed origins pass; GETs stay open.
func TestPostRules(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) { c.Origins = []string{"*.example.com"} })
	post := func(path, origin, ctype, body string) httpResult {
		req, err := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return httpResult{res.StatusCode, res.Header.Get("Content-Type"), b}
	}
	const msg = `{"message":"hi"}`
	self := "http://" + strings.TrimPrefix(ts.URL, "http://")
	for _, tc := range []struct {
		path, origin, ctype string
		status              int
		code                string
	}{
		{"/api/rooms/p/messages", "https://evil.test", "application/json", 403, protocol.CodeForbiddenOrigin},
		{"/api/rooms/p/messages", "null", "application/json", 403, protocol.CodeForbiddenOrigin},
		{"/api/rooms/p/events", "https://evil.test", "application/json", 403, protocol.CodeForbiddenOrigin},
		{"/api/rooms", "https://evil.test", "", 403, protocol.CodeForbiddenOrigin},
		{"/api/rooms/p/messages", "", "text/plain", 415, protocol.CodeUnsupportedType},
		{"/api/rooms/p/messages", "", "", 415, protocol.CodeUnsupportedType},
		{"/api/rooms/p/messages", "", "application/json", 201, ""},
		{"/api/rooms/p/messages", "", "application/json; charset=utf-8", 201, ""},
		{"/api/rooms/p/messages", self, "application/json", 201, ""},
		{"/api/rooms/p/messages", "https://chat.example.com", "application/json", 201, ""},
		{"/api/rooms", self, "", 201, ""},
	} {
		r := post(tc.path, tc.origin, tc.ctype, msg)
		if tc.code != "" {
			wantHTTPError(t, r, tc.status, tc.code)
		} else if r.status != tc.status {
			t.Errorf("POST %s origin %q type %q: %d %s, want %d", tc.path, tc.origin, tc.ctype, r.status, r.body, tc.status)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/rooms/p/messages", nil)
	req.Header.Set("Origin", "https://evil.test")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET from a foreign origin: %d, want 200", res.StatusCode)
	}
}
