package main

import (
	"slices"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
)

// A killed node's entries leave the presence lists of rooms that no live
// node has members in too: nobody there sweeps them, but the node's own
// list of rooms says where they are.
func TestClusterDeadNodeLonelyRoom(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv, nodes := startCluster(t, 2)
	member(t, nodes[0], "lonely")
	member(t, nodes[1], "elsewhere")
	if n := redisInt(srv, "HLEN", "roomchat:{lonely}:p"); n != 1 {
		t.Fatalf("lonely's presence holds %d entries, want 1", n)
	}
	nodes[0].Kill(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := redisInt(srv, "HLEN", "roomchat:{lonely}:p")
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after its node died, lonely's presence still holds %d entries", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if info := getRoom(t, nodes[1].URL, "lonely"); info.Count != 0 {
		t.Fatalf("GET /api/rooms/lonely: count %d, want 0", info.Count)
	}
}

// After FLUSHALL the new joined a member gets counts and lists it (its
// node asserts its members again before it answers), and soon the room
// counts every node's members again.
func TestClusterFlushAllJoinedCount(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv, nodes := startCluster(t, 2)
	a, _ := member(t, nodes[0], "r")
	member(t, nodes[1], "r")
	a.SendAck(t, "one", "one")
	srv.Do(srv.Client(), "FLUSHALL")
	a.Send(t, `{"type":"msg","payload":{"message":"first of the new epoch"}}`)
	var j protocol.Joined
	chattest.Decode(t, a.Await(t, protocol.TypeJoined), &j)
	ids := []string{}
	for _, m := range j.Members {
		ids = append(ids, m.UserID)
	}
	if j.Count < 1 || j.Count != len(j.Members) || !slices.Contains(ids, a.Welcome.UserID) {
		t.Fatalf("joined after FLUSHALL: count %d, members %v; want a listed and counted", j.Count, ids)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info := getRoom(t, nodes[0].URL, "r")
		if info.Count == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after FLUSHALL the room counts %d members, want 2", info.Count)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
