package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, ret store.Retention) store.Store {
		return mustOpen(t, filepath.Join(t.TempDir(), "roomchat.db"), Options{Retention: ret, TrimInterval: 50 * time.Millisecond})
	})
}

// mustOpen opens a store; the caller (or the suite) closes it.
func mustOpen(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	return s
}

// openT opens a store that is closed when the test ends.
func openT(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s := mustOpen(t, path, opts)
	t.Cleanup(func() { s.Close() })
	return s
}

func messages(t *testing.T, s store.Store, room string) []protocol.Message {
	t.Helper()
	ms, err := s.Messages(context.Background(), room, store.Query{})
	if err != nil {
		t.Fatalf("Messages(%q): %v", room, err)
	}
	return ms
}

func roomInfo(t *testing.T, s store.Store, room string) store.RoomInfo {
	t.Helper()
	ri, err := s.Room(context.Background(), room)
	if err != nil {
		t.Fatalf("Room(%q): %v", room, err)
	}
	return ri
}

func TestRestartKeepsHistorySeqAndEpoch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{})
	var want []protocol.Message
	for i := range 5 {
		want = append(want, storetest.MustAppend(t, s, storetest.Msg("r", fmt.Sprint(i)), "").Msg)
	}
	before := roomInfo(t, s, "r")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openT(t, path, Options{})
	if diff := cmp.Diff(want, messages(t, s, "r")); diff != "" {
		t.Fatalf("history after restart (-want +got):\n%s", diff)
	}
	if got := roomInfo(t, s, "r"); got != before {
		t.Fatalf("Room after restart = %+v, want %+v (same epoch)", got, before)
	}
	if r := storetest.MustAppend(t, s, storetest.Msg("r", "after"), ""); r.Msg.Seq != 6 {
		t.Fatalf("first seq after restart = %d, want 6", r.Msg.Seq)
	}
	if r := storetest.MustAppend(t, s, storetest.Msg("new", "x"), ""); r.Msg.Seq != 1 {
		t.Fatalf("new room's first seq = %d, want 1", r.Msg.Seq)
	}
	// Every room of one file starts in the file's epoch.
	if e, unused := roomInfo(t, s, "new").Epoch, roomInfo(t, s, "unused").Epoch; e == "" || e != unused {
		t.Fatalf("new room's epoch = %q, want the store's epoch %q", e, unused)
	}
}

func TestDedupAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{})
	key := store.DedupKey("u1", "room", "c1")
	first := storetest.MustAppend(t, s, storetest.Msg("r", "hello"), key)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, Options{})
	again := storetest.MustAppend(t, s, storetest.Msg("r", "hello, retried"), key)
	if !again.Dup {
		t.Fatalf("retry after restart: dup = false, want true")
	}
	if diff := cmp.Diff(first.Msg, again.Msg); diff != "" {
		t.Fatalf("retry after restart returned another message (-want +got):\n%s", diff)
	}
	if n := len(messages(t, s, "r")); n != 1 {
		t.Fatalf("stored %d messages, want 1", n)
	}
}

func TestDedupExpires(t *testing.T) {
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	s := openT(t, filepath.Join(t.TempDir(), "roomchat.db"), Options{now: now})
	key := store.DedupKey("u1", "room", "c1")
	storetest.MustAppend(t, s, storetest.Msg("r", "1"), key)
	mu.Lock()
	clock = clock.Add(store.DedupWindow - time.Second)
	mu.Unlock()
	if r := storetest.MustAppend(t, s, storetest.Msg("r", "2"), key); !r.Dup {
		t.Fatalf("key within the window: dup = false, want true")
	}
	mu.Lock()
	clock = clock.Add(2 * time.Second)
	mu.Unlock()
	r := storetest.MustAppend(t, s, storetest.Msg("r", "3"), key)
	if r.Dup || r.Msg.Seq != 2 {
		t.Fatalf("key past the window: seq=%d dup=%v, want seq 2, dup false", r.Msg.Seq, r.Dup)
	}
	// The renewed key holds again.
	if r := storetest.MustAppend(t, s, storetest.Msg("r", "4"), key); !r.Dup || r.Msg.Seq != 2 {
		t.Fatalf("renewed key: seq=%d dup=%v, want seq 2, dup true", r.Msg.Seq, r.Dup)
	}
}

