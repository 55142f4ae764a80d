package sqlite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// TestKill9KeepsAckedMessages runs a child process that appends as fast as
// it can and prints the seq of every acked message, kills it with SIGKILL
// mid-stream, and checks that every acked message is in the file.
func TestKill9KeepsAckedMessages(t *testing.T) {
	if path := os.Getenv("ROOMCHAT_SQLITE_KILL_CHILD"); path != "" {
		killChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "roomchat.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9KeepsAckedMessages$")
	cmd.Env = append(os.Environ(), "ROOMCHAT_SQLITE_KILL_CHILD="+path)
	acked := killAfterAcks(t, cmd, 3000)
	if acked == 0 {
		t.Fatal("child acked nothing")
	}
	s := openT(t, path, Options{})
	ri := roomInfo(t, s, "r")
	if ri.LastSeq < acked {
		t.Fatalf("after kill -9: LastSeq %d, but the child had acked seq %d", ri.LastSeq, acked)
	}
	ms, err := s.Messages(context.Background(), "r", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.Seq != int64(i+1) {
			t.Fatalf("after kill -9: message %d has seq %d (gap)", i, m.Seq)
		}
	}
	t.Logf("acked up to seq %d before SIGKILL; %d messages in the file", acked, len(ms))
}

// killChild appends to room "r" from many goroutines' worth of outstanding
// Appends and prints each acked seq, until it is killed. Its store's
// synchronous setting is ROOMCHAT_SQLITE_KILL_SYNC's, by default FULL.
func killChild(path string) {
	s, err := Open(context.Background(), path, Options{Synchronous: os.Getenv("ROOMCHAT_SQLITE_KILL_SYNC")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	acks := make(chan int64, 1<<16)
	sem := make(chan struct{}, 256)
	go func() {
		w := bufio.NewWriter(os.Stdout)
		for seq := range acks {
			fmt.Fprintln(w, seq)
			if len(acks) == 0 {
				w.Flush()
			}
		}
	}()
	for i := 0; ; i++ {
		sem <- struct{}{}
		m := storetest.Msg("r", strconv.Itoa(i))
		m.ID = strconv.Itoa(i)
		s.Append(m, "", func(stored protocol.Message, _ bool, err error) {
			<-sem
			if err == nil {
				acks <- stored.Seq
			}
		})
		if i > 1e6 {
			time.Sleep(time.Hour) // the parent kills us long before
		}
	}
}

// killAfterAcks starts cmd, a child that prints the seq of every acked
// message, kills it with SIGKILL once it has acked seq n, and returns the
// highest seq it acked (those printed before the kill but read after it
// count too).
func killAfterAcks(t *testing.T, cmd *exec.Cmd, n int64) int64 {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := int64(0)
	sc := bufio.NewScanner(out)
	for sc.Scan() && acked < n {
		if seq, err := strconv.ParseInt(sc.Text(), 10, 64); err == nil {
			acked = max(acked, seq)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		if seq, err := strconv.ParseInt(sc.Text(), 10, 64); err == nil {
			acked = max(acked, seq)
		}
	}
	cmd.Wait()
	return acked
}
