package server_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/server"
)

// An idle connection's read loop waits above the WebSocket library, also
// after keepalive pings and their pongs (the server takes the pongs
// itself), so that its goroutine's stack can shrink; and a client that
// answers pings stays connected.
func TestIdleReadLoopWaitsShallow(t *testing.T) {
	ts := chattest.StartInProcess(t, func(c *server.Config) {
		c.PingInterval = 250 * time.Millisecond
		c.PingTimeout = 100 * time.Millisecond
	})
	c := chattest.Dial(t, ts.URL, "") // its reader answers pings
	c.Join(t, "r")
	time.Sleep(time.Second) // four pings and their pongs
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	var loops, shallow int
	for _, g := range strings.Split(stacks, "\n\n") {
		if !strings.Contains(g, "server.(*conn).readLoop") {
			continue
		}
		loops++
		if strings.Contains(g, "wsconn.(*Conn).WaitReadable") && !strings.Contains(g, "websocket.(*Conn).Reader") {
			shallow++
		}
	}
	if loops != 1 || shallow != 1 {
		t.Fatalf("%d read loops, %d waiting in wsconn.WaitReadable; want 1 and 1:\n%s", loops, shallow, stacks)
	}
	c.SendAck(t, "still", "there") // the connection survived the pings
}

// Clients that answer pings stay connected through many of them, each
// ping going out between frames (a ping inside a frame would break the
// stream, and one never sent would drop the client).
func TestPingsKeepAnsweringClients(t *testing.T) {
	// Many pings in a short test, with a timeout that a client on a
	// loaded machine (the race detector, other packages' tests) answers
	// in: at 100 ms one client in a few runs was dropped.
	ts := chattest.StartInProcess(t, chattest.NoRate, func(c *server.Config) {
		c.PingInterval = 300 * time.Millisecond
		c.PingTimeout = 250 * time.Millisecond
	})
	var clients []*chattest.Client
	for range 40 {
		c := chattest.Dial(t, ts.URL, "")
		c.Join(t, "r")
		clients = append(clients, c)
	}
	// Traffic during the pings: frames of several sizes in the writers.
	for i := range 20 {
		clients[i%len(clients)].Sendf(t, `{"type":"msg","payload":{"message":%q}}`, strings.Repeat("x", i*200))
		time.Sleep(75 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // five more pings, idle
	for i, c := range clients {
		select {
		case <-c.Done():
			t.Fatalf("client %d was dropped: %v", i, c.Err())
		default:
		}
	}
}
