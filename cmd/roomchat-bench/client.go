package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/protocol"
)

// kind says which server a target speaks to.
type kind string

const (
	kindRoomchat kind = "roomchat" // SPEC §4 JSON protocol on /ws
	kindRelay    kind = "baseline" // raw relay: /?room=R, text in = text out
	// Centrifugo's JSON client protocol on /connection/websocket
	// (centrifugo.go); idle only.
	kindCentrifugo kind = "centrifugo"
)

// target is one server under test: one node, or the nodes of a cluster
// that the connections are spread over (see place).
type target struct {
	kind  kind
	nodes []*url.URL // ws://127.x.y.z:port each; at least one
	batch bool       // roomchat: ask for ?batch=1
	label string     // name in reports, default from kind, node count and batch
	// Centrifugo: the HMAC secret its tokens are signed with (none:
	// anonymous connections) and the namespace of the room channels.
	cfSecret    []byte
	cfNamespace string
}

// parseTarget accepts ws://, http:// or a bare host:port, or several of
// them separated by commas (the nodes of a cluster), and refuses any host
// outside 127.0.0.0/8: the tool only ever loads loopback servers.
func parseTarget(raw string, k kind) (*target, error) {
	if raw == "" {
		return nil, errors.New("empty server URL")
	}
	t := &target{kind: k}
	for one := range strings.SplitSeq(raw, ",") {
		u, err := parseNode(strings.TrimSpace(one))
		if err != nil {
			return nil, err
		}
		t.nodes = append(t.nodes, u)
	}
	if len(t.nodes) > 1 && k != kindRoomchat {
		return nil, fmt.Errorf("the %s target is one server: give it one URL", k)
	}
	return t, nil
}

// parseNode parses one server URL of parseTarget's list.
func parseNode(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("empty server URL in the list")
	}
	if !strings.Contains(raw, "://") {
		raw = "ws://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse server URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "ws", "http":
		u.Scheme = "ws"
	default:
		return nil, fmt.Errorf("server URL %q: scheme must be ws or http (loopback only)", raw)
	}
	if err := checkLoopback(u.Host); err != nil {
		return nil, err
	}
	u.Path, u.RawQuery = "", ""
	return u, nil
}

// place returns the node that member number member of room number room
// connects to: round robin over the nodes, starting one node further for
// each room. So every room's members are spread over all the nodes (a
// message crosses the cluster), and so are the rooms' first members, who
// are the fan-out's senders, whatever the room size. With one node it is
// always 0.
func (t *target) place(room, member int) int {
	return (room + member) % len(t.nodes)
}

// checkLoopback reports an error unless hostport names an address in
// 127.0.0.0/8 ("localhost" counts as 127.0.0.1).
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("address %q needs host:port: %w", hostport, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() == nil || ip.To4()[0] != 127 {
		return fmt.Errorf("address %q is not in 127.0.0.0/8: the benchmark only targets loopback", hostport)
	}
	return nil
}

// httpURL returns node's plain HTTP URL for path (for /metrics).
func (t *target) httpURL(node int, path string) string {
	u := *t.nodes[node]
	u.Scheme = "http"
	u.Path = path
	return u.String()
}

