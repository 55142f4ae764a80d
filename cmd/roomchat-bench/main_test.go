package main

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/relay"
)

func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(t.Context(), args, &o, &e)
	return code, o.String(), e.String()
}

// TestUsage checks that the usage lists the command table, and that every
// command's -h prints its summary and flags and exits 0.
func TestUsage(t *testing.T) {
	code, out, _ := runArgs(t, "-h")
	if code != exitOK {
		t.Errorf("-h: exit %d, want 0", code)
	}
	for _, c := range commands {
		if !strings.Contains(out, "  "+c.name) || !strings.Contains(out, c.summary) {
			t.Errorf("usage lacks %s: %s", c.name, out)
		}
		code, cout, _ := runArgs(t, c.name, "-h")
		if code != exitOK || !strings.HasPrefix(cout, "usage: roomchat-bench "+c.name) ||
			!strings.Contains(cout, c.summary) || !strings.Contains(cout, "\n  -") {
			t.Errorf("%s -h: exit %d, output:\n%s", c.name, code, cout)
		}
	}
	if code, _, errOut := runArgs(t); code != exitUsage || !strings.Contains(errOut, "commands:") {
		t.Errorf("no arguments: exit %d, stderr %q; want 2 and the usage", code, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"summary", "-nope"}, "flag provided but not defined: -nope"},
		{[]string{"fanout", "-baseline", "127.0.0.1:1", "100", "-rate", "3"}, `unexpected argument "100"`},
	} {
		code, out, errOut := runArgs(t, tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	if code, _, errOut := runArgs(t, "fanout"); code != exitFailure || !strings.Contains(errOut, "fanout needs -server") {
		t.Errorf("fanout without a server: exit %d, stderr %q", code, errOut)
	}
}

// TestCommandsEndToEnd runs fanout against a relay through the command
// line with -json and -o, then chart and summary on the results file.
func TestCommandsEndToEnd(t *testing.T) {
	srv := httptest.NewServer(relay.New())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	results := filepath.Join(dir, "r.jsonl")
	code, out, errOut := runArgs(t, "fanout", "-baseline", srv.URL, "-rooms", "1", "-members", "2", "-rate", "20",
		"-duration", "500ms", "-warmup", "100ms", "-drain", "5s", "-quiet-wait", "0", "-json", "-o", results)
	if code != exitOK {
		t.Fatalf("fanout: exit %d: %s", code, errOut)
	}
	file, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != out {
		t.Errorf("-o file %q, want what -json printed: %q", file, out)
	}
	for _, want := range []string{`"kind":"fanout"`, `"target":"baseline"`, `"scenario":"1x2"`, `"p50ms":`, `"p99ms":`, `"p999ms":`, `"maxms":`} {
		if !strings.Contains(out, want) {
			t.Errorf("fanout -json lacks %s: %s", want, out)
		}
	}
	svg := filepath.Join(dir, "c.svg")
	if code, _, errOut := runArgs(t, "chart", "-in", results, "-out", svg); code != exitOK {
		t.Errorf("chart: exit %d: %s", code, errOut)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("fan-out 1x2")) {
		t.Errorf("chart wrote %.200q (%v)", b, err)
	}
	if code, out, errOut := runArgs(t, "summary", "-in", results); code != exitOK || !strings.Contains(out, "budget item") {
		t.Errorf("summary: exit %d: %s%s", code, out, errOut)
	}
}
