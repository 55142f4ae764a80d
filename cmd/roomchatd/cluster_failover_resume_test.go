package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/redis/rueidis"

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
	nodes := startNodesOn(t, h.URL(), 2)
	old := h.Primary()
	replica := h.Servers[0]
	if replica == old {
		replica = h.Servers[1]
	}

	a, _ := member(t, nodes[0], "r")
	first := a.SendAck(t, "once", "hello")
	a.Close()
	// Everything so far, the user's record and the message, on the
	// replica; then it gets nothing more.
	if m := old.Do(old.Client(), "WAIT", "1", "5000"); !isInt(m, 1) {
		t.Fatalf("WAIT 1: %v", m)
	}
	resume := pauseRedis(t, replica)
	if err := old.Try("CLIENT", "KILL", "TYPE", "replica"); err != nil {
		t.Fatal(err)
	}

	b := resumeAs(t, nodes[1].URL, a.Welcome.Resume, a.Welcome.UserID, "resumed on node 1")
	b.Close()
	old.Kill()
	resume()
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

	c := resumeAs(t, nodes[0].URL, b.Welcome.Resume, a.Welcome.UserID, "back on node 0 with node 1's token after the failover")
	retryAcked(t, c, "r", "once", "hello", first)
	if n := len(getMessages(t, nodes[1].URL, "r", "").Messages); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

// isInt reports whether m is the integer n.
func isInt(m rueidis.RedisMessage, n int64) bool {
	v, err := m.AsInt64()
	return err == nil && v == n
}
