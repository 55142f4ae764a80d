package sqlite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// TestOpenTwiceInOneProcess: a second Open of an open database fails with
// ErrLocked, also through another spelling of the path (a symlinked
// directory), and leaves the first Store working: its SQLite locks are not
// disturbed by the failed attempt. After Close the database opens again.
func TestOpenTwiceInOneProcess(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "roomchat.db")
	s := mustOpen(t, path, Options{})
	storetest.MustAppend(t, s, storetest.Msg("r", "1"), "")
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, filepath.Join(link, "roomchat.db")} {
		other, err := Open(context.Background(), p, Options{})
		if err == nil {
			other.Close()
			s.Close()
			t.Fatalf("second Open(%s) succeeded, want ErrLocked", p)
		}
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open(%s): %v, want ErrLocked", p, err)
		}
		if want := fmt.Sprintf("pid %d", os.Getpid()); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p) {
			t.Fatalf("second Open: %q, want it to name %s and %q", err, p, want)
		}
		t.Logf("second Open(%s): %v", p, err)
	}
	if r := storetest.MustAppend(t, s, storetest.Msg("r", "2"), ""); r.Msg.Seq != 2 {
		t.Fatalf("first store after the refused Opens: seq %d, want 2", r.Msg.Seq)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, filepath.Join(link, "roomchat.db"), Options{})
	if ri := roomInfo(t, s, "r"); ri.LastSeq != 2 {
		t.Fatalf("after reopening: LastSeq %d, want 2", ri.LastSeq)
	}
}

// TestOpenRefusedLeavesNoLockFile: a path that is not a roomchat database
// is refused without a lock file left beside it; a lock file that was
// there before stays.
func TestOpenRefusedLeavesNoLockFile(t *testing.T) {
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notes, []byte("these are notes, not a database\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(context.Background(), notes, Options{}); err == nil {
		s.Close()
		t.Fatal("Open(text file) succeeded")
	}
	if _, err := os.Stat(notes + lockSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file after a refused Open: %v, want none", err)
	}
	good := filepath.Join(dir, "roomchat.db")
	s := mustOpen(t, good, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(good + lockSuffix); err != nil {
		t.Fatalf("lock file after Close: %v, want it kept", err)
	}
}

// TestLockAcrossProcesses: while a child process has the database open,
// Open here fails with ErrLocked naming the child's pid; once the child is
// killed with SIGKILL (no Close), the kernel has released the lock and the
// database opens at once.
func TestLockAcrossProcesses(t *testing.T) {
	if path := os.Getenv("ROOMCHAT_SQLITE_LOCK_CHILD"); path != "" {
		lockChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "roomchat.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockAcrossProcesses$")
	cmd.Env = append(os.Environ(), "ROOMCHAT_SQLITE_LOCK_CHILD="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "open\n" {
		t.Fatalf("child said %q (%v), want open", line, err)
	}
	_, err = Open(context.Background(), path, Options{})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("Open while the child has the database: %v, want ErrLocked naming pid %d", err, cmd.Process.Pid)
	}
	t.Logf("Open while the child has the database: %v", err)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	s := openT(t, path, Options{})
	if ri := roomInfo(t, s, "r"); ri.LastSeq != 1 {
		t.Fatalf("after the child's kill -9: LastSeq %d, want its 1 message", ri.LastSeq)
	}
}

// lockChild opens the store at path, stores one message, says "open" and
// waits to be killed.
func lockChild(path string) {
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	done := make(chan error, 1)
	s.Append(storetest.Msg("r", "from the child"), "", func(_ protocol.Message, _ bool, err error) { done <- err })
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("open")
	select {} // until the parent kills it
}
