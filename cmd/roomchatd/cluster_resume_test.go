package main

import (
	"errors"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
)

// Resume across nodes on any path (SPEC §8): a client that drops from
// node 0, resumes on node 1, drops and resumes on node 0 with node 1's
// token keeps its userID, and its retried id is acked once; a token two
// resumes old works on no node; a resume closes the connection it
// replaces with 1000, on whichever node it is.
func TestClusterResumeAnyPath(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	_, nodes := startCluster(t, 2)
	a, _ := member(t, nodes[0], "r")
	first := a.SendAck(t, "once", "hello")
	a.Close()

	b := resumeAs(t, nodes[1].URL, a.Welcome.Resume, a.Welcome.UserID, "resumed on node 1")
	b.Close()

	c := resumeAs(t, nodes[0].URL, b.Welcome.Resume, a.Welcome.UserID, "back on node 0 with node 1's token")
	retryAcked(t, c, "r", "once", "hello", first)
	if n := len(getMessages(t, nodes[1].URL, "r", "").Messages); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
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
	resumeAs(t, nodes[1].URL, c.Welcome.Resume, a.Welcome.UserID, "resumed on node 1")
	if code := c.CloseCode(t, 10*time.Second); code != websocket.StatusNormalClosure {
		t.Fatalf("the replaced connection on node 0 ended with %v, want 1000", code)
	}
}

// A member that drops from node 0 and resumes on node 1 within the grace
// period is silent for the others: no join when it joins again there, and
// no leave when node 0's grace period ends.
func TestClusterResumeElsewhereSilent(t *testing.T) {
	t.Parallel()                   // each has its own Redis and nodes
	_, nodes := startCluster(t, 2) // -grace 2s
	w, _ := member(t, nodes[1], "r")
	a, _ := member(t, nodes[0], "r")
	awaitPresence(t, w, protocol.PresenceJoin, a.Welcome.UserID, 5*time.Second)
	a.Close()

	b := resumeAs(t, nodes[1].URL, a.Welcome.Resume, a.Welcome.UserID, "resumed on node 1")
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
	if info := getRoom(t, nodes[0].URL, "r"); info.Count != 2 {
		t.Fatalf("GET /api/rooms/r: count %d, want 2", info.Count)
	}
}
