package server_test

// Abuse over real sockets (SPEC §4 "Rules and limits", §5): for each
// bound, an attacker pushes
// against it from its own addresses (127.0.0.9 and up) while an honest
// pair (127.0.0.2 and .3) keeps chatting in "lobby"; when the attack is
// over, the pair still chats and a new honest user (127.0.0.4) gets in
// and joins. Every attack is bounded in count and in time.

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
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

// attacker is a raw WebSocket client that runs in an attack's goroutine:
// it returns errors instead of failing the test.
type attacker struct {
	WS *websocket.Conn
}

// attackDial upgrades from local and reads welcome; resp is the refusal
// when err is not nil.
func attackDial(ctx context.Context, ts *timedServer, local string) (*attacker, *http.Response, error) {
	ws, resp, err := chattest.DialFrom(ctx, ts.URL, local)
	if err != nil {
		return nil, resp, err
	}
	return &attacker{WS: ws}, nil, nil
}

func (a *attacker) send(ctx context.Context, format string, args ...any) error {
	return a.WS.Write(ctx, websocket.MessageText, fmt.Appendf(nil, format, args...))
}

// await reads until an event of type typ (or an error event) arrives.
func (a *attacker) await(ctx context.Context, typ string) (protocol.Envelope, error) {
	return chattest.AwaitFrame(ctx, a.WS, typ)
}

// refusedWith reports whether an upgrade was refused with status and code.
func refusedWith(resp *http.Response, status int, code string) bool {
	if resp == nil || resp.StatusCode != status || resp.Header.Get("Retry-After") == "" {
		return false
	}
	var e protocol.Error
	b, _ := io.ReadAll(resp.Body)
	return json.Unmarshal(b, &e) == nil && e.Code == code
}

// attack runs against ts from its own goroutine. It returns a function
// that ends what it still holds (connections), and what went wrong.
type attack func(ctx context.Context, ts *timedServer) (release func(), err error)

// holding closes every connection in conns.
func holding(conns []*attacker) func() {
	return func() {
		for _, c := range conns {
			c.WS.CloseNow()
		}
	}
}

