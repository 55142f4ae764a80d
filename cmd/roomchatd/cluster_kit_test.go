package main

import (
	"io"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// The cluster tests' kit (SPEC §8): a redis-server and roomchatd nodes
// started from the built binary, each on its own port, and the clients,
// reads and checks that those tests share.

// startCluster starts a redis-server of its own and n nodes on it, with
// args added to each node's flags.
func startCluster(t *testing.T, n int, args ...string) (*redistest.Server, []*chattest.Server) {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	return srv, startNodes(t, srv, n, args...)
}

// startNodes starts n nodes on srv's Redis. Each uses the same key
// prefix, as nodes of one cluster do.
func startNodes(t *testing.T, srv *redistest.Server, n int, args ...string) []*chattest.Server {
	t.Helper()
	return startNodesOn(t, srv.URL(), n, args...)
}

// startNodesOn starts n nodes on the Redis at redisURL (redis:// or
// redis+sentinel://), each with a grace period of 2 s and args added
// (a later flag overrides an earlier one).
func startNodesOn(t *testing.T, redisURL string, n int, args ...string) []*chattest.Server {
	t.Helper()
	var nodes []*chattest.Server
	for range n {
		nodes = append(nodes, chattest.Start(t, append([]string{"-redis", redisURL, "-grace", "2s"}, args...)...))
	}
	return nodes
}

// member connects a new user to node and joins roomID.
func member(t *testing.T, node *chattest.Server, roomID string) (*chattest.Client, protocol.Joined) {
	t.Helper()
	c := chattest.Dial(t, node.URL, "")
	return c, c.JoinSince(t, roomID, nil)
}

// resumeAs connects to base with resume token token and fails unless the
// connection is userID's; what names the resume in the failure.
func resumeAs(t *testing.T, base, token, userID, what string) *chattest.Client {
	t.Helper()
	c := chattest.Dial(t, base, "?resume="+url.QueryEscape(token))
	if c.Welcome.UserID != userID {
		t.Fatalf("%s as %q, want %q", what, c.Welcome.UserID, userID)
	}
	return c
}

// retryAcked joins roomID since 0 on c and sends again the msg first
// acknowledged with id and text: it must be acked once, as it was first.
func retryAcked(t *testing.T, c *chattest.Client, roomID, id, text string, first protocol.Ack) {
	t.Helper()
	zero := int64(0)
	c.JoinSince(t, roomID, &zero)
	if again := c.SendAck(t, id, text); again.Seq != first.Seq || again.MsgID != first.MsgID {
		t.Fatalf("retried msg acked as %+v, first %+v", again, first)
	}
}

// collect reads msg events from c until it has seen seq last, and returns
// their message IDs in seq order, failing on a gap or repeat.
func collect(t *testing.T, c *chattest.Client, after, last int64) []string {
	t.Helper()
	var ids []string
	next := after + 1
	deadline := time.Now().Add(20 * time.Second)
	for next <= last {
		e, err := c.Read(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for seq %d of %d: %v", next, last, err)
		}
		if e.Type != protocol.TypeMsg {
			continue
		}
		m := chattest.MsgOf(t, e)
		if m.Seq != next {
			t.Fatalf("got seq %d, want %d: a gap or repeat", m.Seq, next)
		}
		ids = append(ids, m.ID)
		next++
	}
	return ids
}

// awaitNewJoined reads c's events until a joined comes, and returns it;
// a msg before it fails the test (a new epoch's joined comes before any
// of its messages).
func awaitNewJoined(t *testing.T, c *chattest.Client, within time.Duration) protocol.Joined {
	t.Helper()
	for {
		e, err := c.Read(within)
		if err != nil {
			t.Fatalf("waiting for a new joined: %v", err)
		}
		if e.Type == protocol.TypeMsg {
			t.Fatalf("a message came before the new joined: %s", e)
		}
		if e.Type == protocol.TypeJoined {
			var j protocol.Joined
			chattest.Decode(t, e, &j)
			return j
		}
	}
}

// awaitPresence reads c's events until a presence event of event for
// userID comes, and returns it; other events are skipped.
func awaitPresence(t *testing.T, c *chattest.Client, event, userID string, within time.Duration) protocol.Presence {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		e, err := c.Read(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting %v for presence %s of %s: %v", within, event, userID, err)
		}
		if e.Type != protocol.TypePresence {
			continue
		}
		var p protocol.Presence
		chattest.Decode(t, e, &p)
		if p.Event == event && p.User.UserID == userID {
			return p
		}
	}
}

// roomInfo is GET /api/rooms/{id}'s answer, as far as the tests read it.
type roomInfo struct {
	RoomID  string          `json:"roomID"`
	Count   int             `json:"count"`
	Members []protocol.User `json:"members"`
}

// getRoom reads GET /api/rooms/{roomID} from base, which must answer 200.
func getRoom(t *testing.T, base, roomID string) roomInfo {
	t.Helper()
	var info roomInfo
	getJSON(t, base+"/api/rooms/"+roomID, http.StatusOK, &info)
	return info
}

// messagePage is GET /api/rooms/{id}/messages's answer.
type messagePage struct {
	Messages []protocol.Message `json:"messages"`
	LastSeq  int64              `json:"lastSeq"`
}

// getMessages reads GET /api/rooms/{roomID}/messages from base with
// query (such as "?limit=5", or ""), which must answer 200.
func getMessages(t *testing.T, base, roomID, query string) messagePage {
	t.Helper()
	var page messagePage
	getJSON(t, base+"/api/rooms/"+roomID+"/messages"+query, http.StatusOK, &page)
	return page
}

// waitStatus polls u until it answers status, failing after within.
func waitStatus(t *testing.T, u string, status int, within time.Duration) {
	t.Helper()
	last := 0
	if !chattest.Poll(within, func() bool {
		res, err := http.Get(u)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		last = res.StatusCode
		return last == status
	}) {
		t.Fatalf("GET %s: %d, want %d within %v", u, last, status, within)
	}
}

// redisInt runs a command on srv and returns its integer reply; -1 for
// an error.
func redisInt(srv *redistest.Server, words ...string) int64 {
	msg := srv.Do(srv.Client(), words...)
	n, err := msg.AsInt64()
	if err != nil {
		return -1
	}
	return n
}

// pauseRedis stops srv (SIGSTOP), as a Redis that hangs; the function it
// returns, also run when the test ends, lets it go on (SIGCONT) once.
func pauseRedis(t *testing.T, srv *redistest.Server) (resume func()) {
	t.Helper()
	pid := srv.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resume = sync.OnceFunc(func() { syscall.Kill(pid, syscall.SIGCONT) })
	t.Cleanup(resume)
	return resume
}
