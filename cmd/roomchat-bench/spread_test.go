package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

func TestParseTargetNodes(t *testing.T) {
	for _, tc := range []struct {
		in    string
		k     kind
		nodes []string // hosts; nil: an error
		name  string
	}{
		{"ws://127.0.0.1:8080", kindRoomchat, []string{"127.0.0.1:8080"}, "roomchat"},
		{"ws://127.0.0.1:1,ws://127.0.0.1:2,127.0.0.3:3", kindRoomchat, []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.3:3"}, "roomchat-3nodes"},
		{"http://127.0.0.1:1, http://127.0.0.1:2", kindRoomchat, []string{"127.0.0.1:1", "127.0.0.1:2"}, "roomchat-2nodes"},
		{"ws://127.0.0.1:1,ws://10.0.0.1:2", kindRoomchat, nil, ""},
		{"ws://127.0.0.1:1,,ws://127.0.0.1:2", kindRoomchat, nil, ""},
		{"ws://127.0.0.1:1,", kindRoomchat, nil, ""},
		{"ws://127.0.0.1:1,ws://127.0.0.1:2", kindRelay, nil, ""},
	} {
		tg, err := parseTarget(tc.in, tc.k)
		if tc.nodes == nil {
			if err == nil {
				t.Errorf("parseTarget(%q, %s): no error, want one", tc.in, tc.k)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseTarget(%q, %s): %v", tc.in, tc.k, err)
			continue
		}
		var hosts []string
		for _, u := range tg.nodes {
			hosts = append(hosts, u.Host)
		}
		if !slices.Equal(hosts, tc.nodes) || tg.name() != tc.name {
			t.Errorf("parseTarget(%q): nodes %v, name %q; want %v, %q", tc.in, hosts, tg.name(), tc.nodes, tc.name)
		}
	}
}

func TestPlace(t *testing.T) {
	for _, tc := range []struct{ nodes, rooms, members, senders int }{
		{1, 100, 100, 1},
		{3, 100, 100, 1}, // the cluster benchmark
		{3, 100, 99, 1},  // members a multiple of the nodes
		{3, 7, 4, 2},
		{2, 10, 10, 3},
		{3, 2, 1, 1}, // fewer members than nodes
	} {
		t.Run(fmt.Sprintf("%dnodes/%dx%d/%dsenders", tc.nodes, tc.rooms, tc.members, tc.senders), func(t *testing.T) {
			tg, err := parseTarget(nodeList(tc.nodes), kindRoomchat)
			if err != nil {
				t.Fatal(err)
			}
			senders := make([]int, tc.nodes)
			total := make([]int, tc.nodes)
			for room := range tc.rooms {
				members := make([]int, tc.nodes)
				for m := range tc.members {
					n := tg.place(room, m)
					if n < 0 || n >= tc.nodes {
						t.Fatalf("place(%d, %d) = %d, want a node in [0, %d)", room, m, n, tc.nodes)
					}
					members[n]++
					total[n]++
					if m < tc.senders {
						senders[n]++
					}
				}
				// Each room's members: as even as can be.
				if d := slices.Max(members) - slices.Min(members); d > 1 {
					t.Errorf("room %d: members per node %v, want within 1 of each other", room, members)
				}
			}
			// The senders of all rooms, and all connections: even too.
			if d := slices.Max(senders) - slices.Min(senders); d > 1 {
				t.Errorf("senders per node %v, want within 1 of each other", senders)
			}
			if d := slices.Max(total) - slices.Min(total); d > 1 {
				t.Errorf("connections per node %v, want within 1 of each other", total)
			}
		})
	}
}

func nodeList(n int) string {
	s := ""
	for i := range n {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("ws://127.0.0.1:%d", 10000+i)
	}
	return s
}

// startCluster starts n roomchatd nodes (the built binary, -redis) on one
// real redis-server.
func startCluster(t *testing.T, n int) []*chattest.Server {
	t.Helper()
	rs := redistest.Start(t, redistest.Options{})
	var nodes []*chattest.Server
	for range n {
		nodes = append(nodes, chattest.Start(t, "-redis", rs.URL()))
	}
	return nodes
}

// clusterTarget is the -server value naming every node.
func clusterTarget(t *testing.T, nodes []*chattest.Server) *target {
	t.Helper()
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.URL)
	}
	tg, err := parseTarget(strings.Join(urls, ","), kindRoomchat)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// accepted is how many WebSocket connections node has accepted, from its
// /metrics.
func accepted(t *testing.T, node *chattest.Server) int64 {
	t.Helper()
	m, err := scrapeMetrics(t.Context(), node.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return int64(m["roomchat_connections_total"])
}

// TestFanoutSpreadsOverNodes runs fanout against three nodes of a real
// cluster: every member gets every message, whichever node its sender is
// on, and each node holds its share of the connections.
func TestFanoutSpreadsOverNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	tg := clusterTarget(t, nodes)
	cfg := smallFanout()
	cfg.Rooms, cfg.Members, cfg.Label = 4, 5, "4x5"
	res, err := runFanout(t.Context(), tg, cfg, func(any) {})
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, res, cfg)
	if res.Nodes != 3 || res.Target != "roomchat-3nodes" {
		t.Errorf("result names %d nodes, target %q; want 3, roomchat-3nodes", res.Nodes, res.Target)
	}
	for i, n := range nodes {
		if got, want := accepted(t, n), int64(cfg.Rooms*cfg.Members/3); got < want || got > want+1 {
			t.Errorf("node %d got %d connections, want %d or %d", i, got, want, want+1)
		}
	}
}