// wsURL returns node's WebSocket URL that joins room for a relay, its
// /connection/websocket for Centrifugo, or its /ws for roomchat.
func (t *target) wsURL(node int, room string) string {
	u := *t.nodes[node]
	q := url.Values{}
	switch t.kind {
	case kindRelay:
		u.Path = "/"
		q.Set("room", room)
	case kindCentrifugo:
		u.Path = "/connection/websocket"
	default:
		u.Path = "/ws"
		if t.batch {
			q.Set("batch", "1")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func (t *target) name() string {
	n := string(t.kind)
	if t.label != "" {
		n = t.label
	}
	if len(t.nodes) > 1 {
		n += fmt.Sprintf("-%dnodes", len(t.nodes))
	}
	if t.kind == kindRoomchat && t.batch {
		n += "+batch"
	}
	return n
}

// dialer opens WebSocket connections, spreading them over several loopback
// source addresses when one address would run out of ephemeral ports
// (about 28k on Linux's default range).
type dialer struct {
	clients []*http.Client
	perAddr int
}

// maxPerSourceAddr is how many connections share one loopback source
// address. Linux's connect() searches the ephemeral port range (32768–60999)
// for a free port, and that search gets slow long before the range is
// full: on this machine 19,500 connections from one address ran at 1,400
// connect+join/s with the generator's core busy in the kernel, against
// 7,400/s when spread over four addresses. So spread early.
var maxPerSourceAddr = 5000

// newDialer returns a dialer for up to n connections, perAddr of them on
// each source address: 127.0.0.1 when one is enough, else 127.0.0.2,
// 127.0.0.3, …
func newDialer(n int) *dialer {
	return newDialerAddrs((n+maxPerSourceAddr-1)/maxPerSourceAddr, maxPerSourceAddr)
}

// newDialerAddrs returns a dialer over addrs source addresses; connection
// i uses address (i/perAddr) mod addrs.
func newDialerAddrs(addrs, perAddr int) *dialer {
	addrs = min(max(addrs, 1), 250)
	d := &dialer{perAddr: max(perAddr, 1)}
	for i := range addrs {
		var local net.Addr
		if addrs > 1 {
			local = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}
		}
		nd := &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
		tr := &http.Transport{
			DialContext:         nd.DialContext,
			MaxIdleConnsPerHost: -1,
			DisableKeepAlives:   true,
			Proxy:               nil, // never route loopback load through a proxy
		}
		d.clients = append(d.clients, &http.Client{Transport: tr})
	}
	return d
}

// dial opens connection number i to rawURL. The handshake is bounded by ctx.
func (d *dialer) dial(ctx context.Context, i int, rawURL string) (*websocket.Conn, error) {
	cl := d.clients[(i/d.perAddr)%len(d.clients)]
	c, _, err := websocket.Dial(ctx, rawURL, &websocket.DialOptions{HTTPClient: cl})
	if err != nil {
		return nil, err
	}
	// A batch frame of a busy room can exceed the library's 32 KiB default.
	c.SetReadLimit(16 << 20)
	return c, nil
}

// conn is one benchmark connection with a reusable read buffer.
type conn struct {
	ws   *websocket.Conn
	buf  []byte
	room string
	node int // index in target.nodes
}

// readFrame reads one data frame into c.buf, reusing it, and returns it.
// It blocks until a frame arrives, ctx ends or the connection closes.
func (c *conn) readFrame(ctx context.Context) ([]byte, error) {
	_, r, err := c.ws.Reader(ctx)
	if err != nil {
		return nil, err
	}
	if c.buf == nil {
		c.buf = make([]byte, 0, 512)
	}
	b := c.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	c.buf = b
	return b, nil
}

// connect opens connection i to room on t's node and, for roomchat, reads
// welcome, sends join and waits for joined (SPEC §4); for Centrifugo it
// connects and subscribes to the room's channel (cfHandshake). Everything
// is bounded by ctx.
func connect(ctx context.Context, d *dialer, t *target, i int, room string, node int) (*conn, error) {
	ws, err := d.dial(ctx, i, t.wsURL(node, room))
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := &conn{ws: ws, room: room, node: node}
	switch t.kind {
	case kindRelay:
		return c, nil
	case kindCentrifugo:
		if err := c.cfHandshake(ctx, t, i); err != nil {
			ws.CloseNow()
			return nil, err
		}
		return c, nil
	}
	if err := c.expect(ctx, protocol.TypeWelcome, ""); err != nil {
		ws.CloseNow()
		return nil, err
	}
	join := protocol.Encode(protocol.TypeJoin, "", protocol.Join{RoomID: room})
	if err := ws.Write(ctx, websocket.MessageText, join); err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("send join: %w", err)
	}
	if err := c.expect(ctx, protocol.TypeJoined, room); err != nil {
		ws.CloseNow()
		return nil, err
	}
	return c, nil
}

// leave sends leave for c's room and waits for left.
func (c *conn) leave(ctx context.Context) error {
	leave := protocol.Encode(protocol.TypeLeave, "", protocol.RoomRef{RoomID: c.room})
	if err := c.ws.Write(ctx, websocket.MessageText, leave); err != nil {
		return fmt.Errorf("send leave: %w", err)
	}
	return c.expect(ctx, protocol.TypeLeft, c.room)
}

// expect reads events until one of type typ (for room, when given) arrives,
// skipping others (presence of other joiners); an error event fails.
func (c *conn) expect(ctx context.Context, typ, room string) error {
	for range 100000 { // bounded: a join into a busy room may see many presence events
		f, err := c.readFrame(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", typ, err)
		}
		for _, ev := range protocol.SplitBatch(f) {
			// Skip what cannot be either without decoding it.
			if !bytes.Contains(ev, []byte(`"`+typ+`"`)) && !bytes.Contains(ev, []byte(`"`+protocol.TypeError+`"`)) {
				continue
			}
			env, perr := protocol.DecodeEnvelope(ev)
			if perr != nil {
				return fmt.Errorf("waiting for %s: bad event %.200q: %w", typ, ev, perr)
			}
			switch env.Type {
			case protocol.TypeError:
				var pe protocol.Error
				if perr := protocol.DecodePayload(env, &pe); perr != nil {
					return fmt.Errorf("waiting for %s: bad error event %.200q: %w", typ, ev, perr)
				}
				return fmt.Errorf("waiting for %s: server error %w", typ, &pe)
			case typ:
				// Every reply the bench waits for names its room.
				var ref protocol.RoomRef
				if perr := protocol.DecodePayload(env, &ref); perr != nil {
					return fmt.Errorf("waiting for %s: bad event %.200q: %w", typ, ev, perr)
				}
				if room == "" || ref.RoomID == room {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("waiting for %s: too many other events", typ)
}

// connectAll opens n connections with up to par handshakes in flight;
// spot(i) names connection i's room and the node it connects to. Each
// connection is handed to joined as soon as it has joined, from the
// goroutine that connected it, so that its reader can start at once: a
// connection nobody reads does not answer the server's pings, and the
// server closes it once the ping timeout passes, which a long connect
// phase (a cluster's, on a busy machine) can outlast. connectAll stops at
// the first error (after closing what it opened) or when ctx ends.
func connectAll(ctx context.Context, d *dialer, t *target, n, par int, spot func(i int) (room string, node int), joined func(c *conn)) ([]*conn, error) {
	conns := make([]*conn, n)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan int)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range par {
		wg.Go(func() {
			for i := range next {
				room, node := spot(i)
				c, err := connect(cctx, d, t, i, room, node)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
						cancel()
					}
					mu.Unlock()
					continue
				}
				conns[i] = c
				joined(c)
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-cctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		closeAll(conns)
		return nil, firstErr
	}
	return conns, nil
}

// closeAll drops every connection without a close handshake (fast, and a
// handshake per connection would dominate teardown at 19,500 conns).
func closeAll(conns []*conn) {
	for _, c := range conns {
		if c != nil {
			c.ws.CloseNow()
		}
	}
}

// randID names a run's rooms, so that two runs against one server never
// share a room.
func randID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
