package main

// Helpers for the tests that run roomchatd as a subprocess: build the
// binary once, start it on a loopback port, read its exit code, and a raw
// WebSocket client that reads in a goroutine of its own.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/client/clienttest"
	"github.com/roomchat/roomchat/internal/protocol"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// roomchatdBin builds roomchatd once per test binary (or uses
// $ROOMCHAT_TEST_ROOMCHATD) and returns its path.
func roomchatdBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "roomchatd-test-")
		if buildErr == nil {
			binPath, buildErr = clienttest.BuildServer(binDir)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// daemonCmd is roomchatd with args, with no ROOMCHAT_* variable of the
// environment leaking in.
func daemonCmd(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.Command(roomchatdBin(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ROOMCHAT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout = io.Discard
	return cmd
}

// daemon is one roomchatd process.
type daemon struct {
	t   *testing.T
	URL string // http://127.0.0.1:PORT

	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been waited for

	mu   sync.Mutex
	logs bytes.Buffer // stderr so far; guarded by mu
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(127\.0\.0\.1:[0-9]+)`)

// startDaemon runs roomchatd -addr 127.0.0.1:0 -rate 0 -db db args… and
// waits until it logs its address. It is killed at the end of the test if
// it still runs.
func startDaemon(t *testing.T, db string, args ...string) *daemon {
	t.Helper()
	cmd := daemonCmd(t, append([]string{"-addr", "127.0.0.1:0", "-rate", "0", "-db", db}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, cmd: cmd, done: make(chan struct{})}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			d.logs.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.signal(syscall.SIGKILL)
		<-d.done
		if t.Failed() {
			t.Logf("roomchatd's stderr:\n%s", d.stderr())
		}
	})
	select {
	case addr := <-found:
		d.URL = "http://" + addr
	case <-d.done:
		t.Fatalf("roomchatd exited before listening (%v):\n%s", cmd.ProcessState, d.stderr())
	case <-time.After(30 * time.Second):
		t.Fatalf("roomchatd did not log its address within 30 s:\n%s", d.stderr())
	}
	return d
}

func (d *daemon) stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

func (d *daemon) signal(sig syscall.Signal) {
	select {
	case <-d.done:
	default:
		d.cmd.Process.Signal(sig)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code (-1 if a signal ended it).
func (d *daemon) wait(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.t.Fatalf("roomchatd still running %v after the signal:\n%s", timeout, d.stderr())
	}
	return d.cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM and checks that roomchatd exits 0 within 15 s.
func (d *daemon) stop() {
	d.t.Helper()
	d.signal(syscall.SIGTERM)
	if code := d.wait(15 * time.Second); code != 0 {
		d.t.Fatalf("roomchatd exited with %d after SIGTERM, want 0:\n%s", code, d.stderr())
	}
}

// kill sends SIGKILL and waits for the process to go.
func (d *daemon) kill() {
	d.t.Helper()
	d.signal(syscall.SIGKILL)
	d.wait(10 * time.Second)
}

// getJSON GETs u, checks the status and decodes the body into v.
func getJSON(t *testing.T, u string, status int, v any) {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != status {
		t.Fatalf("GET %s: status %d (%s), want %d", u, res.StatusCode, b, status)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %s: %v", u, b, err)
		}
	}
}

// wsClient is a raw WebSocket client. One goroutine reads the socket into
// events, so waiting with a timeout never touches the connection (the
// library closes a connection whose Read context ends).
type wsClient struct {
	t       *testing.T
	ws      *websocket.Conn
	welcome protocol.Welcome
	events  chan wsEvent
	done    chan struct{} // closed when the reader ends
	err     error         // why the reader ended; read after done
}

type wsEvent struct {
	protocol.Envelope
	raw []byte
}

func (e wsEvent) String() string { return string(e.raw) }

var errNoEvent = errors.New("no event arrived in time")

// dialWS connects to base's /ws with query and reads welcome.
func dialWS(t *testing.T, base, query string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws" + query
	ws, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	ws.SetReadLimit(-1)
	c := &wsClient{t: t, ws: ws, events: make(chan wsEvent, 1<<16), done: make(chan struct{})}
	go c.readLoop()
	t.Cleanup(func() {
		ws.CloseNow()
		<-c.done
	})
	w := c.expect(protocol.TypeWelcome)
	c.decode(w, &c.welcome)
	return c
}

func (c *wsClient) readLoop() {
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
				c.err = fmt.Errorf("undecodable event %q: %v", p, perr)
				return
			}
			c.events <- wsEvent{env, p}
		}
	}
}

// read returns the next event, the connection's end, or errNoEvent after d.
func (c *wsClient) read(d time.Duration) (wsEvent, error) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case e := <-c.events:
		return e, nil
	case <-c.done:
		select {
		case e := <-c.events:
			return e, nil
		default:
			return wsEvent{}, c.err
		}
	case <-tm.C:
		return wsEvent{}, errNoEvent
	}
}

func (c *wsClient) send(format string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, fmt.Appendf(nil, format, args...))
}

func (c *wsClient) mustSend(format string, args ...any) {
	c.t.Helper()
	if err := c.send(format, args...); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) expect(typ string) wsEvent {
	c.t.Helper()
	e, err := c.read(10 * time.Second)
	if err != nil {
		c.t.Fatalf("waiting for %q: %v", typ, err)
	}
	if e.Type != typ {
		c.t.Fatalf("got %s, want a %q event", e, typ)
	}
	return e
}

func (c *wsClient) decode(e wsEvent, v any) {
	c.t.Helper()
	if err := json.Unmarshal(e.Payload, v); err != nil {
		c.t.Fatalf("decoding %s: %v", e, err)
	}
}

// join joins roomID (with since, if not nil) and returns joined, skipping
// presence events that came before it.
func (c *wsClient) join(roomID string, since *int64) protocol.Joined {
	c.t.Helper()
	if since == nil {
		c.mustSend(`{"type":"join","payload":{"roomID":%q}}`, roomID)
	} else {
		c.mustSend(`{"type":"join","payload":{"roomID":%q,"since":%d}}`, roomID, *since)
	}
	for {
		e, err := c.read(10 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for joined: %v", err)
		}
		switch e.Type {
		case protocol.TypePresence, protocol.TypeMsg:
			continue
		case protocol.TypeJoined:
			var j protocol.Joined
			c.decode(e, &j)
			return j
		}
		c.t.Fatalf("got %s, want joined", e)
	}
}

// ackOf waits for the ack with id, skipping msg and presence events. It
// may run in any goroutine: it returns an error instead of failing.
func (c *wsClient) ackOf(id string) (protocol.Ack, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		e, err := c.read(time.Until(deadline))
		if err != nil {
			return protocol.Ack{}, fmt.Errorf("waiting for the ack of %q: %w", id, err)
		}
		switch {
		case e.Type == protocol.TypeAck && e.ID == id:
			var a protocol.Ack
			if err := json.Unmarshal(e.Payload, &a); err != nil {
				return a, fmt.Errorf("ack %s: %w", e, err)
			}
			return a, nil
		case e.Type == protocol.TypeMsg, e.Type == protocol.TypePresence:
		default:
			return protocol.Ack{}, fmt.Errorf("waiting for the ack of %q, got %s", id, e)
		}
	}
}

// sendAck sends a msg with id and waits for its ack.
func (c *wsClient) sendAck(id, text string) protocol.Ack {
	c.t.Helper()
	c.mustSend(`{"type":"msg","id":%q,"payload":{"message":%q}}`, id, text)
	a, err := c.ackOf(id)
	if err != nil {
		c.t.Fatal(err)
	}
	return a
}

// closeCode waits until the connection ends and returns its close code
// (-1 for none), skipping events.
func (c *wsClient) closeCode(timeout time.Duration) websocket.StatusCode {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.t.Fatalf("connection still open %v later", timeout)
	}
	return websocket.CloseStatus(c.err)
}

// joinAll joins roomID with since and pages with history while joined.more
// is true (SPEC §4 catch-up), returning joined with every page's messages
// in History. Live msg and presence events are skipped: the tests that use
// it have no live traffic.
func (c *wsClient) joinAll(roomID string, since int64) protocol.Joined {
	c.t.Helper()
	j := c.join(roomID, &since)
	more := j.More
	for n := 0; more; n++ {
		after := since
		if len(j.History) > 0 {
			after = j.History[len(j.History)-1].Seq
		}
		id := fmt.Sprint("page-", n)
		c.mustSend(`{"type":"history","id":%q,"payload":{"roomID":%q,"after":%d}}`, id, roomID, after)
		for {
			e, err := c.read(10 * time.Second)
			if err != nil {
				c.t.Fatalf("waiting for history %s: %v", id, err)
			}
			if e.Type == protocol.TypePresence || e.Type == protocol.TypeMsg {
				continue
			}
			if e.Type != protocol.TypeHistory || e.ID != id {
				c.t.Fatalf("got %s, want history %s", e, id)
			}
			var h protocol.History
			c.decode(e, &h)
			if len(h.Messages) == 0 && h.More {
				c.t.Fatalf("history after %d: empty page with more", after)
			}
			j.History = append(j.History, h.Messages...)
			more = h.More
			break
		}
	}
	return j
}