func TestAbuse(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*server.Config)
		run  attack
		// newcomerRefused: the new honest user gets 503 while the attack
		// holds what it took (a full server), and gets in after.
		newcomerRefused bool
	}{
		{
			name: "connections from many addresses fill MaxConns",
			cfg:  func(c *server.Config) { c.MaxConns = 30 },
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				var conns []*attacker
				refused := 0
				for i := range 60 {
					a, resp, err := attackDial(ctx, ts, fmt.Sprintf("127.0.1.%d", i+1))
					if err != nil {
						if !refusedWith(resp, http.StatusServiceUnavailable, protocol.CodeServerFull) {
							return holding(conns), fmt.Errorf("upgrade %d: %v, want 503 server_full", i, err)
						}
						refused++
						continue
					}
					conns = append(conns, a)
				}
				if len(conns) != 28 || refused != 32 {
					return holding(conns), fmt.Errorf("%d upgrades went through and %d were refused; want 28 (30 less the honest pair) and 32", len(conns), refused)
				}
				return holding(conns), nil
			},
			newcomerRefused: true,
		},
		{
			name: "connections from one address stop at IPConns",
			cfg:  func(c *server.Config) { c.MaxConns, c.IPConns = 100, 5 },
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				var conns []*attacker
				for i := range 50 {
					a, resp, err := attackDial(ctx, ts, "127.0.0.9")
					if err != nil {
						if !refusedWith(resp, http.StatusTooManyRequests, protocol.CodeRateLimited) {
							return holding(conns), fmt.Errorf("upgrade %d: %v, want 429 rate_limited", i, err)
						}
						continue
					}
					conns = append(conns, a)
				}
				if len(conns) != 5 {
					return holding(conns), fmt.Errorf("%d connections from one address, want 5", len(conns))
				}
				return holding(conns), nil
			},
		},
		{
			name: "connect-and-drop loop stops at IPConnRate",
			cfg:  func(c *server.Config) { c.IPConnRate, c.IPConnBurst = 2, 10 },
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				ok := 0
				start := time.Now()
				for i := range 200 {
					a, resp, err := attackDial(ctx, ts, "127.0.0.9")
					if err != nil {
						if !refusedWith(resp, http.StatusTooManyRequests, protocol.CodeRateLimited) {
							return nil, fmt.Errorf("upgrade %d: %v, want 429 rate_limited", i, err)
						}
						continue
					}
					ok++
					a.WS.CloseNow()
				}
				if most := 10 + int(2*time.Since(start).Seconds()) + 1; ok > most {
					return nil, fmt.Errorf("%d of 200 connections went through in %v, want at most %d", ok, time.Since(start), most)
				}
				return nil, nil
			},
		},
		{
			name: "HTTP request loop stops at IPHTTPRate",
			cfg:  func(c *server.Config) { c.IPHTTPRate, c.IPHTTPBurst = 5, 20 },
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				hc := chattest.HTTPFrom("127.0.0.9")
				defer hc.CloseIdleConnections()
				ok, start := 0, time.Now()
				for range 300 {
					resp, err := hc.Get(ts.URL + "/api/rooms/lobby/messages?limit=500")
					if err != nil {
						return nil, err
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch resp.StatusCode {
					case http.StatusOK:
						ok++
					case http.StatusTooManyRequests:
					default:
						return nil, fmt.Errorf("status %d, want 200 or 429", resp.StatusCode)
					}
				}
				if most := 20 + int(5*time.Since(start).Seconds()) + 1; ok > most {
					return nil, fmt.Errorf("%d of 300 requests went through, want at most %d", ok, most)
				}
				return nil, nil
			},
		},
		{
			name: "connect-join-drop ghosts do not fill the room",
			cfg:  func(c *server.Config) { c.Limits.RoomCapacity = 4 }, // the pair, one attacker, the newcomer
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				for i := range 100 {
					a, _, err := attackDial(ctx, ts, "127.0.0.9")
					if err != nil {
						return nil, fmt.Errorf("cycle %d: %v", i, err)
					}
					a.send(ctx, `{"type":"join","payload":{"roomID":"lobby"}}`)
					env, err := a.await(ctx, protocol.TypeJoined)
					if err != nil || env.Type != protocol.TypeJoined {
						a.WS.CloseNow()
						return nil, fmt.Errorf("cycle %d: join got %s %v, want joined: ghosts count against the capacity", i, env.Payload, err)
					}
					a.WS.CloseNow() // no close frame: a drop, a ghost for the grace period
				}
				return nil, nil
			},
		},
		{
			name: "200 joins on one connection stop at room_limit",
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				a, _, err := attackDial(ctx, ts, "127.0.0.9")
				if err != nil {
					return nil, err
				}
				joined := 0
				for i := range 200 {
					a.send(ctx, `{"type":"join","payload":{"roomID":"spam-%d"}}`, i)
					env, err := a.await(ctx, protocol.TypeJoined)
					if err != nil {
						return holding([]*attacker{a}), err
					}
					if env.Type == protocol.TypeJoined {
						joined++
						continue
					}
					var e protocol.Error
					json.Unmarshal(env.Payload, &e)
					if e.Code != protocol.CodeRoomLimit {
						return holding([]*attacker{a}), fmt.Errorf("join %d: error %s, want room_limit", i, env.Payload)
					}
				}
				if joined != 100 {
					return holding([]*attacker{a}), fmt.Errorf("joined %d rooms, want 100", joined)
				}
				return holding([]*attacker{a}), nil
			},
		},
		{
			name: "typing flood is throttled",
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				a, _, err := attackDial(ctx, ts, "127.0.0.9")
				if err != nil {
					return nil, err
				}
				a.send(ctx, `{"type":"join","payload":{"roomID":"lobby"}}`)
				if _, err := a.await(ctx, protocol.TypeJoined); err != nil {
					return holding([]*attacker{a}), err
				}
				for range 1000 {
					if err := a.send(ctx, `{"type":"typing"}`); err != nil {
						return holding([]*attacker{a}), err
					}
				}
				a.send(ctx, `{"type":"ping","id":"done"}`)
				_, err = a.await(ctx, protocol.TypePong)
				return holding([]*attacker{a}), err
			},
		},
		{
			name: "oversized request ids are refused, not stored",
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				a, _, err := attackDial(ctx, ts, "127.0.0.9")
				if err != nil {
					return nil, err
				}
				a.send(ctx, `{"type":"join","payload":{"roomID":"lobby"}}`)
				if _, err := a.await(ctx, protocol.TypeJoined); err != nil {
					return holding([]*attacker{a}), err
				}
				id := strings.Repeat("i", 60000)
				for i := range 100 {
					a.send(ctx, `{"type":"msg","id":"%s%d","payload":{"message":"spam","roomID":"lobby"}}`, id, i)
					env, err := a.await(ctx, protocol.TypeAck)
					if err != nil {
						return holding([]*attacker{a}), err
					}
					var e protocol.Error
					json.Unmarshal(env.Payload, &e)
					if env.Type != protocol.TypeError || e.Code != protocol.CodeBadEnvelope || env.ID != "" {
						return holding([]*attacker{a}), fmt.Errorf("msg %d with a 60 KB id: got %s %s, want bad_envelope without the id", i, env.Type, env.Payload)
					}
				}
				// None of them is stored.
				resp, err := http.Get(ts.URL + "/api/rooms/lobby/messages?after=0&limit=500")
				if err != nil {
					return holding([]*attacker{a}), err
				}
				defer resp.Body.Close()
				var page server.MessagePage
				if err := json.UnmarshalRead(resp.Body, &page); err != nil {
					return holding([]*attacker{a}), err
				}
				for _, m := range page.Messages {
					if m.Message == "spam" {
						return holding([]*attacker{a}), fmt.Errorf("a msg with a 60 KB id was stored as seq %d", m.Seq)
					}
				}
				return holding([]*attacker{a}), nil
			},
		},
		{
			name: "slowloris upgrades are cut by the header timeout",
			cfg:  func(c *server.Config) { c.HeaderTimeout = 300 * time.Millisecond },
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				return nil, trickleMany(ts, 100, "", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Padding: "+strings.Repeat("p", 100))
			},
		},
		{
			name: "trickling POST bodies are cut by the request timeout",
			cfg:  func(c *server.Config) { c.RequestTimeout = 300 * time.Millisecond },
			run: func(ctx context.Context, ts *timedServer) (func(), error) {
				return nil, trickleMany(ts, 100, "POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", strings.Repeat(" ", 100))
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTimedServer(t, chattest.NoRate, func(c *server.Config) {
				if tc.cfg != nil {
					tc.cfg(c)
				}
			})
			a := mustUpgrade(t, ts.InProcess, "127.0.0.2", nil)
			b := mustUpgrade(t, ts.InProcess, "127.0.0.3", nil)
			a.Join(t, "lobby")
			b.Join(t, "lobby")
			seen := &honestLog{}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			type result struct {
				release func()
				err     error
			}
			done := make(chan result, 1)
			go func() {
				release, err := tc.run(ctx, ts)
				done <- result{release, err}
			}()
			// The pair chats while the attack runs.
			var res result
			for i := 0; ; i++ {
				select {
				case res = <-done:
				default:
					talk(t, a, b, fmt.Sprint("during ", i), seen)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				t.Logf("the pair exchanged %d messages during the attack", 2*i)
				break
			}
			if res.err != nil {
				t.Errorf("attack: %v", res.err)
			}
			talk(t, a, b, "after", seen)

			// A newcomer gets in (or, on a full server, once the attack
			// lets go) and chats with the pair.
			if tc.newcomerRefused {
				_, resp, err := upgrade(t, ts.InProcess, "127.0.0.4", nil)
				wantRefusal(t, "a newcomer on a full server", resp, err, http.StatusServiceUnavailable, protocol.CodeServerFull)
			}
			if !tc.newcomerRefused {
				c := mustUpgrade(t, ts.InProcess, "127.0.0.4", nil)
				c.Join(t, "lobby")
				talk(t, a, c, "newcomer", seen)
			}
			if res.release != nil {
				res.release()
			}
			if tc.newcomerRefused {
				var c *chattest.Client
				chattest.Eventually(t, 5*time.Second, func() bool {
					c2, _, err := upgrade(t, ts.InProcess, "127.0.0.4", nil)
					c = c2
					return err == nil
				}, "a newcomer once the attack let go")
				c.Join(t, "lobby")
				talk(t, a, c, "newcomer", seen)
			}
			// Typing from the attacker reached the pair at most once per
			// 2 s (plus one: the test may straddle a window).
			seen.mu.Lock()
			defer seen.mu.Unlock()
			if seen.typing > 2*(1+int(time.Since(seen.start)/(2*time.Second))) {
				t.Errorf("the pair got %d typing events in %v, want one per 2 s at most", seen.typing, time.Since(seen.start))
			}
		})
	}
}

