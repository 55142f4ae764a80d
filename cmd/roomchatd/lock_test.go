package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// TestDataFilesPrivate: a fresh start creates the database's directory
// 0700 and its files 0600, whatever the umask it was started with (here
// 0022, the common default), so that no other local user can read the
// history or the key that signs resume tokens.
func TestDataFilesPrivate(t *testing.T) {
	old := syscall.Umask(0o022) // inherited by the child
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "data")
	db := filepath.Join(dir, "roomchat.db")
	s := chattest.Start(t, "-db", db)
	syscall.Umask(old)
	sendAckIn(t, chattest.Dial(t, s.URL, ""), "r", "1")
	check := func(path string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", path, got, want)
		}
	}
	check(dir, 0o700)
	for _, suffix := range []string{"", "-wal", "-shm", "-lock"} {
		check(db+suffix, 0o600)
	}
	s.Stop(t)
}

// TestSymlinkedLockFile: a lock file that is a symbolic link stops
// roomchatd at start with exit code 1 and one line on stderr naming it;
// the file the link points to is not written.
func TestSymlinkedLockFile(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "roomchat.db")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, db+"-lock"); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd := chattest.Command(t, "-addr", "127.0.0.1:0", "-db", db)
	cmd.Stderr = &stderr
	err := cmd.Run()
	out := stderr.String()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("roomchatd: exit code %d (%v), want 1; stderr:\n%s", code, err, out)
	}
	line := strings.TrimSuffix(out, "\n")
	if strings.Contains(line, "\n") || !strings.HasPrefix(line, "roomchatd: ") || !strings.Contains(line, db+"-lock") || !strings.Contains(line, "symbolic link") {
		t.Fatalf("stderr %q: want one line naming %s-lock as a symbolic link", out, db)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Fatalf("the link's target now holds %q", b)
	}
	t.Logf("roomchatd: %s", line)
}
