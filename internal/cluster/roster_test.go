package cluster_test

import (
	"context"
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
		if _, _, listed, err := x.Add(ctx, "r", protocol.User{UserID: id, Name: "n-" + id}, 2); err != nil || listed {
			t.Fatalf("add %s: listed %v, %v; want a new entry", id, listed, err)
		}
	}
	count, members, _, err := y.Add(ctx, "r", protocol.User{UserID: "u4", Name: "n-u4"}, 2)
	if err != nil || count != 4 || len(members) != 2 {
		t.Fatalf("add on the other node: count %d, %d members, %v; want 4 and 2 listed", count, len(members), err)
	}
	// u1 moves to y; x's removal of its old entry must not take it out.
	// y's Add says u1 was listed already (its join is not news).
	if _, _, listed, err := y.Add(ctx, "r", protocol.User{UserID: "u1", Name: "n-u1"}, 10); err != nil || !listed {
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
