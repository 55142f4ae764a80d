package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
)

// postMessage posts text to room through the HTTP API and returns the
// stored message.
func postMessage(t *testing.T, ts *chattest.InProcess, room, text string) protocol.Message {
	t.Helper()
	body, err := json.Marshal(server.PostMessage{Name: "bot", Message: text})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(ts.URL+"/api/rooms/"+room+"/messages", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %s", resp.StatusCode, b)
	}
	var m protocol.Message
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// getPage GETs a page of room's messages with query and returns it and
// the size of its body.
func getPage(t *testing.T, ts *chattest.InProcess, room, query string) (server.MessagePage, int) {
	t.Helper()
	resp, err := http.Get(ts.URL + "/api/rooms/" + room + "/messages?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET ?%s: %d %.200s (%v)", query, resp.StatusCode, b, err)
	}
	var p server.MessagePage
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("GET ?%s: %v", query, err)
	}
	return p, len(b)
}

// TestMessagePageBounded: messages of 4000 control characters, each 24 KB
// of JSON once escaped, posted through the real server: a page asked for
// with limit=500 holds at most 256 KiB of messages (the body: that and its
// envelope), says more when it stopped short, and following pages from
// after=0 by the last seq of each returns every message exactly once, in
// order. The newest page (no after) is bounded the same way and ends at
// the last message.
func TestMessagePageBounded(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	const n = 35 // about three and a half pages
	text := strings.Repeat("\x01", 4000)
	for range n {
		postMessage(t, ts, "ctl", text)
	}
	limits := protocol.DefaultLimits()
	const envelope = 1 << 10 // roomID, lastSeq, more and the JSON around them
	bounded := func(what string, p server.MessagePage, size int) {
		t.Helper()
		msgs, _ := json.Marshal(p.Messages)
		if len(msgs) > limits.MaxPageBytes || size > limits.MaxPageBytes+envelope {
			t.Fatalf("%s: %d messages, %d bytes of them, a body of %d; want at most %d bytes of messages", what, len(p.Messages), len(msgs), size, limits.MaxPageBytes)
		}
		if len(p.Messages) == 0 || len(p.Messages) == n {
			t.Fatalf("%s: %d messages, want a page cut short by its bytes", what, len(p.Messages))
		}
	}

	var seqs []int64
	after := int64(0)
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatalf("more than %d pages", n)
		}
		p, size := getPage(t, ts, "ctl", fmt.Sprintf("after=%d&limit=500", after))
		if len(p.Messages) == 0 {
			if p.More {
				t.Fatal("an empty page says more")
			}
			break
		}
		last := p.Messages[len(p.Messages)-1].Seq
		if p.LastSeq != n || p.More != (last < n) {
			t.Fatalf("page after %d: lastSeq %d more %v, last seq in it %d; want lastSeq %d and more exactly when it ends before", after, p.LastSeq, p.More, last, n)
		}
		if p.More {
			bounded(fmt.Sprintf("page after %d", after), p, size)
		}
		for _, m := range p.Messages {
			if m.Message != text {
				t.Fatalf("seq %d: the text changed", m.Seq)
			}
			seqs = append(seqs, m.Seq)
		}
		t.Logf("page after %d: %d messages, %d bytes, more=%v", after, len(p.Messages), size, p.More)
		after = last
		if !p.More {
			break
		}
	}
	for i, s := range seqs {
		if s != int64(i+1) || len(seqs) != n {
			t.Fatalf("paging forward gave seqs %v, want 1…%d once each in order", seqs, n)
		}
	}

	p, size := getPage(t, ts, "ctl", "limit=500")
	bounded("newest page", p, size)
	if last := p.Messages[len(p.Messages)-1].Seq; last != n || p.More {
		t.Fatalf("newest page ends at seq %d, more=%v; want %d and no more", last, p.More, n)
	}
}

// stallStore is a real store whose Page waits, once stalled, until it is
// released: a store that hangs, the only fault it injects.
type stallStore struct {
	store.Store
	mu      sync.Mutex
	stall   chan struct{} // Page waits for it to close; nil: no stall
	entered chan struct{} // a value each time Page starts waiting
}

func (s *stallStore) Page(ctx context.Context, roomID string, q store.Query) (store.RoomInfo, []protocol.Message, error) {
	s.mu.Lock()
	stall := s.stall
	s.mu.Unlock()
	if stall != nil {
		s.entered <- struct{}{}
		<-stall
	}
	return s.Store.Page(ctx, roomID, q)
}

// TestMessagePageBusy: with MaxPageResponses pages being answered, one
// more gets 503 server_busy with Retry-After, at once; other requests are
// served; once one ends, pages are answered again.
func TestMessagePageBusy(t *testing.T) {
	st := &stallStore{Store: store.NewMemory(store.Retention{}), stall: make(chan struct{}), entered: make(chan struct{}, 2)}
	t.Cleanup(func() { st.Store.Close() }) // after the server's cleanup
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) {
		c.Store = st
		c.MaxPageResponses = 2
	})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			resp, err := http.Get(ts.URL + "/api/rooms/r/messages")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("a stalled page: %d, want 200 once the store answers", resp.StatusCode)
			}
		})
	}
	<-st.entered
	<-st.entered
	resp, err := http.Get(ts.URL + "/api/rooms/r/messages")
	wantRefusal(t, "a third page", resp, err, http.StatusServiceUnavailable, protocol.CodeServerBusy)
	if resp, err := http.Get(ts.URL + "/api/rooms/r"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/rooms/r while pages are busy: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	st.mu.Lock()
	close(st.stall)
	st.stall = nil
	st.mu.Unlock()
	wg.Wait()
	if p, _ := getPage(t, ts, "r", ""); len(p.Messages) != 0 {
		t.Fatalf("page of an empty room: %+v", p)
	}
	if got := metric(t, ts, `roomchat_errors_total{code="server_busy"}`); got != 1 {
		t.Errorf(`roomchat_errors_total{code="server_busy"} = %v, want 1`, got)
	}
}
