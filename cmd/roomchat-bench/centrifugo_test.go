package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const testCfSecret = "roomchat-bench-not-a-secret" // as in scripts/centrifugo/*.json

func TestCfFrames(t *testing.T) {
	if got, want := string(cfConnectFrame(nil, 7)), `{"id":1,"connect":{}}`; got != want {
		t.Errorf("anonymous connect = %s, want %s", got, want)
	}
	if got, want := string(cfSubscribeFrame("rooms:idle-x-r3")), `{"id":2,"subscribe":{"channel":"rooms:idle-x-r3"}}`; got != want {
		t.Errorf("subscribe = %s, want %s", got, want)
	}
	var cmd struct {
		ID      int `json:"id"`
		Connect struct {
			Token string `json:"token"`
		} `json:"connect"`
	}
	if err := json.Unmarshal(cfConnectFrame([]byte("k"), 7), &cmd); err != nil || cmd.ID != 1 {
		t.Fatalf("connect with token: %+v, %v", cmd, err)
	}
	parts := strings.Split(cmd.Connect.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWT", cmd.Connect.Token)
	}
	enc := base64.RawURLEncoding
	head, _ := enc.DecodeString(parts[0])
	claims, _ := enc.DecodeString(parts[1])
	if string(head) != `{"alg":"HS256","typ":"JWT"}` || string(claims) != `{"sub":"u7"}` {
		t.Errorf("token header %s, claims %s", head, claims)
	}
	m := hmac.New(sha256.New, []byte("k"))
	m.Write([]byte(parts[0] + "." + parts[1]))
	if sig, _ := enc.DecodeString(parts[2]); !hmac.Equal(sig, m.Sum(nil)) {
		t.Error("token signature does not verify")
	}
}

func TestCfScan(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame string
		id    uint32
		found bool
		pings int
		err   string
	}{
		{"connect reply", `{"id":1,"connect":{"client":"c","version":"6.9.1","ping":25,"pong":true}}`, 1, true, 0, ""},
		{"ping alone", `{}`, 2, false, 1, ""},
		{"pushes, ping and reply in one frame",
			`{"push":{"channel":"rooms:r","join":{"info":{"user":"u1","client":"c1"}}}}` + "\n{}\n" + `{"id":2,"subscribe":{"was_recovering":false}}`,
			2, true, 1, ""},
		{"another command's reply", `{"id":1,"connect":{}}`, 2, false, 0, ""},
		{"trailing newline", `{"id":2,"subscribe":{}}` + "\n", 2, true, 0, ""},
		{"error reply", `{"id":2,"error":{"code":103,"message":"permission denied"}}`, 2, false, 0, "centrifugo error 103: permission denied"},
		{"not JSON", `{"id":2,`, 2, false, 0, "bad centrifugo reply"},
	} {
		res, err := cfScan([]byte(tc.frame), tc.id)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || res.found != tc.found || res.pings != tc.pings {
			t.Errorf("%s: %+v, %v; want found %v, %d pings", tc.name, res, err, tc.found, tc.pings)
		}
	}
	var ce *cfError
	if _, err := cfScan([]byte(`{"id":1,"error":{"code":109,"message":"token expired"}}`), 1); !errors.As(err, &ce) || ce.Code != 109 {
		t.Errorf("error reply: %v", err)
	}
}

