package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-json-experiment/json"
)

// TestThrottle: a throttled line is logged once per interval, and the
// first one after it says how many were left out; each "why" of a line
// counts on its own, loggers derived With attributes share the count,
// and other lines pass untouched.
func TestThrottle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(newThrottle(slog.NewJSONHandler(&buf, nil), 10*time.Second, "store append", "refused websocket"))
		lines := func() []map[string]any {
			t.Helper()
			var out []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("%q: %v", l, err)
				}
				out = append(out, m)
			}
			buf.Reset()
			return out
		}

		for range 100 {
			log.Error("store append", "room", "r", "err", "store down")
		}
		for range 3 {
			log.Info("connect", "user", "u")
		}
		for range 5 {
			log.Info("refused websocket", "why", "server full")
		}
		for range 2 {
			log.Info("refused websocket", "why", "address connections")
		}
		got := lines()
		if len(got) != 6 {
			t.Fatalf("logged %d lines, want 6: one store append, three connect, one refusal per why:\n%v", len(got), got)
		}
		for _, l := range got {
			if _, ok := l["suppressed"]; ok {
				t.Errorf("first line of its kind %v carries suppressed", l)
			}
		}

		time.Sleep(9 * time.Second)
		log.With("node", "a").Error("store append", "room", "r", "err", "store down") // still within 10 s
		if b := buf.String(); b != "" {
			t.Fatalf("logged within the interval: %s", b)
		}
		time.Sleep(time.Second)
		log.Error("store append", "room", "q", "err", "store down")
		log.Info("refused websocket", "why", "server full")
		got = lines()
		if len(got) != 2 || got[0]["msg"] != "store append" || got[0]["suppressed"] != float64(100) || got[0]["room"] != "q" {
			t.Fatalf("after 10 s: %v, want store append with suppressed=100 (99 + 1), then the refusal", got)
		}
		if got[1]["msg"] != "refused websocket" || got[1]["suppressed"] != float64(4) {
			t.Fatalf("after 10 s: %v, want refused websocket (server full) with suppressed=4", got[1])
		}

		time.Sleep(time.Minute)
		log.Error("store append", "room", "r", "err", "store down")
		if got := lines(); len(got) != 1 || got[0]["suppressed"] != nil {
			t.Fatalf("a minute later: %v, want one line with nothing suppressed", got)
		}
	})
}
