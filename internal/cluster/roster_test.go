package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/broker/brokertest"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/protocol"
)

// Two nodes' rosters on one Redis: lists are shared, capped, and only the
// node that listed a user takes it out (a user that moved to another node
// stays listed when its old node's grace period ends).
func TestRosterAcrossNodes(t *testing.T) {
	srv := sharedRedis(t)
	_, sts := nodes(t, srv, []broker.Handler{brokertest.NewRecorder(), brokertest.NewRecorder()})
	var mu sync.Mutex
	var left []string
	onLeft := func(room string, u protocol.User, count int) {
		mu.Lock()
		left = append(left, u.UserID)
		mu.Unlock()
	}
	x, y := cluster.NewRoster(sts[0]), cluster.NewRoster(sts[1])
	x.Start(onLeft)
	y.Start(onLeft)
	ctx := context.Background()
	for _, id := range []string{"u1", "u2", "u3"} {
		if _, _, listed, _, err := x.Add(ctx, "r", protocol.User{UserID: id, Name: "n-" + id}, 0, 2); err != nil || listed {
			t.Fatalf("add %s: listed %v, %v; want a new entry", id, listed, err)
		}
	}
	count, members, _, _, err := y.Add(ctx, "r", protocol.User{UserID: "u4", Name: "n-u4"}, 0, 2)
	if err != nil || count != 4 || len(members) != 2 {
		t.Fatalf("add on the other node: count %d, %d members, %v; want 4 and 2 listed", count, len(members), err)
	}
	// u1 moves to y; x's removal of its old entry must not take it out.
	// y's Add says u1 was listed already (its join is not news).
	if _, _, listed, _, err := y.Add(ctx, "r", protocol.User{UserID: "u1", Name: "n-u1"}, 0, 10); err != nil || !listed {
		t.Fatalf("u1 moving to y: listed %v, %v; want listed", listed, err)
	}
	if n, removed, err := x.Remove(ctx, "r", "u1"); err != nil || n != 4 || removed {
		t.Fatalf("x removing a user now on y: count %d, removed %v, %v; want 4, not removed", n, removed, err)
	}
	if n, removed, err := x.Remove(ctx, "r", "u2"); err != nil || n != 3 || !removed {
		t.Fatalf("x removing its own user: count %d, removed %v, %v; want 3, removed", n, removed, err)
	}
	count, members, err = x.List(ctx, "r", 10)
	var ids []string
	for _, m := range members {
		ids = append(ids, m.UserID)
	}
	slices.Sort(ids)
	if err != nil || count != 3 || !slices.Equal(ids, []string{"u1", "u3", "u4"}) {
		t.Fatalf("list: %d %v %v", count, ids, err)
	}
	// A clean stop takes a node's members out at once and announces them.
	x.Close()
	y.Close()
	count, _, _ = y.List(ctx, "r", 10)
	mu.Lock()
	slices.Sort(left)
	got := slices.Clone(left)
	mu.Unlock()
	if count != 0 || !slices.Equal(got, []string{"u1", "u3", "u4"}) {
		t.Fatalf("after both nodes stopped: count %d, leaves %v; want 0 and u1 u3 u4", count, got)
	}
}

// Capacity is the cluster's: two nodes racing for a room's last places
// get exactly capacity entries between them, the rest are refused with
// nothing written, and a user listed already (a resume) keeps its place.
func TestRosterCapacityAcrossNodes(t *testing.T) {
	srv := sharedRedis(t)
	_, sts := nodes(t, srv, []broker.Handler{brokertest.NewRecorder(), brokertest.NewRecorder()})
	x, y := cluster.NewRoster(sts[0]), cluster.NewRoster(sts[1])
	x.Start(func(string, protocol.User, int) {})
	y.Start(func(string, protocol.User, int) {})
	t.Cleanup(func() { x.Close(); y.Close() })
	ctx := context.Background()
	const capacity, tries = 5, 20
	var mu sync.Mutex
	var admitted, refused int
	var wg sync.WaitGroup
	for i := range tries {
		node := x
		if i%2 == 1 {
			node = y
		}
		wg.Go(func() {
			id := fmt.Sprintf("u%d", i)
			count, _, _, full, err := node.Add(ctx, "cap", protocol.User{UserID: id, Name: id}, capacity, 10)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("add %s: %v", id, err)
			case full:
				refused++
				if count != capacity {
					t.Errorf("add %s refused with count %d, want %d", id, count, capacity)
				}
			default:
				admitted++
			}
		})
	}
	wg.Wait()
	count, members, err := x.List(ctx, "cap", 100)
	if err != nil || admitted != capacity || refused != tries-capacity || count != capacity || len(members) != capacity {
		t.Fatalf("admitted %d, refused %d, listed %d (%d members), %v; want %d admitted, %d refused, %d listed",
			admitted, refused, count, len(members), err, capacity, tries-capacity, capacity)
	}
	// A listed user moving to the other node is no new member.
	moved := members[0]
	if _, _, listed, full, err := y.Add(ctx, "cap", moved, capacity, 10); err != nil || full || !listed {
		t.Fatalf("listed user %s re-added at capacity: listed %v, full %v, %v; want listed", moved.UserID, listed, full, err)
	}
	// Without a bound the room grows past it.
	if count, _, _, full, err := x.Add(ctx, "cap", protocol.User{UserID: "extra", Name: "extra"}, 0, 10); err != nil || full || count != capacity+1 {
		t.Fatalf("add without a bound: count %d, full %v, %v", count, full, err)
	}
}
