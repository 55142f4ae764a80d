package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

// requestAs sends method path to ts with the Host header host (and
// Origin origin, if set) and returns the status and body.
func requestAs(t *testing.T, ts *chattest.InProcess, method, path, host, origin string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// upgradeAs dials ts's /ws with the Host header host and, as a browser on
// that host's page would, Origin http://host.
func upgradeAs(t *testing.T, ts *chattest.InProcess, host string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	return websocket.Dial(ctx, u, &websocket.DialOptions{
		Host:       host,
		HTTPHeader: http.Header{"Origin": {"http://" + host}},
	})
}

// TestHostCheck: a loopback server that knows its names (Config.Hosts, or
// the host of Config.PublicURL) refuses a DNS-rebinding request, whose
// Host and Origin both name the attacker's domain, with 421 bad_host
// before anything else: the WebSocket upgrade, the API's GETs and POSTs,
// the pages and /metrics. Its own names, with any port unless one is
// given, are served, and the Origin rule then holds against them.
// /healthz and /readyz answer any Host, for probes that use the node's
// address. Without either setting every Host is served, as before.
func TestHostCheck(t *testing.T) {
	configs := []struct {
		name string
		mod  func(*server.Config)
		good []string // Hosts that are served
	}{
		{"Hosts", func(c *server.Config) { c.Hosts = []string{"chat.example.com", "localhost:8080", "[::1]"} },
			[]string{"chat.example.com", "CHAT.example.com.", "chat.example.com:8443", "localhost:8080", "[::1]:9000"}},
		{"PublicURL", func(c *server.Config) { c.PublicURL = "https://chat.example.com" },
			[]string{"chat.example.com", "chat.example.com:443"}},
	}
	evil := []string{"evil.example", "evil.example:80", "localhost:9999", "chat.example.com.evil.example", "127.0.0.1"}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			ts := chattest.StartInProcess(t, cfg.mod)
			for _, host := range evil {
				ws, resp, err := upgradeAs(t, ts, host)
				if err == nil {
					ws.CloseNow()
					t.Fatalf("upgrade with Host %s: accepted, want 421", host)
				}
				wantBadHost(t, "upgrade with Host "+host, resp)
				for _, p := range []struct{ method, path string }{
					{"GET", "/api/rooms/r"}, {"GET", "/api/rooms/r/messages"}, {"POST", "/api/rooms"},
					{"GET", "/"}, {"GET", "/r/r"}, {"GET", "/metrics"}, {"GET", "/nowhere"},
				} {
					status, body := requestAs(t, ts, p.method, p.path, host, "http://"+host)
					wantBadHostBody(t, p.method+" "+p.path+" with Host "+host, status, body)
				}
				for _, probe := range []string{"/healthz", "/readyz"} {
					if status, body := requestAs(t, ts, "GET", probe, host, ""); status != http.StatusOK {
						t.Errorf("GET %s with Host %s: %d %s, want 200", probe, host, status, body)
					}
				}
			}
			for _, host := range cfg.good {
				ws, resp, err := upgradeAs(t, ts, host)
				if err != nil {
					status := 0
					if resp != nil {
						status = resp.StatusCode
					}
					t.Fatalf("upgrade with Host %s: %v (status %d), want it served", host, err, status)
				}
				c := chattest.Wrap(t, ws)
				c.Expect(t, protocol.TypeWelcome)
				c.Close()
				if status, body := requestAs(t, ts, "POST", "/api/rooms", host, "http://"+host); status != http.StatusCreated {
					t.Errorf("POST /api/rooms with Host %s: %d %s, want 201", host, status, body)
				}
				// The Origin rule still applies between the server's own names.
				if status, body := requestAs(t, ts, "POST", "/api/rooms", host, "http://evil.example"); status != http.StatusForbidden {
					t.Errorf("POST /api/rooms with Host %s and Origin evil.example: %d %s, want 403", host, status, body)
				}
			}
			status, body := requestAs(t, ts, "GET", "/metrics", cfg.good[0], "")
			if status != http.StatusOK {
				t.Fatalf("GET /metrics: %d", status)
			}
			for _, want := range []string{`roomchat_errors_total{code="bad_host"} `, "roomchat_connections_refused_total "} {
				if !strings.Contains(string(body), want) || strings.Contains(string(body), want+"0\n") {
					t.Errorf("/metrics: want %s counted", want)
				}
			}
		})
	}

	t.Run("none", func(t *testing.T) {
		ts := chattest.StartInProcess(t)
		ws, _, err := upgradeAs(t, ts, "evil.example")
		if err != nil {
			t.Fatalf("upgrade without Hosts: %v, want every Host served", err)
		}
		ws.CloseNow()
	})
}

func wantBadHost(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	if resp == nil {
		t.Fatalf("%s: no response, want 421", what)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantBadHostBody(t, what, resp.StatusCode, b)
}

func wantBadHostBody(t *testing.T, what string, status int, body []byte) {
	t.Helper()
	var e protocol.Error
	if status != http.StatusMisdirectedRequest || json.Unmarshal(body, &e) != nil || e.Code != protocol.CodeBadHost || !strings.Contains(e.Message, "host") {
		t.Fatalf("%s: %d %s, want 421 with a JSON bad_host error", what, status, body)
	}
}

// TestHostConfigRefused: a Hosts entry or a PublicURL that is not a host
// makes New fail with an error naming it.
func TestHostConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*server.Config)
		want string
	}{
		{"scheme in Hosts", func(c *server.Config) { c.Hosts = []string{"https://chat.example.com"} }, "https://chat.example.com"},
		{"bad port", func(c *server.Config) { c.Hosts = []string{"chat.example.com:99999"} }, "port"},
		{"wildcard", func(c *server.Config) { c.Hosts = []string{"*.example.com"} }, "*.example.com"},
		{"empty", func(c *server.Config) { c.Hosts = []string{""} }, "empty"},
		{"PublicURL without scheme", func(c *server.Config) { c.PublicURL = "chat.example.com" }, "chat.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := server.New(chattest.ServerConfig(t, tc.mod)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error naming %q", err, tc.want)
			}
		})
	}
}