// honestLog counts what the honest pair saw besides their messages.
type honestLog struct {
	mu     sync.Mutex
	start  time.Time
	typing int // typing events, to either of the pair
}

// talk checks that a and b exchange a message each way, counting the
// typing events they get meanwhile.
func talk(t *testing.T, a, b *chattest.Client, text string, seen *honestLog) {
	t.Helper()
	seen.mu.Lock()
	if seen.start.IsZero() {
		seen.start = time.Now()
	}
	seen.mu.Unlock()
	for _, pair := range [][2]*chattest.Client{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		from.Sendf(t, `{"type":"msg","payload":{"message":%q}}`, text)
		for _, c := range []*chattest.Client{from, to} {
			for {
				f := c.Next(t)
				if f.Type == protocol.TypeTyping {
					seen.mu.Lock()
					seen.typing++
					seen.mu.Unlock()
					continue
				}
				if f.Type == protocol.TypePresence {
					continue
				}
				m := chattest.MsgOf(t, f)
				if m.Message != text || m.From.UserID != from.Welcome.UserID {
					t.Fatalf("got %q from %s, want %q from %s", m.Message, m.From.UserID, text, from.Welcome.UserID)
				}
				break
			}
		}
	}
}

// trickleMany opens n connections from 127.0.0.9, writes head to each at
// once, then prefix a byte every 50 ms, round robin, for at most 5 s; it
// fails unless the server hung up every one of them before prefix was
// through.
func trickleMany(ts *timedServer, n int, head, prefix string) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := d.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
		if err != nil {
			return err
		}
		conns = append(conns, c)
		if _, err := io.WriteString(c, head); err != nil {
			return err
		}
	}
	open := n
	cut := make([]bool, n)
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; open > 0 && i < len(prefix) && time.Now().Before(deadline); i++ {
		for j, c := range conns {
			if cut[j] {
				continue
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write([]byte{prefix[i]}); err != nil || hungUp(c, time.Millisecond) {
				cut[j] = true
				open--
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if open > 0 {
		return fmt.Errorf("%d of %d trickling connections still open after %v", open, n, time.Since(deadline.Add(-5*time.Second)))
	}
	return nil
}
