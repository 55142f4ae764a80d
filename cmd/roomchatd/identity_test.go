package main

// Identity, de-duplication and shutdown across process ends (SPEC §4):
// the built binary, stopped with SIGTERM or kill -9 and started again.

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/sqlite"
)

// TestResumeAndRetryAcrossRestart: after SIGTERM and after kill -9, a
// client that reconnects with its resume token keeps its userID and guest
// name, and a msg retried with its id is acked with the original msgID
// and seq and stored once.
func TestResumeAndRetryAcrossRestart(t *testing.T) {
	for _, how := range []string{"SIGTERM", "kill -9"} {
		t.Run(how, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "roomchat.db")
			d := chattest.Start(t, "-db", db)
			a := chattest.Dial(t, d.URL, "")
			j := a.JoinSince(t, "keep", nil)
			first := a.SendAck(t, "retry-me", "sent once")
			a.SendAck(t, "other", "another")
			if how == "SIGTERM" {
				d.Stop(t)
			} else {
				d.Kill(t)
			}
			d = chattest.Start(t, "-db", db)

			b := chattest.Dial(t, d.URL, "?resume="+url.QueryEscape(a.Welcome.Resume))
			if b.Welcome.UserID != a.Welcome.UserID || b.Welcome.Resume == "" || b.Welcome.Resume == a.Welcome.Resume {
				t.Fatalf("after %s: welcome %+v; want userID %s and a new token", how, b.Welcome, a.Welcome.UserID)
			}
			if jb := b.JoinSince(t, "keep", nil); jb.You != j.You {
				t.Fatalf("after %s: you = %+v, want %+v (the same guest name)", how, jb.You, j.You)
			}
			again := b.SendAck(t, "retry-me", "sent once")
			if again != first {
				t.Fatalf("retry after %s: ack %+v, want the original %+v", how, again, first)
			}
			// The same id in another room is a new message.
			b.JoinSince(t, "elsewhere", nil)
			b.Sendf(t, `{"type":"msg","id":"retry-me","payload":{"roomID":"elsewhere","message":"new"}}`)
			if a, err := b.AckOf("retry-me"); err != nil || a.Seq != 1 || a.MsgID == first.MsgID {
				t.Fatalf("same id in another room: %+v, %v; want a new message with seq 1", a, err)
			}
			var page server.MessagePage
			getJSON(t, d.URL+"/api/rooms/keep/messages?after=0", 200, &page)
			if len(page.Messages) != 2 {
				t.Fatalf("room holds %d messages, want 2 (the retry stored nothing)", len(page.Messages))
			}
			// A forged token is a new user.
			forged := []byte(a.Welcome.Resume)
			forged[len(forged)/2] ^= 1
			if w := chattest.Dial(t, d.URL, "?resume="+url.QueryEscape(string(forged))).Welcome; w.UserID == a.Welcome.UserID {
				t.Fatal("a token with one changed character resumed the user")
			}
		})
	}
}

// TestMemoryEpoch: with -db :memory:, an empty room has an epoch, its first
// message keeps it, and a restart (history lost) changes it.
func TestMemoryEpoch(t *testing.T) {
	d := chattest.Start(t, "-db", ":memory:")
	a := chattest.Dial(t, d.URL, "")
	empty := a.JoinSince(t, "e", nil)
	if empty.Epoch == "" {
		t.Fatal("empty room: epoch is empty")
	}
	a.SendAck(t, "m", "first")
	if e := chattest.Dial(t, d.URL, "").JoinSince(t, "e", nil).Epoch; e != empty.Epoch {
		t.Fatalf("epoch after the first message %q, want %q", e, empty.Epoch)
	}
	d.Stop(t)
	d = chattest.Start(t, "-db", ":memory:")
	j := chattest.Dial(t, d.URL, "").JoinSince(t, "e", ptr(int64(1)))
	if j.Epoch == "" || j.Epoch == empty.Epoch || j.LastSeq != 0 {
		t.Fatalf("after a :memory: restart: epoch %q lastSeq %d; want a new epoch and no history", j.Epoch, j.LastSeq)
	}
}

