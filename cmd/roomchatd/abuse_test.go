package main

// TestAbuseBinary: the built roomchatd under every abuse at once, as a
// script from the internet would try it (SPEC §4 "Rules and limits"): a
// connection flood from many addresses, connect-join-drop cycles on the
// room an honest pair chats in, a typing flood, 200 joins on one
// connection, 60 KB request ids, an HTTP flood, slowloris upgrades and
// trickling POST bodies. The pair keeps chatting throughout, a newcomer
// gets in and chats afterwards, and the server's resident memory stays
// under rssBound.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/proc"
	"github.com/roomchat/roomchat/internal/protocol"
)

// rssBound is what roomchatd may hold in resident memory under the abuse
// below. Measured: about 14 MB at start and 24 MB at the peak, with 400
// connections held open (about 4 KB each idle, up to 64 KB while a frame
// is read), the 60 KB ids in flight, 300 slow HTTP connections (net/http
// buffers, about 8 KB each) and the garbage collector's headroom
// (GOGC=50). The bound is well above that so that the test is not flaky,
// and well below what an unbounded map or buffer would reach.
const rssBound = 64 << 20

func TestAbuseBinary(t *testing.T) {
	d := chattest.Start(t,
		"-max-conns", "400",
		"-ip-conns", "100", "-ip-conn-rate", "1", "-ip-conn-burst", "100",
		"-ip-http-rate", "50", "-ip-http-burst", "100",
		"-http-timeout", "1s",
		"-room-capacity", "50",
	)
	pid := d.PID()
	a, b := chattest.Dial(t, d.URL, ""), chattest.Dial(t, d.URL, "")
	a.JoinSince(t, "lobby", nil)
	b.JoinSince(t, "lobby", nil)
	start := vmRSS(t, pid)
	t.Logf("RSS at start: %d KiB", start>>10)

	// RSS is sampled every 100 ms while the attacks run.
	var peak int64
	var peakMu sync.Mutex
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			if n, err := proc.Status(pid, "VmRSS"); err == nil {
				peakMu.Lock()
				peak = max(peak, n)
				peakMu.Unlock()
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var held []*websocket.Conn
	defer func() {
		for _, c := range held {
			c.CloseNow()
		}
	}()
	attacks := []struct {
		name string
		run  func() error
	}{
		{"connection flood from 20 addresses", func() error {
			opened, refused := 0, map[int]int{}
			for i := range 3000 {
				c, resp, err := chattest.DialFrom(ctx, d.URL, fmt.Sprintf("127.0.2.%d", i%20+1))
				if err != nil {
					if resp == nil || resp.Header.Get("Retry-After") == "" {
						return fmt.Errorf("upgrade %d: %v", i, err)
					}
					refused[resp.StatusCode]++
					continue
				}
				opened++
				held = append(held, c)
			}
			t.Logf("connection flood: %d opened, refused %v", opened, refused)
			if opened != 398 || refused[http.StatusServiceUnavailable] == 0 || refused[http.StatusTooManyRequests] == 0 {
				return fmt.Errorf("%d opened (want 398: 400 less the pair), refused %v (want both 503 and 429)", opened, refused)
			}
			return nil
		}},
		{"release half the flood", func() error {
			for _, c := range held[200:] {
				c.Close(websocket.StatusNormalClosure, "")
			}
			held = held[:200]
			time.Sleep(200 * time.Millisecond) // let the server see the closes
			return nil
		}},
		{"connect-join-drop cycles on the lobby", func() error {
			for i := range 150 {
				c, _, err := chattest.DialFrom(ctx, d.URL, fmt.Sprintf("127.0.3.%d", i%10+1))
				if err != nil {
					return fmt.Errorf("cycle %d: %v", i, err)
				}
				c.Write(ctx, websocket.MessageText, []byte(`{"type":"join","payload":{"roomID":"lobby"}}`))
				env, err := chattest.AwaitFrame(ctx, c, protocol.TypeJoined)
				c.CloseNow()
				if err != nil || env.Type != protocol.TypeJoined {
					return fmt.Errorf("cycle %d: join answered %s %s (%v): ghosts count against the capacity", i, env.Type, env.Payload, err)
				}
			}
			return nil
		}},
		{"200 joins, a typing flood and 60 KB ids on one connection", func() error {
			c := held[0]
			for i := range 200 {
				c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"join","payload":{"roomID":"spam-%d"}}`, i))
				env, err := chattest.AwaitFrame(ctx, c, protocol.TypeJoined)
				if err != nil {
					return err
				}
				if (i < 100) != (env.Type == protocol.TypeJoined) {
					return fmt.Errorf("join %d: %s %s; want joined for the first 100, then room_limit", i, env.Type, env.Payload)
				}
			}
			c = held[1]
			c.Write(ctx, websocket.MessageText, []byte(`{"type":"join","payload":{"roomID":"lobby"}}`))
			if _, err := chattest.AwaitFrame(ctx, c, protocol.TypeJoined); err != nil {
				return err
			}
			for range 2000 {
				c.Write(ctx, websocket.MessageText, []byte(`{"type":"typing"}`))
			}
			id := strings.Repeat("i", 60000)
			for i := range 100 {
				c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"msg","id":"%s%d","payload":{"message":"spam","roomID":"lobby"}}`, id, i))
				env, err := chattest.AwaitFrame(ctx, c, protocol.TypeAck)
				if err != nil || env.Type != protocol.TypeError {
					return fmt.Errorf("msg with a 60 KB id: got %s %s (%v), want an error", env.Type, env.Payload, err)
				}
			}
			return nil
		}},
		{"HTTP flood from one address", func() error {
			hc := chattest.HTTPFrom("127.0.0.9")
			defer hc.CloseIdleConnections()
			codes := map[int]int{}
			for range 1000 {
				resp, err := hc.Get(d.URL + "/api/rooms/lobby/messages?limit=500")
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes[resp.StatusCode]++
			}
			t.Logf("HTTP flood: %v", codes)
			if codes[http.StatusTooManyRequests] < 800 {
				return fmt.Errorf("statuses %v: want most of 1000 refused", codes)
			}
			return nil
		}},
		{"200 slowloris upgrades and 100 trickling bodies", func() error {
			return abuseTrickle(d.URL, 200, 100)
		}},
	}

	done := make(chan error, 1)
	go func() {
		for _, at := range attacks {
			began := time.Now()
			if err := at.run(); err != nil {
				done <- fmt.Errorf("%s: %w", at.name, err)
				return
			}
			t.Logf("%s: %v", at.name, time.Since(began).Round(time.Millisecond))
		}
		done <- nil
	}()
	typing, exchanged := 0, 0
	chatStart := time.Now()
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
			running = false
		default:
			typing += abuseChat(t, a, b, fmt.Sprint("during ", exchanged))
			exchanged += 2
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stopSampling)
	<-sampled
	t.Logf("the pair exchanged %d messages during the attacks and got %d typing events in %v", exchanged, typing, time.Since(chatStart).Round(time.Millisecond))
	if most := 2 * (1 + int(time.Since(chatStart)/(2*time.Second))); typing > most {
		t.Errorf("the pair got %d typing events, want at most %d (one per 2 s each)", typing, most)
	}
	abuseChat(t, a, b, "after")

	// A newcomer joins the lobby and chats, while the attacker still
	// holds 200 connections and 150 ghosts are in their grace period.
	c := chattest.Dial(t, d.URL, "")
	if j := c.JoinSince(t, "lobby", nil); j.RoomID != "lobby" {
		t.Fatalf("newcomer: joined %+v", j)
	}
	abuseChat(t, a, c, "newcomer")

	peakMu.Lock()
	defer peakMu.Unlock()
	t.Logf("RSS: %d KiB at start, %d KiB at the peak, %d KiB now", start>>10, peak>>10, vmRSS(t, pid)>>10)
	if peak > rssBound {
		t.Errorf("RSS peaked at %d KiB, want under %d KiB", peak>>10, rssBound>>10)
	}
	d.Stop(t)
}

