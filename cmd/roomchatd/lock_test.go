package main

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
)

// TestSecondDaemonOnOneDatabase: a second roomchatd on a database that a
// running one has open exits 1 at start with one line on stderr naming the
// database and the first one's pid, and the first one is unharmed. Once
// the first is killed with SIGKILL, a new one starts on the same file at
// once (the lock is not left behind) and continues its seqs.
func TestSecondDaemonOnOneDatabase(t *testing.T) {
	db := filepath.Join(t.TempDir(), "data", "roomchat.db")
	first := chattest.Start(t, "-db", db)
	if ack := sendAckIn(t, chattest.Dial(t, first.URL, ""), "r", "1"); ack.Seq != 1 {
		t.Fatalf("first daemon: seq %d, want 1", ack.Seq)
	}

	var stderr strings.Builder
	second := chattest.Command(t, "-addr", "127.0.0.1:0", "-db", db)
	second.Stderr = &stderr
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- second.Wait() }()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		second.Process.Kill()
		<-waited
		t.Fatalf("second roomchatd still running 30 s later:\n%s", stderr.String())
	}
	out := stderr.String()
	if code := second.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("second roomchatd: exit code %d, want 1; stderr:\n%s", code, out)
	}
	line := strings.TrimSuffix(out, "\n")
	pid := "pid " + strconv.Itoa(first.PID())
	if line == "" || strings.Contains(line, "\n") || !strings.HasPrefix(line, "roomchatd: ") ||
		!strings.Contains(line, db) || !strings.Contains(line, "in use") || !strings.Contains(line, pid) {
		t.Fatalf("second roomchatd's stderr %q: want one line starting %q that names %s, says %q and %q", out, "roomchatd: ", db, "in use", pid)
	}
	t.Logf("second roomchatd: %s", line)

	if ack := sendAckIn(t, chattest.Dial(t, first.URL, ""), "r", "2"); ack.Seq != 2 {
		t.Fatalf("first daemon after the refused start: seq %d, want 2", ack.Seq)
	}
	first.Kill(t)
	third := chattest.Start(t, "-db", db)
	if ack := sendAckIn(t, chattest.Dial(t, third.URL, ""), "r", "3"); ack.Seq != 3 {
		t.Fatalf("daemon started after kill -9: seq %d, want 3", ack.Seq)
	}
	third.Stop(t)
}
