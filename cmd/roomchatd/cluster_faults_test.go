package main

import (
	"strconv"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// Faults of Redis in cluster mode (SPEC §8), with real processes.

// A since or after past any seq reads nothing (SPEC §5: never a 5xx for
// bad input), as with SQLite: Redis's scripts once got it as a float.
func TestClusterHugeSince(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv := redistest.Start(t, redistest.Options{})
	node := startNodes(t, srv, 1)[0]
	c, _ := member(t, node, "r")
	c.SendAck(t, "one", "one")
	for _, n := range []string{"100000000000000000", "9223372036854775807"} {
		var page struct {
			Messages []protocol.Message `json:"messages"`
			LastSeq  int64              `json:"lastSeq"`
		}
		getJSON(t, node.URL+"/api/rooms/r/messages?after="+n, 200, &page)
		if len(page.Messages) != 0 || page.LastSeq != 1 {
			t.Errorf("after=%s: %+v, want no messages and lastSeq 1", n, page)
		}
		since, _ := strconv.ParseInt(n, 10, 64)
		j := chattest.Dial(t, node.URL, "").JoinSince(t, "r", &since)
		if len(j.History) != 0 || j.LastSeq != 1 {
			t.Errorf("join since %s: %d messages, lastSeq %d; want none, 1", n, len(j.History), j.LastSeq)
		}
		c.Sendf(t, `{"type":"history","id":"h","payload":{"roomID":"r","after":%s}}`, n)
		var h protocol.History
		chattest.Decode(t, c.Await(t, protocol.TypeHistory), &h)
		if len(h.Messages) != 0 || h.More {
			t.Errorf("history after %s: %+v, want an empty page", n, h)
		}
	}
}
