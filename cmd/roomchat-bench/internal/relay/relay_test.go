package relay

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func dial(t *testing.T, ctx context.Context, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func read(t *testing.T, ctx context.Context, c *websocket.Conn) string {
	t.Helper()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// untilFrame reads c until the frame want, failing on any frame other than
// a "ready …" one on the way.
func untilFrame(t *testing.T, ctx context.Context, c *websocket.Conn, want string) {
	t.Helper()
	for {
		got := read(t, ctx, c)
		if got == want {
			return
		}
		if !strings.HasPrefix(got, "ready ") {
			t.Fatalf("got %q, want %q (the frame unchanged)", got, want)
		}
	}
}

// TestFanOut checks that a text frame reaches every connection of its room,
// the sender included, unchanged, and no connection of another room.
func TestFanOut(t *testing.T) {
	srv := httptest.NewServer(New())
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ws := "ws" + strings.TrimPrefix(srv.URL, "http")
	a1, a2 := dial(t, ctx, ws+"/?room=a"), dial(t, ctx, ws+"/?room=a")
	b1 := dial(t, ctx, ws+"/?room=b")
	// The handshake can end before the relay has put a connection in its
	// room: each connection's own frame coming back proves it is in. A
	// member of room a may also get the other's "ready" frame, depending on
	// who got in first; untilFrame skips those. b1 is alone in room b and
	// gets exactly its own.
	for name, c := range map[string]*websocket.Conn{"a1": a1, "a2": a2, "b1": b1} {
		if err := c.Write(ctx, websocket.MessageText, []byte("ready "+name)); err != nil {
			t.Fatal(err)
		}
		if c == b1 {
			if got := read(t, ctx, b1); got != "ready b1" {
				t.Fatalf("b1 got %q, want its own ready", got)
			}
			continue
		}
		untilFrame(t, ctx, c, "ready "+name)
	}
	if err := a1.Write(ctx, websocket.MessageText, []byte(`{"x": "hi"}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*websocket.Conn{a1, a2} {
		untilFrame(t, ctx, c, `{"x": "hi"}`)
	}
	// b1 sees its own next frame first: nothing of room a came in between.
	if err := b1.Write(ctx, websocket.MessageText, []byte("b")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, ctx, b1); got != "b" {
		t.Errorf("b1 got %q, want only room b's frames", got)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	srv := httptest.NewServer(New())
	t.Cleanup(srv.Close)
	for path, want := range map[string]string{
		"/healthz": "ok\n",
		"/metrics": "go_goroutines ",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s = %s %q, want 200 with %q", path, resp.Status, b, want)
		}
	}
	for _, path := range []string{"/nope", "/"} { // "/" without ?room=
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("GET %s = %s, want an error status", path, resp.Status)
		}
	}
}

// TestServeShutdown checks that Serve, when its context ends, closes live
// connections with 1001 and returns nil.
func TestServeShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, ln) }()
	dctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := dial(t, dctx, "ws://"+ln.Addr().String()+"/?room=r")
	if err := c.Write(dctx, websocket.MessageText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	read(t, dctx, c) // the handler has registered c
	stop()
	_, _, err = c.Read(dctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("close status %v (%v), want 1001", got, err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return 15 s after its context ended")
	}
}