// TestShutdownUnderLoad: SIGTERM while clients send with ids as fast as
// they can: every message a client saw acked is stored with that seq, and
// every stored message was acked to its sender before the 1001 close.
func TestShutdownUnderLoad(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	d := chattest.Start(t, "-db", db, "-retention", "1000000")
	const senders = 8
	type sender struct {
		c        *chattest.Client
		mu       sync.Mutex
		acks     map[string]protocol.Ack // id → ack
		inflight chan struct{}           // one per unacked msg
	}
	ss := make([]*sender, senders)
	for i := range ss {
		// At most 32 unacked messages each: a client that sends without
		// end and cannot read as fast is a slow consumer, not the case
		// under test.
		ss[i] = &sender{c: chattest.Dial(t, d.URL, "?batch=1"), acks: map[string]protocol.Ack{}, inflight: make(chan struct{}, 32)}
		ss[i].c.JoinSince(t, "load", nil)
	}
	var wg sync.WaitGroup
	for i, s := range ss {
		wg.Go(func() { // writes until the connection ends
			for k := 0; ; k++ {
				select {
				case s.inflight <- struct{}{}:
				case <-s.c.Done():
					return
				}
				id := fmt.Sprintf("s%d-%d", i, k)
				if s.c.Writef(`{"type":"msg","id":%q,"payload":{"message":%q}}`, id, id) != nil {
					return
				}
			}
		})
		wg.Go(func() { // reads acks until the close
			for {
				e, err := s.c.Read(20 * time.Second)
				if err != nil {
					return
				}
				if e.Type == protocol.TypeAck {
					var a protocol.Ack
					chattest.Decode(t, e, &a)
					s.mu.Lock()
					s.acks[e.ID] = a
					s.mu.Unlock()
					<-s.inflight
				}
			}
		})
	}
	// The shutdown comes under load: once every sender has had acks.
	chattest.Eventually(t, 10*time.Second, func() bool {
		for _, s := range ss {
			s.mu.Lock()
			n := len(s.acks)
			s.mu.Unlock()
			if n < 20 {
				return false
			}
		}
		return true
	}, "20 acks for each of %d senders", senders)
	d.Stop(t)
	for _, s := range ss {
		if code := s.c.CloseCode(t, 10*time.Second); code != websocket.StatusGoingAway {
			t.Errorf("a sender was closed with %d, want 1001", code)
		}
	}
	wg.Wait()

	st, err := sqlite.Open(context.Background(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stored, err := st.Messages(context.Background(), "load", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]protocol.Ack{}
	for _, s := range ss {
		for id, a := range s.acks {
			acked[id] = a
		}
	}
	bySeq := map[int64]protocol.Message{}
	for _, m := range stored {
		bySeq[m.Seq] = m
		a, ok := acked[m.Message]
		if !ok {
			t.Errorf("seq %d (%s) is stored but its sender never got the ack", m.Seq, m.Message)
			continue
		}
		if a.Seq != m.Seq || a.MsgID != m.ID {
			t.Errorf("seq %d (%s): acked as %+v", m.Seq, m.Message, a)
		}
	}
	for id, a := range acked {
		if m, ok := bySeq[a.Seq]; !ok || m.Message != id {
			t.Errorf("ack %s %+v has no stored message", id, a)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(d.Logs(), "\n") {
			if strings.Contains(l, "clos") || strings.Contains(l, "shut") || strings.Contains(l, "WARN") || strings.Contains(l, "disconnect") {
				t.Log(l)
			}
		}
	}
	if len(stored) < 100 {
		t.Fatalf("only %d messages were stored before the shutdown; the load did not run", len(stored))
	}
	if !strings.Contains(d.Logs(), "shutting down") {
		t.Fatal("no shutdown in the log")
	}
	t.Logf("%d messages stored and acked before the 1001 close", len(stored))
}
