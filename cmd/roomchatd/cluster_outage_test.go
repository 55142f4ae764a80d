package main

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
)

// watchLeaves reads c's events in the background and records every
// presence leave; stop ends the reading and returns them.
func watchLeaves(c *chattest.Client) (stop func() []string) {
	var mu sync.Mutex
	var leaves []string
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
			}
			e, err := c.Read(100 * time.Millisecond)
			if errors.Is(err, chattest.ErrNoEvent) {
				continue
			}
			if err != nil {
				return
			}
			if e.Type == protocol.TypePresence {
				var p struct {
					Event string        `json:"event"`
					User  protocol.User `json:"user"`
				}
				if env, err := protocol.DecodeEnvelope(e.Raw); err == nil && protocol.DecodePayload(env, &p) == nil && p.Event == protocol.PresenceLeave {
					mu.Lock()
					leaves = append(leaves, p.User.UserID)
					mu.Unlock()
				}
			}
		}
	}()
	return func() []string {
		close(quit)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return leaves
	}
}

// roomCount polls GET /api/rooms/{room} on node until it answers, and
// returns its count.
func roomCount(t *testing.T, node *chattest.Server, room string) int {
	t.Helper()
	waitStatus(t, node.URL+"/readyz", http.StatusOK, 15*time.Second)
	return getRoom(t, node.URL, room).Count
}

// A Redis outage longer than any presence lifetime, whether Redis hangs
// (SIGSTOP) or dies and comes back from its AOF, ends without a presence
// flicker (SPEC §8): no member on any node is announced as having left,
// and the room still counts every member once the nodes have had time to
// sweep.
func TestClusterOutageNoLeave(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv, nodes := startCluster(t, 2)
	a, _ := member(t, nodes[0], "r")
	b, _ := member(t, nodes[1], "r")
	c, _ := member(t, nodes[0], "r")
	awaitPresence(t, a, protocol.PresenceJoin, c.Welcome.UserID, 5*time.Second)
	var stops []func() []string
	for _, m := range []*chattest.Client{a, b, c} {
		stops = append(stops, watchLeaves(m))
	}
	const outage = 25 * time.Second // past every presence lifetime (20 s)
	// after is how long the nodes get after Redis is back: longer than it
	// takes a node to find a dead one (a lapsed beat, then a sweep).
	const after = 25 * time.Second

	cont := pauseRedis(t, srv)
	time.Sleep(outage)
	cont()
	time.Sleep(after)
	if n := roomCount(t, nodes[1], "r"); n != 3 {
		t.Errorf("after Redis hung for %v: count %d, want 3", outage, n)
	}

	srv.Kill()
	time.Sleep(outage)
	srv.Restart()
	time.Sleep(after)
	if n := roomCount(t, nodes[0], "r"); n != 3 {
		t.Errorf("after Redis was down for %v: count %d, want 3", outage, n)
	}
	for i, stop := range stops {
		if leaves := stop(); len(leaves) > 0 {
			t.Errorf("member %d saw leaves of %v, who never left", i, leaves)
		}
	}
}