// newFakeCentrifugo serves the part of Centrifugo's JSON protocol the bench
// speaks, strictly: connect (answered in a frame that also carries a ping,
// whose pong must come before the subscribe), then subscribe to a channel
// of namespace "rooms" (answered after a join push, in one frame). Anything
// else closes the connection with an error.
func newFakeCentrifugo(t *testing.T) *httptest.Server {
	t.Helper()
	h := http.NewServeMux()
	h.HandleFunc("GET /connection/websocket", func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		fail := func(format string, a ...any) {
			ws.Close(websocket.StatusPolicyViolation, fmt.Sprintf(format, a...))
		}
		read := func() []byte {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return nil
			}
			return b
		}
		if b := read(); !bytes.HasPrefix(b, []byte(`{"id":1,"connect":{`)) {
			fail("want connect, got %q", b)
			return
		}
		ws.Write(ctx, websocket.MessageText, []byte("{}\n"+`{"id":1,"connect":{"client":"c","version":"fake","ping":25,"pong":true}}`))
		if b := read(); string(b) != "{}" {
			fail("want pong, got %q", b)
			return
		}
		var cmd struct {
			ID        int `json:"id"`
			Subscribe struct {
				Channel string `json:"channel"`
			} `json:"subscribe"`
		}
		if err := json.Unmarshal(read(), &cmd); err != nil || cmd.ID != 2 || !strings.HasPrefix(cmd.Subscribe.Channel, "rooms:idle-") {
			fail("want subscribe to rooms:idle-…, got %+v (%v)", cmd, err)
			return
		}
		ws.Write(ctx, websocket.MessageText, []byte(`{"push":{"channel":"`+cmd.Subscribe.Channel+`","join":{"info":{"client":"c"}}}}`+"\n"+`{"id":2,"subscribe":{}}`))
		ws.Write(context.Background(), websocket.MessageText, []byte("{}"))
		// Held until the client closes; its pong is read here.
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestIdleCentrifugoProtocol(t *testing.T) {
	srv := newFakeCentrifugo(t)
	tg, err := parseTarget(srv.URL, kindCentrifugo)
	if err != nil {
		t.Fatal(err)
	}
	tg.cfNamespace = "rooms"
	res, err := runIdle(t.Context(), tg, idleConfig{Conns: 20, Rooms: 2, PIDs: []int{os.Getpid()}, Par: 4, Hold: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Conns != 20 || res.Rate <= 0 || res.Dropped != 0 || res.Target != "centrifugo" {
		t.Errorf("idle = %+v", res)
	}
}

// TestCentrifugoLive runs idle against a real Centrifugo with the configs
// in scripts/centrifugo. It is a benchmark-only check: it runs when
// ROOMCHAT_BENCH_CENTRIFUGO names a centrifugo binary (v6; see
// docs/benchmarks.md for how to build it) and is skipped otherwise, so that
// make test needs neither the network nor Centrifugo.
func TestCentrifugoLive(t *testing.T) {
	bin := os.Getenv("ROOMCHAT_BENCH_CENTRIFUGO")
	if bin == "" {
		t.Skip("benchmark-only check: set ROOMCHAT_BENCH_CENTRIFUGO=/path/to/centrifugo to run it")
	}
	for _, cfg := range []string{"presence.json", "presence-nopush.json", "nopresence.json"} {
		t.Run(cfg, func(t *testing.T) {
			url := startCentrifugo(t, bin, filepath.Join("..", "..", "scripts", "centrifugo", cfg))
			for _, secret := range []string{testCfSecret, ""} {
				tg, err := parseTarget(url, kindCentrifugo)
				if err != nil {
					t.Fatal(err)
				}
				tg.cfNamespace, tg.cfSecret = "rooms", []byte(secret)
				res, err := runIdle(t.Context(), tg, idleConfig{Conns: 30, Rooms: 3, Par: 4, Hold: 200 * time.Millisecond})
				if err != nil {
					t.Fatalf("secret %q: %v", secret, err)
				}
				if res.Conns != 30 || res.Dropped != 0 || res.GoAfter <= 0 {
					t.Errorf("secret %q: idle = %+v", secret, res)
				}
			}
			// With presence.json a member sees the next one's join push
			// (force_push_join_leave: without asking for it on subscribe);
			// with the others it does not.
			tg, _ := parseTarget(url, kindCentrifugo)
			tg.cfNamespace, tg.cfSecret = "rooms", []byte(testCfSecret)
			d := newDialer(2)
			room := "live-" + randID()
			first, err := connect(t.Context(), d, tg, 0, room, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer first.ws.CloseNow()
			second, err := connect(t.Context(), d, tg, 1, room, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer second.ws.CloseNow()
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			f, err := first.readFrame(ctx)
			cancel()
			gotJoin := err == nil && bytes.Contains(f, []byte(`"join":{"info":{"user":"u1"`))
			if want := cfg == "presence.json"; gotJoin != want {
				t.Errorf("join push to the first member: %v (frame %q, %v), want %v", gotJoin, f, err, want)
			}
			// A token signed with another key is refused: the bench's
			// connect reply check sees Centrifugo's error.
			tg.cfSecret = []byte("wrong")
			if _, err := runIdle(t.Context(), tg, idleConfig{Conns: 1, Par: 1}); err == nil {
				t.Error("a token signed with the wrong key was accepted")
			}
			// Outside the namespace subscribing is not allowed.
			tg.cfNamespace, tg.cfSecret = "", []byte(testCfSecret)
			if _, err := runIdle(t.Context(), tg, idleConfig{Conns: 1, Par: 1}); err == nil {
				t.Error("a channel outside the rooms namespace was allowed")
			}
		})
	}
}

// startCentrifugo runs bin with config on a free loopback port until the
// test ends and returns its URL once /healthz answers.
func startCentrifugo(t *testing.T, bin, config string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "-c", config)
	cmd.Env = append(os.Environ(), "CENTRIFUGO_HTTP_SERVER_PORT="+strconv.Itoa(port))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	for range 100 {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("centrifugo did not answer on %s/healthz within 10 s; its log:\n%s", base, log.String())
	return ""
}
