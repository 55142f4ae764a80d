package sqlite

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/go-json-experiment/json"
)

// TestFaultLogUsesOptionsLogger: a step that keeps failing is logged once
// when it starts failing and once when it works again, through the
// Logger of Options (so in roomchatd's -log-format), not slog's default.
func TestFaultLogUsesOptionsLogger(t *testing.T) {
	var buf bytes.Buffer
	opts := Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}.withDefaults()
	f := faultLog{log: opts.Logger, what: "checkpoint", path: "/x/roomchat.db"}
	for range 3 {
		f.observe(errors.New("disk full"))
	}
	f.observe(nil)
	f.observe(nil)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %d lines, want 2 (failing, works again):\n%s", len(lines), buf.String())
	}
	var rec []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		rec = append(rec, m)
	}
	if rec[0]["level"] != "WARN" || !strings.Contains(rec[0]["msg"].(string), "checkpoint failed") || rec[0]["err"] != "disk full" {
		t.Errorf("first line %v, want a WARN that the checkpoint failed with its error", rec[0])
	}
	if rec[1]["level"] != "INFO" || rec[1]["failed_attempts"] != float64(3) {
		t.Errorf("second line %v, want an INFO with failed_attempts=3", rec[1])
	}
}
