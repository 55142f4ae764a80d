package chattest

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestListenAddr(t *testing.T) {
	for _, tc := range []struct {
		name, line, addr string
	}{
		{"text", `time=2025-01-02T03:04:05.000Z level=INFO msg=listening addr=127.0.0.1:41321 db=:memory:`, "127.0.0.1:41321"},
		{"text, IPv6", `time=2025-01-02T03:04:05.000Z level=INFO msg=listening addr=[::1]:8080 db=x.db`, "[::1]:8080"},
		{"json", `{"time":"2025-01-02T03:04:05Z","level":"INFO","msg":"listening","addr":"127.0.0.1:5","db":"x.db"}`, "127.0.0.1:5"},
		{"debug listener, text", `time=2025-01-02T03:04:05.000Z level=INFO msg="debug listening" addr=127.0.0.1:6060`, ""},
		{"debug listener, json", `{"time":"2025-01-02T03:04:05Z","level":"INFO","msg":"debug listening","addr":"127.0.0.1:6060"}`, ""},
		{"another line", `time=2025-01-02T03:04:05.000Z level=INFO msg="shutting down"`, ""},
		{"not a log line", `listening addr=1.2.3.4:5`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, ok := ListenAddr(tc.line)
			if addr != tc.addr || ok != (tc.addr != "") {
				t.Errorf("ListenAddr(%q) = %q, %v; want %q, %v", tc.line, addr, ok, tc.addr, tc.addr != "")
			}
		})
	}
}

// TestOnlyTestsImport: chattest is for tests; no package of the module
// imports it outside its _test.go files.
func TestOnlyTestsImport(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "github.com/roomchat/roomchat/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const self = "github.com/roomchat/roomchat/internal/chattest"
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		for _, imp := range f[1:] {
			if imp == self {
				t.Errorf("%s imports %s outside its tests", f[0], self)
			}
		}
	}
}

// parkForLeakTest blocks until stop is closed: a goroutine for
// TestLeakedGoroutines to find by its function's name.
func parkForLeakTest(stop chan struct{}) { <-stop }

// TestLeakedGoroutines: a goroutine still running is reported with its
// stack until it ends; the caller's own goroutine never is.
func TestLeakedGoroutines(t *testing.T) {
	if got := LeakedGoroutines(0, "chattest.TestLeakedGoroutines"); got != "" {
		t.Errorf("the caller's goroutine was reported:\n%s", got)
	}
	const mark = "chattest.parkForLeakTest"
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { parkForLeakTest(stop); close(done) }()
	if got := LeakedGoroutines(0, mark); !strings.Contains(got, mark) {
		t.Fatalf("a running goroutine was not reported: %q", got)
	}
	close(stop)
	<-done
	if got := LeakedGoroutines(time.Second, mark); got != "" {
		t.Errorf("a goroutine that ended was reported:\n%s", got)
	}
}

// TestSeqRun: the seqs from..to pass; a gap, a repeat, a short or a long
// run each fail.
func TestSeqRun(t *testing.T) {
	if err := SeqRun([]int64{3, 4, 5}, 3, 5); err != nil {
		t.Errorf("3..5: %v", err)
	}
	if err := SeqRun(nil, 1, 0); err != nil {
		t.Errorf("no seqs, 1..0: %v", err)
	}
	for _, seqs := range [][]int64{{1, 3}, {1, 2, 2, 3}, {1, 2}, {1, 2, 3, 4}, {2, 1, 3}} {
		if SeqRun(seqs, 1, 3) == nil {
			t.Errorf("%v passed as 1..3", seqs)
		}
	}
}
