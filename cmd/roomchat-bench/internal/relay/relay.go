// Package relay is roomchat-bench's baseline server: the least a server on
// roomchat's WebSocket library (github.com/coder/websocket) can do to fan a
// room's messages out. It is the ceiling roomchat is measured against
// (docs/benchmarks.md): no JSON, no registry beyond a map, no store.
//
// GET /?room=R upgrades to a WebSocket in room R; every text frame read is
// queued unchanged to every connection in R, the sender included (as
// roomchat echoes a msg to its sender), one frame per message. GET /healthz
// answers 200 "ok", and GET /metrics the few Prometheus gauges the bench
// reads (goroutines, heap, GCs, resident memory).
package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/proc"
)

// Relay is the relay's HTTP handler. Each connection has a reader (the
// handler) and one writer goroutine with a bounded queue; a connection
// whose queue is full is closed with 1013.
type Relay struct {
	mu    sync.Mutex // guards rooms; held only for map and channel sends
	rooms map[string]map[*conn]struct{}
	conns sync.WaitGroup // one per live connection handler
}

type conn struct {
	ws *websocket.Conn
	q  chan []byte // closed by the handler after it left the room; drained by the writer
	// slow is set once the connection was handed to a 1013 close.
	slow atomic.Bool
}

// queueLen bounds a connection's outbound queue: 512 slots (12 KiB of
// slice headers, allocated up front) hold 32 KiB of 64-byte messages,
// far more than a writer that keeps up ever has queued.
const queueLen = 512

// New returns a relay with no rooms.
func New() *Relay { return &Relay{rooms: map[string]map[*conn]struct{}{}} }

// ServeHTTP serves /?room=R (WebSocket), /healthz and /metrics. A
// WebSocket handler returns when its connection ends.
func (rl *Relay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		w.Write([]byte("ok\n"))
		return
	case "/metrics":
		rl.metrics(w)
		return
	case "/":
	default:
		http.NotFound(w, r)
		return
	}
	rl.serveWS(w, r)
}

// serveWS upgrades a /?room=R request, joins the connection to room R,
// starts its writer and relays every text frame it reads to the room
// until the connection ends; then it leaves the room, waits for the
// writer and drops the connection.
func (rl *Relay) serveWS(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	if room == "" {
		http.Error(w, "room query parameter required", http.StatusBadRequest)
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	rl.conns.Add(1)
	defer rl.conns.Done()
	ws.SetReadLimit(64 << 10)
	c := &conn{ws: ws, q: make(chan []byte, queueLen)}
	m := rl.join(room, c)

	var writer sync.WaitGroup
	writer.Go(c.writeLoop)

	for {
		typ, b, err := ws.Read(context.Background())
		if err != nil {
			break
		}
		if typ != websocket.MessageText {
			continue
		}
		rl.broadcast(room, b)
	}

	rl.mu.Lock()
	delete(m, c)
	if len(m) == 0 {
		delete(rl.rooms, room)
	}
	rl.mu.Unlock()
	close(c.q) // no broadcaster can reach c any more
	writer.Wait()
	ws.CloseNow()
}

// join adds c to room, creating the room if need be, and returns the
// room's members.
func (rl *Relay) join(room string, c *conn) map[*conn]struct{} {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	m := rl.rooms[room]
	if m == nil {
		m = map[*conn]struct{}{}
		rl.rooms[room] = m
	}
	m[c] = struct{}{}
	return m
}

// writeLoop writes c's queue to its socket until the queue is closed. On a
// write error it drops the connection and keeps draining the queue, so
// that broadcasters never see it full.
func (c *conn) writeLoop() {
	// Background: no timer per write; the handler's CloseNow ends a
	// blocked Write.
	for b := range c.q {
		if err := c.ws.Write(context.Background(), websocket.MessageText, b); err != nil {
			c.ws.CloseNow()
			for range c.q { // keep draining so broadcasters never see a full queue
			}
			return
		}
	}
}

// broadcast queues b to every connection in room, the sender included. A
// connection whose queue is full is handed to a 1013 close, once.
func (rl *Relay) broadcast(room string, b []byte) {
	rl.mu.Lock()
	for o := range rl.rooms[room] {
		select {
		case o.q <- b:
		default:
			if o.slow.CompareAndSwap(false, true) {
				// Close can block for seconds: never inline, never under mu.
				go o.ws.Close(websocket.StatusTryAgainLater, "slow reader")
			}
		}
	}
	rl.mu.Unlock()
}

// metrics writes the few gauges the bench reads, in Prometheus text format.
func (rl *Relay) metrics(w http.ResponseWriter) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss := int64(0)
	if v, err := proc.Status(os.Getpid(), "VmRSS"); err == nil {
		rss = v
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "go_goroutines %d\n", runtime.NumGoroutine())
	fmt.Fprintf(w, "go_memstats_heap_inuse_bytes %d\n", ms.HeapInuse)
	fmt.Fprintf(w, "go_memstats_heap_alloc_bytes %d\n", ms.HeapAlloc)
	fmt.Fprintf(w, "go_memstats_heap_objects %d\n", ms.HeapObjects)
	fmt.Fprintf(w, "go_gc_duration_seconds_count %d\n", ms.NumGC)
	fmt.Fprintf(w, "process_resident_memory_bytes %d\n", rss)
}

// Serve serves a new relay on ln until ctx ends, then stops accepting,
// closes every connection with 1001 (Close) and returns nil. It returns
// early with the error if serving fails.
func Serve(ctx context.Context, ln net.Listener) error {
	rl := New()
	srv := &http.Server{Handler: rl, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	rl.Close()
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close sends 1001 to every connection, at most 128 at a time, and waits
// for their handlers, at most 10 s (each Close gives up after 5 s). The
// relay can still accept connections afterwards; stop its listener first.
func (rl *Relay) Close() {
	rl.mu.Lock()
	var all []*conn
	for _, m := range rl.rooms {
		for c := range m {
			all = append(all, c)
		}
	}
	rl.mu.Unlock()
	sem := make(chan struct{}, 128)
	var wg sync.WaitGroup
	for _, c := range all {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = c.ws.Close(websocket.StatusGoingAway, "shutting down")
		})
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { rl.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}