// TestIdleSpreadsOverNodes holds connections on three nodes of a real
// cluster and reports each node's share and memory.
func TestIdleSpreadsOverNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	tg := clusterTarget(t, nodes)
	pids := []int{nodes[0].PID(), nodes[1].PID(), nodes[2].PID()}
	res, err := runIdle(t.Context(), tg, idleConfig{Conns: 31, Rooms: 4, PIDs: pids, Par: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Conns != 31 || res.Dropped != 0 || len(res.Nodes) != 3 {
		t.Fatalf("idle = %+v", res)
	}
	sum := 0
	for i, n := range res.Nodes {
		sum += n.Conns
		if got := accepted(t, nodes[i]); int64(n.Conns) != got {
			t.Errorf("node %d: reported %d conns, the node accepted %d", i, n.Conns, got)
		}
		if n.Conns < 10 || n.Conns > 11 || n.PID != pids[i] || n.Before <= 0 || n.After <= 0 {
			t.Errorf("node %d = %+v", i, n)
		}
	}
	if sum != res.Conns {
		t.Errorf("nodes hold %d conns in all, want %d", sum, res.Conns)
	}
	if _, err := runIdle(t.Context(), tg, idleConfig{Conns: 3, PIDs: pids[:1], Par: 1}); err == nil {
		t.Error("one -pid for three servers: no error")
	}
}

// TestIdleAnswersPingsWhileConnecting: a connection that has joined is
// read at once, not after the last one has joined, so it answers the
// server's pings while the others are still connecting. The server here
// pings the first connection with a 1 s timeout and holds the second
// handshake for 2 s; a reader started only after connectAll returned
// would miss the ping.
func TestIdleAnswersPingsWhileConnecting(t *testing.T) {
	var (
		n       atomic.Int64
		pingErr = make(chan error, 1)
	)
	h := http.NewServeMux()
	h.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		first := n.Add(1) == 1
		if !first {
			time.Sleep(2 * time.Second)
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		ws.Write(ctx, websocket.MessageText, protocol.Encode(protocol.TypeWelcome, "", protocol.Welcome{UserID: "u", Limits: protocol.DefaultLimits()}))
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		env, _ := protocol.DecodeEnvelope(data)
		var j protocol.Join
		protocol.DecodePayload(env, &j)
		ws.Write(ctx, websocket.MessageText, protocol.Encode(protocol.TypeJoined, env.ID, protocol.Joined{RoomID: j.RoomID}))
		rctx := ws.CloseRead(context.Background())
		if first {
			pctx, cancel := context.WithTimeout(rctx, time.Second)
			pingErr <- ws.Ping(pctx)
			cancel()
		}
		<-rctx.Done()
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tg, err := parseTarget(srv.URL, kindRoomchat)
	if err != nil {
		t.Fatal(err)
	}
	res, err := runIdle(t.Context(), tg, idleConfig{Conns: 2, Rooms: 1, PIDs: []int{os.Getpid()}, Par: 1})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-pingErr:
		if err != nil {
			t.Errorf("the first connection did not answer a ping while the second was connecting: %v", err)
		}
	default:
		t.Error("the server never pinged")
	}
	if res.Dropped != 0 {
		t.Errorf("dropped %d (%s), want 0", res.Dropped, res.FirstDrop)
	}
}