func TestDedupSweep(t *testing.T) {
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := openT(t, path, Options{now: now, TrimInterval: 10 * time.Millisecond})
	for i := range 10 {
		storetest.MustAppend(t, s, storetest.Msg("r", fmt.Sprint(i)), store.DedupKey("u", "r", fmt.Sprint(i)))
	}
	mu.Lock()
	clock = clock.Add(store.DedupWindow + time.Second)
	mu.Unlock()
	storetest.MustAppend(t, s, storetest.Msg("r", "fresh"), store.DedupKey("u", "r", "fresh"))
	db := rawDB(t, path)
	chattest.Eventually(t, 10*time.Second, func() bool {
		var n int
		if err := db.QueryRow("SELECT count(*) FROM dedup").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}, "expired keys swept")
}

// rawDB opens a second, independent connection to the file, as another
// process would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(100)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestRetentionDeletesRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := openT(t, path, Options{Retention: store.Retention{MaxMessages: 10}, TrimInterval: 10 * time.Millisecond})
	for i := range 2500 {
		s.Append(storetest.Msg("r", fmt.Sprint(i)), "", func(protocol.Message, bool, error) {})
	}
	storetest.MustAppend(t, s, storetest.Msg("r", "last"), "")
	if got := messages(t, s, "r"); len(got) != 10 || got[0].Seq != 2492 {
		t.Fatalf("read %d messages from seq %d, want 10 from 2492", len(got), got[0].Seq)
	}
	db := rawDB(t, path)
	chattest.Eventually(t, 10*time.Second, func() bool {
		var n int
		if err := db.QueryRow("SELECT count(*) FROM messages").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 10
	}, "rows trimmed to 10")
}

func TestRetentionAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{})
	for i := range 20 {
		storetest.MustAppend(t, s, storetest.Msg("r", fmt.Sprint(i)), "")
	}
	s.Close()
	// A lower limit at the next start applies to rooms nobody writes to.
	openT(t, path, Options{Retention: store.Retention{MaxMessages: 5}})
	db := rawDB(t, path)
	chattest.Eventually(t, 10*time.Second, func() bool {
		var n int
		if err := db.QueryRow("SELECT count(*) FROM messages").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 5
	}, "rows trimmed to 5")
}

func TestRetentionMaxAge(t *testing.T) {
	clock := time.Now().Truncate(time.Millisecond)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := openT(t, path, Options{now: now, Retention: store.Retention{MaxAge: time.Hour}, TrimInterval: 10 * time.Millisecond})
	for i := range 3 {
		m := storetest.Msg("r", fmt.Sprint(i))
		m.TS = clock.Add(-2 * time.Hour).UTC()
		storetest.MustAppend(t, s, m, "")
	}
	for i := range 2 {
		m := storetest.Msg("r", fmt.Sprint("new", i))
		m.TS = clock.UTC()
		storetest.MustAppend(t, s, m, "")
	}
	if got := messages(t, s, "r"); len(got) != 2 || got[0].Seq != 4 {
		t.Fatalf("got %d messages, want seqs 4 and 5", len(got))
	}
	if ri := roomInfo(t, s, "r"); ri.FirstSeq != 4 || ri.LastSeq != 5 {
		t.Fatalf("Room = %+v, want FirstSeq 4, LastSeq 5", ri)
	}
	mu.Lock()
	clock = clock.Add(2 * time.Hour)
	mu.Unlock()
	if ri := roomInfo(t, s, "r"); ri.FirstSeq != 6 || ri.LastSeq != 5 || ri.Epoch == "" {
		t.Fatalf("Room after everything aged out = %+v, want FirstSeq 6, LastSeq 5 and the epoch", ri)
	}
	db := rawDB(t, path)
	// Aged rows go at the next full pass (each minute) or when the room
	// gets a message.
	m := storetest.Msg("r", "now")
	m.TS = now().UTC()
	storetest.MustAppend(t, s, m, "")
	chattest.Eventually(t, 10*time.Second, func() bool {
		var n int
		if err := db.QueryRow("SELECT count(*) FROM messages").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}, "aged rows deleted")
}

