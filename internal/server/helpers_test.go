package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
)

// testServer is a real server on a loopback port.
type testServer struct {
	*server.Server
	http  *httptest.Server
	store store.Store
	URL   string
}

// newTestServer starts a server with an in-memory store; mod may change
// its Config. Logs go to the test's output.
func newTestServer(t *testing.T, mod ...func(*server.Config)) *testServer {
	t.Helper()
	st := store.NewMemory(store.Retention{})
	cfg := server.Config{
		Store:  st,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: testLogLevel})),
	}
	for _, m := range mod {
		m(&cfg)
	}
	if cfg.Store != st {
		st = nil
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	ts := &testServer{Server: srv, http: hs, store: cfg.Store, URL: hs.URL}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
		if st != nil {
			st.Close()
		}
	})
	return ts
}

// noRate turns the rate limit off.
func noRate(c *server.Config) {
	c.Limits = protocol.DefaultLimits()
	c.Limits.Rate = 0
}

// client is a raw WebSocket client that speaks frames. One goroutine
// reads the socket into events, so that waiting with a timeout never
// touches the connection (coder/websocket closes a connection whose Read
// context ends).
type client struct {
	t       testing.TB
	ws      *websocket.Conn
	welcome protocol.Welcome
	events  chan frame
	done    chan struct{} // closed when the reader ends
	err     error         // why the reader ended; read after done
}

// frame is one server event as read.
type frame struct {
	protocol.Envelope
	raw []byte
}

func (f frame) String() string { return string(f.raw) }

// dial connects to ts's /ws with the query and reads welcome.
func dial(t testing.TB, ts *testServer, query string) *client {
	t.Helper()
	c := dialNoWelcome(t, ts, query, nil)
	w := c.expect(protocol.TypeWelcome)
	decode(t, w, &c.welcome)
	return c
}

func dialNoWelcome(t testing.TB, ts *testServer, query string, h http.Header) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws" + query
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	ws.SetReadLimit(-1)
	c := &client{t: t, ws: ws, events: make(chan frame, 100000), done: make(chan struct{})}
	go c.readLoop()
	t.Cleanup(func() {
		ws.CloseNow()
		<-c.done
	})
	return c
}

func (c *client) readLoop() {
	defer close(c.done)
	for {
		typ, b, err := c.ws.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		if typ != websocket.MessageText {
			c.err = fmt.Errorf("got a %v frame", typ)
			return
		}
		for _, p := range protocol.SplitBatch(b) {
			env, perr := protocol.DecodeEnvelope(p)
			if perr != nil {
				c.err = fmt.Errorf("server sent an undecodable event %q: %v", p, perr)
				return
			}
			c.events <- frame{env, p}
		}
	}
}

// read returns the next event, or an error: the connection's end, or
// errNothing after d.
func (c *client) read(d time.Duration) (frame, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case f := <-c.events:
		return f, nil
	case <-c.done:
		select {
		case f := <-c.events:
			return f, nil
		default:
			return frame{}, c.err
		}
	case <-t.C:
		return frame{}, errNothing
	}
}

var errNothing = errors.New("no event arrived in time")

// send writes one text frame.
func (c *client) send(raw string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(raw)); err != nil {
		c.t.Fatalf("write %s: %v", raw, err)
	}
}

// sendf writes a frame built with fmt.Sprintf.
func (c *client) sendf(format string, args ...any) {
	c.t.Helper()
	c.send(fmt.Sprintf(format, args...))
}

// next returns the next event, failing the test after 5 s.
func (c *client) next() frame {
	c.t.Helper()
	f, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("reading the next event: %v", err)
	}
	return f
}

// expect reads the next event and fails unless it has type typ.
func (c *client) expect(typ string) frame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ {
		c.t.Fatalf("got event %s, want type %q", f, typ)
	}
	return f
}

// await reads events until one of type typ arrives, skipping others.
func (c *client) await(typ string) frame {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var skipped []string
	for time.Now().Before(deadline) {
		f, err := c.read(time.Until(deadline))
		if err != nil {
			break
		}
		if f.Type == typ {
			return f
		}
		skipped = append(skipped, f.String())
	}
	c.t.Fatalf("no %q event within 5s; skipped %v", typ, skipped)
	return frame{}
}

// quiet fails if any event arrives within d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	if f, err := c.read(d); err == nil {
		c.t.Fatalf("got unexpected event %s", f)
	}
}

// expectError reads the next event and checks it is an error with code.
func (c *client) expectError(code string) protocol.Error {
	c.t.Helper()
	f := c.expect(protocol.TypeError)
	var e protocol.Error
	decode(c.t, f, &e)
	if e.Code != code {
		c.t.Fatalf("got error %s, want code %q", f, code)
	}
	if e.Message == "" {
		c.t.Fatalf("error %s has no message", f)
	}
	return e
}

// expectClose reads until the connection closes and checks the code.
func (c *client) expectClose(code websocket.StatusCode) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, err := c.read(time.Until(deadline))
		if err == nil {
			continue
		}
		if err == errNothing {
			break
		}
		if got := websocket.CloseStatus(err); got != code {
			c.t.Fatalf("connection ended with %v (status %d), want close code %d", err, got, code)
		}
		return
	}
	c.t.Fatalf("connection not closed within 10s, want close code %d", code)
}

// join joins room and returns joined.
func (c *client) join(room string) protocol.Joined {
	c.t.Helper()
	c.sendf(`{"type":"join","payload":{"roomID":%q}}`, room)
	var j protocol.Joined
	decode(c.t, c.expect(protocol.TypeJoined), &j)
	return j
}

func decode(t testing.TB, f frame, v any) {
	t.Helper()
	if err := json.Unmarshal(f.Payload, v); err != nil {
		t.Fatalf("decoding payload of %s: %v", f, err)
	}
}

// msgOf decodes a msg event.
func msgOf(t testing.TB, f frame) protocol.Message {
	t.Helper()
	if f.Type != protocol.TypeMsg {
		t.Fatalf("got %s, want a msg event", f)
	}
	var m protocol.Message
	decode(t, f, &m)
	return m
}

var testLogLevel = slog.LevelWarn
