package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// Three members on three nodes, three senders at once: every member sees
// seq 1..N in one order; history, since and the HTTP API are the same
// from every node; a bot post on one node reaches the others.
func TestClusterChat(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	_, nodes := startCluster(t, 3)
	var members []*chattest.Client
	for _, n := range nodes {
		c, _ := member(t, n, "lobby")
		members = append(members, c)
	}
	const each = 30
	var wg sync.WaitGroup
	for i, c := range members {
		wg.Go(func() {
			for k := range each {
				if err := c.Writef(`{"type":"msg","id":"%d-%d","payload":{"roomID":"lobby","message":"from node %d, %d"}}`, i, k, i, k); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	const n = 3 * each
	var orders [][]string
	for _, c := range members {
		orders = append(orders, collect(t, c, 0, n))
	}
	for i := 1; i < len(orders); i++ {
		if !slices.Equal(orders[i], orders[0]) {
			t.Fatalf("node %d saw another order than node 0", i)
		}
	}

	since := int64(n - 10)
	for i, node := range nodes {
		c := chattest.Dial(t, node.URL, "")
		j := c.JoinSince(t, "lobby", &since)
		var ids []string
		for _, m := range j.History {
			ids = append(ids, m.ID)
		}
		if j.LastSeq != n || !slices.Equal(ids, orders[0][n-10:]) {
			t.Fatalf("node %d: join since %d: lastSeq %d, %d messages, not the last 10", i, since, j.LastSeq, len(ids))
		}
		page := getMessages(t, node.URL, "lobby", "?limit=5")
		if len(page.Messages) != 5 || page.Messages[4].Seq != n {
			t.Fatalf("node %d: GET messages: %+v", i, page.Messages)
		}
	}

	res, err := http.Post(nodes[1].URL+"/api/rooms/lobby/messages", "application/json", strings.NewReader(`{"name":"bot","message":"deployed"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		t.Fatalf("bot post: %d", res.StatusCode)
	}
	collect(t, members[0], n, n+1)
}

// A user resumes on another node: same userID, and a msg retried there
// with its id is acked once with the first seq, stored once.
func TestClusterResumeElsewhere(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	_, nodes := startCluster(t, 2)
	a, _ := member(t, nodes[0], "r")
	ack := a.SendAck(t, "once", "hello")
	a.Close()

	b := resumeAs(t, nodes[1].URL, a.Welcome.Resume, a.Welcome.UserID, "resumed on another node")
	retryAcked(t, b, "r", "once", "hello", ack)
	if n := len(getMessages(t, nodes[1].URL, "r", "").Messages); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

// A node killed with kill -9: its clients resume on another node with
// since and miss nothing sent meanwhile.
func TestClusterNodeKilled(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	_, nodes := startCluster(t, 2)
	victim, _ := member(t, nodes[0], "r")
	sender, _ := member(t, nodes[1], "r")
	for k := range 5 {
		sender.SendAck(t, fmt.Sprint("before-", k), "before")
	}
	collect(t, victim, 0, 5)
	nodes[0].Kill(t)
	for k := range 5 {
		sender.SendAck(t, fmt.Sprint("after-", k), "after")
	}
	back := resumeAs(t, nodes[1].URL, victim.Welcome.Resume, victim.Welcome.UserID, "resume after a node died gave a new user")
	since := int64(5)
	j := back.JoinSince(t, "r", &since)
	var seqs []int64
	for _, m := range j.History {
		seqs = append(seqs, m.Seq)
	}
	if !slices.Equal(seqs, []int64{6, 7, 8, 9, 10}) {
		t.Fatalf("caught up with %v, want 6..10", seqs)
	}
}

// Redis killed: sending fails with store_unavailable within 5 s, /readyz
// says 503, the connection stays open; Redis restarted from its AOF: the
// node serves again within 10 s by itself, and nothing acked is lost.
func TestClusterRedisDown(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv, nodes := startCluster(t, 2)
	a, _ := member(t, nodes[0], "r")
	b, _ := member(t, nodes[1], "r")
	for k := range 3 {
		a.SendAck(t, fmt.Sprint("m", k), "before")
	}
	collect(t, b, 0, 3)
	srv.Kill()

	start := time.Now()
	a.Send(t, `{"type":"msg","id":"down","payload":{"message":"while Redis is down"}}`)
	for {
		e, err := a.Read(5*time.Second - time.Since(start))
		if err != nil {
			t.Fatalf("no answer within 5 s of sending with Redis down: %v", err)
		}
		if e.Type == protocol.TypeAck {
			t.Fatalf("acked with Redis down: %s", e)
		}
		if e.Type == protocol.TypeError {
			var pe protocol.Error
			chattest.Decode(t, e, &pe)
			if pe.Code != protocol.CodeStoreUnavailable || e.ID != "down" {
				t.Fatalf("error %s, want store_unavailable for id down", e)
			}
			break
		}
	}
	waitStatus(t, nodes[0].URL+"/readyz", http.StatusServiceUnavailable, 5*time.Second)
	if e, err := b.Read(300 * time.Millisecond); err == nil && e.Type == protocol.TypeMsg {
		t.Fatalf("a message was delivered with Redis down: %s", e)
	}

	srv.Restart()
	for _, n := range nodes {
		waitStatus(t, n.URL+"/readyz", http.StatusOK, 10*time.Second)
	}
	if ack := a.SendAck(t, "after", "Redis is back"); ack.Seq != 4 {
		t.Fatalf("after Redis came back the message got seq %d, want 4", ack.Seq)
	}
	collect(t, b, 3, 4)
}

// FLUSHALL loses every room: a member gets a new joined (new epoch,
// truncated) before any message of the new epoch.
func TestClusterFlushAll(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv, nodes := startCluster(t, 2)
	a, first := member(t, nodes[0], "r")
	b, _ := member(t, nodes[1], "r")
	a.SendAck(t, "one", "one")
	collect(t, b, 0, 1)
	srv.Do(srv.Client(), "FLUSHALL")
	a.SendAck(t, "two", "first of the new epoch")
	if j := awaitNewJoined(t, b, 10*time.Second); j.Epoch == first.Epoch || !j.Truncated {
		t.Fatalf("joined after FLUSHALL: epoch %q (was %q), truncated %v", j.Epoch, first.Epoch, j.Truncated)
	}
}

// With requirepass, the password appears in no log line, metric or error.
func TestClusterPasswordNeverShown(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	const password = "s3cret-pa55word-xyzzy"
	srv := redistest.Start(t, redistest.Options{Password: password})
	node := startNodes(t, srv, 1)[0]
	c, _ := member(t, node, "r")
	c.SendAck(t, "m", "hello")
	res, err := http.Get(node.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(metrics), "roomchat_cluster_gap_fills_total 0") {
		t.Errorf("/metrics has no roomchat_cluster_gap_fills_total")
	}
	srv.Kill() // errors now, with the URL in play
	c.Send(t, `{"type":"msg","id":"x","payload":{"message":"down"}}`)
	c.Read(3 * time.Second)
	waitStatus(t, node.URL+"/readyz", http.StatusServiceUnavailable, 5*time.Second)
	node.Stop(t)
	for what, text := range map[string]string{"log": node.Logs(), "metrics": string(metrics)} {
		if strings.Contains(text, password) {
			t.Errorf("the Redis password appears in the %s", what)
		}
	}
	if !strings.Contains(node.Logs(), "redis redis://xxxxx@") {
		t.Errorf("the log does not name the Redis it uses (redacted):\n%s", node.Logs())
	}

	// A node that cannot reach Redis at start says so and exits 1,
	// without the password.
	bad := chattest.Command(t, "-addr", "127.0.0.1:0", "-redis", "redis://:"+password+"@127.0.0.1:1")
	bad.Stdout = nil
	out, _ := bad.CombinedOutput()
	if bad.ProcessState.ExitCode() != 1 || strings.Contains(string(out), password) {
		t.Errorf("start with an unreachable Redis: exit %d, output %q", bad.ProcessState.ExitCode(), out)
	}
}

// Presence is cluster-wide: joined's count and members, presence events
// and GET /api/rooms/{id} count every node's members; typing and custom
// events cross nodes; a node that stops cleanly takes its members out at
// once, and a killed node's members leave within 30 s.
func TestClusterPresence(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	_, nodes := startCluster(t, 3)
	a, _ := member(t, nodes[0], "r")
	b, jb := member(t, nodes[1], "r")
	if jb.Count != 2 || len(jb.Members) != 2 {
		t.Fatalf("b's joined: count %d, members %v; want both members", jb.Count, jb.Members)
	}
	if p := awaitPresence(t, a, protocol.PresenceJoin, b.Welcome.UserID, 5*time.Second); p.Count != 2 {
		t.Fatalf("a saw b's join with count %d, want 2", p.Count)
	}
	if info := getRoom(t, nodes[2].URL, "r"); info.Count != 2 || len(info.Members) != 2 {
		t.Fatalf("GET /api/rooms/r on a third node: %+v, want both members", info)
	}

	b.Send(t, `{"type":"typing","payload":{"roomID":"r"}}`)
	b.Send(t, `{"type":"event","payload":{"roomID":"r","name":"cursor","data":{"x":1}}}`)
	for _, typ := range []string{protocol.TypeTyping, protocol.TypeEvent} {
		if e := a.Await(t, typ); !strings.Contains(e.String(), b.Welcome.UserID) {
			t.Fatalf("%s from another node: %s", typ, e)
		}
	}
	res, err := http.Post(nodes[2].URL+"/api/rooms/r/events", "application/json", strings.NewReader(`{"name":"deploy","data":null}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	a.Await(t, protocol.TypeEvent)
	b.Await(t, protocol.TypeEvent)

	// A clean stop: b's leave comes at once.
	nodes[1].Stop(t)
	if p := awaitPresence(t, a, protocol.PresenceLeave, b.Welcome.UserID, 5*time.Second); p.Count != 1 {
		t.Fatalf("after b's node stopped: count %d, want 1", p.Count)
	}

	// A killed node: its member's leave comes within 30 s.
	c, _ := member(t, nodes[2], "r")
	awaitPresence(t, a, protocol.PresenceJoin, c.Welcome.UserID, 5*time.Second)
	nodes[2].Kill(t)
	start := time.Now()
	p := awaitPresence(t, a, protocol.PresenceLeave, c.Welcome.UserID, 30*time.Second)
	t.Logf("a killed node's member left after %v", time.Since(start).Round(time.Second))
	if p.Count != 1 {
		t.Fatalf("after c's node died: count %d, want 1", p.Count)
	}
}
