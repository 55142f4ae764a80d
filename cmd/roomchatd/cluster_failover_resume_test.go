package main

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// A failover to a replica that missed the directory's last write keeps a
// client's userID (SPEC §8: resume on any path; de-duplication is per
// user). The client sends on node 0 and drops; the replica stops getting
// writes (stopped, its link killed); the client resumes on node 1, whose
// record of the new token reaches the primary only; the primary is
// killed and the replica promoted. Back on node 0, which still holds the
// user with the older token, the client resumes with node 1's token,
// newer than anything the promoted replica has: it is the same user, and
// its retried id is acked once.
func TestClusterResumeAfterLossyFailover(t *testing.T) {
	t.Parallel() // its own Redis and nodes
	h := redistest.StartHA(t, redistest.HAOptions{Replicas: 1})
	var nodes []*chattest.Server
	for range 2 {
		nodes = append(nodes, chattest.Start(t, "-redis", h.URL(), "-grace", "2s"))
	}
	old := h.Primary()
	replica := h.Servers[0]
	if replica == old {
		replica = h.Servers[1]
	}

	a := chattest.Dial(t, nodes[0].URL, "")
	a.JoinSince(t, "r", nil)
	first := a.SendAck(t, "once", "hello")
	a.Close()
	// Everything so far, the user's record and the message, on the
	// replica; then it gets nothing more.
	if m := old.Do(old.Client(), "WAIT", "1", "5000"); !isInt(m, 1) {
		t.Fatalf("WAIT 1: %v", m)
	}
	if err := syscall.Kill(replica.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	defer func() {
		if !continued {
			syscall.Kill(replica.PID(), syscall.SIGCONT)
		}
	}()
	if err := old.Try("CLIENT", "KILL", "TYPE", "replica"); err != nil {
		t.Fatal(err)
	}

	b := chattest.Dial(t, nodes[1].URL, "?resume="+a.Welcome.Resume)
	if b.Welcome.UserID != a.Welcome.UserID {
		t.Fatalf("resumed on node 1 as %q, want %q", b.Welcome.UserID, a.Welcome.UserID)
	}
	b.Close()
	old.Kill()
	syscall.Kill(replica.PID(), syscall.SIGCONT)
	continued = true
	if p := h.PrimaryOtherThan(old, 30*time.Second); p != replica {
		t.Fatalf("the sentinels promoted %s, want the replica %s", p.Addr, replica.Addr)
	}
	// The precondition: the promoted replica has the user's record as
	// node 0 wrote it, not the resume on node 1 (which sets p).
	key := "roomchat:user:" + a.Welcome.UserID
	if m := replica.Do(replica.Client(), "HEXISTS", key, "p"); !isInt(m, 0) {
		t.Fatal("the promoted replica got the resume's record: nothing was lost, the test tests nothing")
	}
	for _, n := range nodes {
		waitStatus(t, n.URL+"/readyz", http.StatusOK, 15*time.Second)
	}

	c := chattest.Dial(t, nodes[0].URL, "?resume="+b.Welcome.Resume)
	if c.Welcome.UserID != a.Welcome.UserID {
		t.Fatalf("back on node 0 with node 1's token after the failover as %q, want %q", c.Welcome.UserID, a.Welcome.UserID)
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
}

// isInt reports whether m is the integer n.
func isInt(m rueidis.RedisMessage, n int64) bool {
	v, err := m.AsInt64()
	return err == nil && v == n
}
