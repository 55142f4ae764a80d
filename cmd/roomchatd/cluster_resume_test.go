package main

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// Resume across nodes on any path (SPEC §8): a client that drops from
// node 0, resumes on node 1, drops and resumes on node 0 with node 1's
// token keeps its userID, and its retried id is acked once; a token two
// resumes old works on no node; a resume closes the connection it
// replaces with 1000, on whichever node it is.
func TestClusterResumeAnyPath(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv := redistest.Start(t, redistest.Options{})
	nodes := startNodes(t, srv, 2)
	a := chattest.Dial(t, nodes[0].URL, "")
	a.JoinSince(t, "r", nil)
	first := a.SendAck(t, "once", "hello")
	a.Close()

	b := chattest.Dial(t, nodes[1].URL, "?resume="+a.Welcome.Resume)
	if b.Welcome.UserID != a.Welcome.UserID {
		t.Fatalf("resumed on node 1 as %q, want %q", b.Welcome.UserID, a.Welcome.UserID)
	}
	b.Close()

	c := chattest.Dial(t, nodes[0].URL, "?resume="+b.Welcome.Resume)
	if c.Welcome.UserID != a.Welcome.UserID {
		t.Fatalf("back on node 0 with node 1's token as %q, want %q", c.Welcome.UserID, a.Welcome.UserID)
	}
	zero := int64(0)
	c.JoinSince(t, "r", &zero)
	if again := c.SendAck(t, "once", "hello"); again.Seq != first.Seq || again.MsgID != first.MsgID {
		t.Fatalf("retried msg acked as %+v, first %+v", again, first)
	}
	var page struct {
		Messages []protocol.Message `json:"messages"`
	}
	getJSON(t, nodes[1].URL+"/api/rooms/r/messages", http.StatusOK, &page)
	if len(page.Messages) != 1 {
		t.Fatalf("%d messages stored, want 1", len(page.Messages))
	}

	// a's token was replaced twice since: it resumes nobody, on either
	// node (node 1 knows the user, node 0 holds it).
	for i, n := range nodes {
		old := chattest.Dial(t, n.URL, "?resume="+a.Welcome.Resume)
		if old.Welcome.UserID == a.Welcome.UserID {
			t.Fatalf("node %d resumed the user with a token two resumes old", i)
		}
		old.Close()
	}

	// The newest token on node 1 while c is still connected on node 0:
	// c is closed with 1000.
	d := chattest.Dial(t, nodes[1].URL, "?resume="+c.Welcome.Resume)
	if d.Welcome.UserID != a.Welcome.UserID {
		t.Fatalf("resumed on node 1 as %q, want %q", d.Welcome.UserID, a.Welcome.UserID)
	}
	if code := c.CloseCode(t, 10*time.Second); code != websocket.StatusNormalClosure {
		t.Fatalf("the replaced connection on node 0 ended with %v, want 1000", code)
	}
}

// A member that drops from node 0 and resumes on node 1 within the grace
// period is silent for the others: no join when it joins again there, and
// no leave when node 0's grace period ends.
func TestClusterResumeElsewhereSilent(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv := redistest.Start(t, redistest.Options{})
	nodes := startNodes(t, srv, 2) // -grace 2s
	w, _ := member(t, nodes[1], "r")
	a, _ := member(t, nodes[0], "r")
	awaitPresence(t, w, protocol.PresenceJoin, a.Welcome.UserID, 5*time.Second)
	a.Close()

	b := chattest.Dial(t, nodes[1].URL, "?resume="+a.Welcome.Resume)
	if b.Welcome.UserID != a.Welcome.UserID {
		t.Fatalf("resumed on node 1 as %q, want %q", b.Welcome.UserID, a.Welcome.UserID)
	}
	zero := int64(0)
	if j := b.JoinSince(t, "r", &zero); j.Count != 2 {
		t.Fatalf("joined again with count %d, want 2", j.Count)
	}
	// Past node 0's grace period (2 s) with room to spare.
	deadline := time.Now().Add(5 * time.Second)
	for {
		e, err := w.Read(time.Until(deadline))
		if errors.Is(err, chattest.ErrNoEvent) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Type == protocol.TypePresence {
			t.Fatalf("a resume on another node within grace was announced: %s", e)
		}
	}
	var info struct {
		Count int `json:"count"`
	}
	getJSON(t, nodes[0].URL+"/api/rooms/r", http.StatusOK, &info)
	if info.Count != 2 {
		t.Fatalf("GET /api/rooms/r: count %d, want 2", info.Count)
	}
}
