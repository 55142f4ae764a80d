package sqlite

import (
	"bytes"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/roomchat/roomchat/internal/store/storetest"
)

// editMeta runs stmts on the database at path while no Store has it
// open, as an operator's sqlite3 would: how the tests make a file look
// like one whose last run ended in a given way.
func editMeta(t testing.TB, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// metaValue reads one meta row of the database at path ("" when absent).
func metaValue(t *testing.T, path, key string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v sql.NullString
	if err := db.QueryRow("SELECT (SELECT value FROM meta WHERE key = ?)", key).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v.String
}

// syncBuffer is a log destination that tests read while stores write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestEpochAfterUncleanStop: a run with synchronous=NORMAL that ended
// without Close on another boot (the machine stopped: its last commits
// may have been in a page cache that is gone) gives every room a new
// epoch at the next Open; a clean stop, a crash of the process on the
// same boot, and any stop of a run with synchronous=FULL keep the epochs.
// The file is a real one, written by a Store, and made to look like
// each ending by editing its meta rows as that ending leaves them: the
// clean-stop marker removed (no Close), the recorded boot ID changed.
func TestEpochAfterUncleanStop(t *testing.T) {
	const bootA, bootB = "boot-a", "boot-b"
	for _, tc := range []struct {
		name       string
		sync       string
		clean      bool   // the last run closed the store
		lastBoot   string // the boot ID the last run recorded
		nowBoot    string // the boot ID at the next Open; "" for none to read
		wantRotate bool
	}{
		{name: "clean stop, same boot", sync: "NORMAL", clean: true, lastBoot: bootA, nowBoot: bootA},
		{name: "clean stop, then a reboot", sync: "NORMAL", clean: true, lastBoot: bootA, nowBoot: bootB},
		{name: "process crash on the same boot", sync: "NORMAL", lastBoot: bootA, nowBoot: bootA},
		{name: "machine stop", sync: "NORMAL", lastBoot: bootA, nowBoot: bootB, wantRotate: true},
		{name: "machine stop, boot ID unreadable", sync: "NORMAL", lastBoot: "", nowBoot: "", wantRotate: true},
		{name: "machine stop with synchronous=FULL", sync: "FULL", lastBoot: bootA, nowBoot: bootB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "roomchat.db")
			boot := func(id string) func() string { return func() string { return id } }
			s := mustOpen(t, path, Options{Synchronous: tc.sync, bootID: boot(tc.lastBoot)})
			for i := range 5 {
				storetest.MustAppend(t, s, storetest.Msg("busy", fmt.Sprint(i)), "")
			}
			before := roomInfo(t, s, "busy")
			if empty := roomInfo(t, s, "empty"); empty.Epoch != before.Epoch {
				t.Fatalf("empty room's epoch %q, want the store's %q", empty.Epoch, before.Epoch)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := metaValue(t, path, metaCleanStop); got != "1" {
				t.Fatalf("after Close: clean-stop marker %q, want \"1\"", got)
			}
			if !tc.clean {
				editMeta(t, path, "DELETE FROM meta WHERE key = 'clean_stop'")
			}

			var logs syncBuffer
			s = openT(t, path, Options{Synchronous: "NORMAL", bootID: boot(tc.nowBoot), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if got := metaValue(t, path, metaCleanStop); got != "" {
				t.Fatalf("while open: clean-stop marker %q, want none", got)
			}
			after, empty := roomInfo(t, s, "busy"), roomInfo(t, s, "empty")
			if after.LastSeq != before.LastSeq {
				t.Fatalf("lastSeq %d after the restart, want %d", after.LastSeq, before.LastSeq)
			}
			rotated := after.Epoch != before.Epoch
			if rotated != tc.wantRotate || empty.Epoch != after.Epoch || after.Epoch == "" {
				t.Fatalf("epoch %q → %q (empty room: %q); want rotated=%v, and the same epoch for both rooms", before.Epoch, after.Epoch, empty.Epoch, tc.wantRotate)
			}
			warned := strings.Contains(logs.String(), "new epoch")
			if warned != tc.wantRotate {
				t.Errorf("log %q: warned=%v, want %v", logs.String(), warned, tc.wantRotate)
			}
			// Seqs go on from the file's; the new epoch says they start a
			// new history.
			if m := storetest.MustAppend(t, s, storetest.Msg("busy", "next"), "").Msg; m.Seq != before.LastSeq+1 {
				t.Fatalf("next seq %d, want %d", m.Seq, before.LastSeq+1)
			}
			if got := roomInfo(t, s, "busy").Epoch; got != after.Epoch {
				t.Fatalf("epoch %q after the next message, want %q", got, after.Epoch)
			}
			if got := metaValue(t, path, metaBootID); got != tc.nowBoot {
				t.Fatalf("recorded boot ID %q, want this run's %q", got, tc.nowBoot)
			}
		})
	}
}

// TestEpochAfterKill9: a real process killed with SIGKILL while it
// appends with synchronous=NORMAL, on this machine's boot: the next Open
// keeps the epoch, and every acked message is there. The same file made
// to look as if the machine had stopped instead (the recorded boot ID
// changed; the kill left no clean-stop marker) gets a new epoch.
func TestEpochAfterKill9(t *testing.T) {
	if readBootID() == "" {
		t.Skip("no kernel boot ID to read here")
	}
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{Synchronous: "NORMAL"})
	storetest.MustAppend(t, s, storetest.Msg("r", "before"), "")
	epoch := roomInfo(t, s, "r").Epoch
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9KeepsAckedMessages$")
	cmd.Env = append(os.Environ(), "ROOMCHAT_SQLITE_KILL_CHILD="+path, "ROOMCHAT_SQLITE_KILL_SYNC=NORMAL")
	acked := killAfterAcks(t, cmd, 2000)
	if acked < 2 {
		t.Fatalf("child acked up to seq %d, want more", acked)
	}
	if got := metaValue(t, path, metaCleanStop); got != "" {
		t.Fatalf("after SIGKILL: clean-stop marker %q, want none", got)
	}

	s = mustOpen(t, path, Options{Synchronous: "NORMAL"})
	ri := roomInfo(t, s, "r")
	if ri.Epoch != epoch || ri.LastSeq < acked {
		t.Fatalf("after SIGKILL on the same boot: epoch %q lastSeq %d; want epoch %q kept and lastSeq ≥ %d (acked)", ri.Epoch, ri.LastSeq, epoch, acked)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed after seq %d was acked; same boot: epoch %s kept, lastSeq %d", acked, epoch, ri.LastSeq)

	// The same ending, had the machine stopped: no marker (killed), and
	// the file last opened in another boot.
	editMeta(t, path, "DELETE FROM meta WHERE key = 'clean_stop'", "UPDATE meta SET value = 'an-earlier-boot' WHERE key = 'boot_id'")
	s = openT(t, path, Options{Synchronous: "NORMAL"})
	if got := roomInfo(t, s, "r").Epoch; got == epoch || got == "" {
		t.Fatalf("after a machine stop: epoch %q, want a new one (was %q)", got, epoch)
	}
}
