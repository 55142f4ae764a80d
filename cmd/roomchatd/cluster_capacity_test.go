package main

import (
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
)

// joinOutcome sends a join of roomID and returns "joined" or the error
// code that answers it, skipping presence events.
func joinOutcome(t *testing.T, c *chattest.Client, roomID string) string {
	t.Helper()
	if err := c.Writef(`{"type":"join","payload":{"roomID":%q}}`, roomID); err != nil {
		t.Errorf("join: %v", err)
		return ""
	}
	for {
		f, err := c.Read(chattest.Timeout)
		if err != nil {
			t.Errorf("waiting for the join's answer: %v", err)
			return ""
		}
		switch f.Type {
		case protocol.TypeJoined:
			return "joined"
		case protocol.TypeError:
			var e protocol.Error
			chattest.Decode(t, f, &e)
			return e.Code
		}
	}
}

// Capacity is the cluster's (SPEC §4, §8): with -room-capacity 3, two
// members joining on each of two nodes at once, the fourth is room_full
// on whichever node it lands; a join on either node is refused while the
// room is full, and once a member leaves one is admitted again.
func TestClusterCapacity(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	_, nodes := startCluster(t, 2, "-room-capacity", "3")
	var clients []*chattest.Client
	for i := range 4 {
		clients = append(clients, chattest.Dial(t, nodes[i%2].URL, ""))
	}
	outcomes := make([]string, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { outcomes[i] = joinOutcome(t, c, "full") })
	}
	wg.Wait()
	var in []*chattest.Client
	refused := -1
	for i, o := range outcomes {
		switch o {
		case "joined":
			in = append(in, clients[i])
		case protocol.CodeRoomFull:
			refused = i
		default:
			t.Fatalf("join %d on node %d: %q, want joined or room_full", i, i%2, o)
		}
	}
	if len(in) != 3 || refused < 0 {
		t.Fatalf("four joins at capacity 3 across two nodes: %v; want three joined and one room_full", outcomes)
	}
	t.Logf("the refused join was on node %d", refused%2)
	for i, n := range nodes {
		late := chattest.Dial(t, n.URL, "")
		if o := joinOutcome(t, late, "full"); o != protocol.CodeRoomFull {
			t.Fatalf("a join on node %d of the full room: %q, want room_full", i, o)
		}
	}
	// A leave makes a place, on the other node as on its own; the
	// refused join took none.
	in[0].Send(t, `{"type":"leave","payload":{"roomID":"full"}}`)
	in[0].Await(t, protocol.TypeLeft)
	// The leave's roster removal runs after left is sent.
	chattest.Eventually(t, 5*time.Second, func() bool {
		o := joinOutcome(t, clients[refused], "full")
		if o != "joined" && o != protocol.CodeRoomFull {
			t.Fatalf("join after a leave: %q, want joined or room_full", o)
		}
		return o == "joined"
	}, "a join on node %d admitted after a leave", refused%2)
}