func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := proc.Status(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// abuseChat checks that a and b exchange a message each way and returns
// how many typing events they got meanwhile.
func abuseChat(t *testing.T, a, b *chattest.Client, text string) (typing int) {
	t.Helper()
	for _, pair := range [][2]*chattest.Client{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		from.Sendf(t, `{"type":"msg","payload":{"message":%q}}`, text)
		for _, c := range []*chattest.Client{from, to} {
			for {
				e, err := c.Read(10 * time.Second)
				if err != nil {
					t.Fatalf("waiting for %q: %v", text, err)
				}
				if e.Type == protocol.TypeTyping {
					typing++
					continue
				}
				if e.Type == protocol.TypePresence {
					continue
				}
				var m protocol.Message
				if e.Type != protocol.TypeMsg || json.Unmarshal(e.Payload, &m) != nil || m.Message != text || m.From.UserID != from.Welcome.UserID {
					t.Fatalf("waiting for %q from %s, got %s", text, from.Welcome.UserID, e)
				}
				break
			}
		}
	}
	return typing
}

// abuseTrickle opens slow connections from 127.0.0.10: upgrades whose
// headers come a byte every 100 ms, and POSTs whose bodies do; it fails
// unless the server hangs up every one of them within 5 s.
func abuseTrickle(base string, upgrades, posts int) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.10")}}
	host := strings.TrimPrefix(base, "http://")
	type slow struct {
		c    net.Conn
		rest string
		cut  bool
	}
	var conns []*slow
	defer func() {
		for _, s := range conns {
			s.c.Close()
		}
	}()
	for i := range upgrades + posts {
		c, err := d.Dial("tcp", host)
		if err != nil {
			return err
		}
		s := &slow{c: c, rest: "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Padding: " + strings.Repeat("p", 200)}
		if i >= upgrades {
			io.WriteString(c, "POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
			s.rest = `{"message":"` + strings.Repeat("t", 200)
		}
		conns = append(conns, s)
	}
	began := time.Now()
	for open := len(conns); open > 0; {
		if time.Since(began) > 5*time.Second {
			return fmt.Errorf("%d of %d slow connections still open after 5 s", open, len(conns))
		}
		for _, s := range conns {
			if s.cut {
				continue
			}
			s.c.SetDeadline(time.Now().Add(time.Millisecond))
			_, werr := s.c.Write([]byte{s.rest[0]})
			s.rest = s.rest[1:]
			_, rerr := s.c.Read(make([]byte, 512))
			if ne, ok := rerr.(net.Error); werr != nil || (rerr != nil && !(ok && ne.Timeout())) {
				s.cut = true
				open--
			}
			if len(s.rest) == 0 {
				return fmt.Errorf("a slow connection sent everything without being cut")
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