// TestEmptyRoomEpoch: a room without messages has the file's epoch,
// which survives a restart and differs from another file's, and so does
// the token key.
func TestEmptyRoomEpoch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{})
	ri := roomInfo(t, s, "nothing")
	if ri.LastSeq != 0 || ri.FirstSeq != 0 || ri.Epoch == "" {
		t.Fatalf("Room(unused) = %+v, want no messages and an epoch", ri)
	}
	key := s.TokenKey()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, Options{})
	if got := roomInfo(t, s, "nothing"); got != ri {
		t.Fatalf("Room(unused) after restart = %+v, want %+v", got, ri)
	}
	if !bytes.Equal(s.TokenKey(), key) {
		t.Fatal("token key changed across a restart")
	}
	other := openT(t, filepath.Join(t.TempDir(), "other.db"), Options{})
	if e := roomInfo(t, other, "nothing").Epoch; e == ri.Epoch {
		t.Fatalf("two files share the epoch %q", e)
	}
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	foreign := filepath.Join(dir, "foreign.db")
	db, err := sql.Open("sqlite", "file:"+foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	good := filepath.Join(dir, "good.db")
	s := mustOpen(t, good, Options{})
	storetest.MustAppend(t, s, storetest.Msg("r", "1"), "")
	s.Close()
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the header, garble the rest of page 1 (the schema).
	corrupt := append([]byte(nil), raw...)
	for i := 100; i < 4096 && i < len(corrupt); i++ {
		corrupt[i] = 0xA5
	}
	newer := filepath.Join(dir, "newer.db")
	s = mustOpen(t, newer, Options{})
	s.Close()
	ndb, _ := sql.Open("sqlite", "file:"+newer)
	if _, err := ndb.Exec("PRAGMA user_version = 999"); err != nil {
		t.Fatal(err)
	}
	ndb.Close()

	cases := []struct {
		name, path string
		want       error  // errors.Is, if set
		text       string // in the message
	}{
		{"text file", write("notes.txt", []byte("hello, this is not a database at all, but it is long enough\n")), ErrNotRoomchat, "not an SQLite database"},
		{"foreign SQLite", foreign, ErrNotRoomchat, "another application"},
		{"corrupt", write("corrupt.db", corrupt), nil, "malformed"},
		{"newer schema", newer, ErrNotRoomchat, "newer"},
		{"directory", dir, ErrNotRoomchat, "not a regular file"},
		{"unreachable", filepath.Join(write("file", nil), "sub", "x.db"), nil, "not a directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(context.Background(), tc.path, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) succeeded, want an error", tc.name)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Open: err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("Open: err = %q, want it to name the path and contain %q", err, tc.text)
			}
			t.Logf("Open(%s): %v", tc.name, err)
		})
	}
}

func TestOpenMigratesEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "roomchat.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := openT(t, path, Options{})
	storetest.MustAppend(t, s, storetest.Msg("r", "1"), "")
	db := rawDB(t, path)
	var appID, version int
	var mode string
	db.QueryRow("PRAGMA application_id").Scan(&appID)
	db.QueryRow("PRAGMA user_version").Scan(&version)
	db.QueryRow("PRAGMA journal_mode").Scan(&mode)
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if appID != applicationID || version != len(ms) || mode != "wal" {
		t.Fatalf("application_id=%#x user_version=%d journal_mode=%s, want %#x, %d, wal", appID, version, mode, applicationID, len(ms))
	}
}

func TestOpenReadOnlyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{})
	storetest.MustAppend(t, s, storetest.Msg("r", "1"), "")
	s.Close()
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		// Root ignores file modes; the immutable attribute stops root too.
		f.Close()
		if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
			t.Skipf("cannot make the file read-only for this user: chattr: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-i", path).Run() })
	}
	s, err := Open(context.Background(), path, Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open(read-only file) succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "readonly") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open(read-only file): err = %q, want it to name the path and say readonly", err)
	}
	t.Logf("Open(read-only file): %v", err)
}

// TestBackupVacuumInto runs the backup command of docs/storage.md
// ("VACUUM INTO") from another connection while the store is open, then
// opens the copy as a store.
func TestBackupVacuumInto(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "roomchat.db")
	s := openT(t, path, Options{})
	var want []protocol.Message
	for i := range 20 {
		want = append(want, storetest.MustAppend(t, s, storetest.Msg("r", fmt.Sprint(i)), "").Msg)
	}
	backup := filepath.Join(dir, "backup.db")
	if _, err := rawDB(t, path).Exec("VACUUM INTO ?", backup); err != nil {
		t.Fatalf("VACUUM INTO: %v", err)
	}
	b := openT(t, backup, Options{})
	if diff := cmp.Diff(want, messages(t, b, "r")); diff != "" {
		t.Fatalf("backup's history (-want +got):\n%s", diff)
	}
	if got, want := roomInfo(t, b, "r"), roomInfo(t, s, "r"); got != want {
		t.Fatalf("backup's Room = %+v, want %+v", got, want)
	}
}
