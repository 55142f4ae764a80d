package sqlite

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/roomchat/roomchat/internal/store/storetest"
)

// withUmask runs the rest of the test with the process's umask set to
// mask: the files' modes must not depend on it.
func withUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// wantMode fails the test unless path exists with permissions want.
func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%s: %v", filepath.Base(path), err)
		return
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", filepath.Base(path), got, want)
	}
}

// TestFileModes: with a umask that takes nothing away, a fresh start
// creates the data directory 0700 and the database, its -wal, -shm and
// -lock files 0600, also once messages were written; an existing database
// that others could read (from before this rule), and the -wal and -shm
// a crash left beside it, are made 0600 at the next Open.
func TestFileModes(t *testing.T) {
	withUmask(t, 0)
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "roomchat.db")
	s := mustOpen(t, path, Options{})
	all := func() {
		t.Helper()
		wantMode(t, dir, 0o700)
		for _, suffix := range []string{"", "-wal", "-shm", lockSuffix} {
			wantMode(t, path+suffix, 0o600)
		}
	}
	all()
	for i := range 100 {
		storetest.MustAppend(t, s, storetest.Msg("r", strings.Repeat("x", i)), "")
	}
	all()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for _, suffix := range []string{"", lockSuffix} {
		if err := os.Chmod(path+suffix, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// What a kill -9 leaves: a -wal and a -shm, here as an older roomchat
	// (or a umask of 022) made them.
	if err := os.WriteFile(path+"-wal", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+"-shm", make([]byte, 32<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, Options{})
	all()
	storetest.MustAppend(t, s, storetest.Msg("r", "after"), "")
	all()
}

// TestSymlinkedLockFileRefused: a lock file that is a symbolic link (one
// that whoever can write to the directory could plant, to make roomchatd
// overwrite another file) stops Open with an error naming it, and the file
// it points to is left as it was.
func TestSymlinkedLockFileRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "roomchat.db")
	victim := filepath.Join(t.TempDir(), "victim")
	want := []byte("not roomchat's to write\n")
	if err := os.WriteFile(victim, want, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{victim, filepath.Join(dir, "dangling")} {
		os.Remove(path + lockSuffix)
		if err := os.Symlink(target, path+lockSuffix); err != nil {
			t.Fatal(err)
		}
		s, err := Open(context.Background(), path, Options{})
		if err == nil {
			s.Close()
			t.Fatalf("Open with %s-lock a symbolic link to %s succeeded", path, target)
		}
		if !strings.Contains(err.Error(), path+lockSuffix) || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("Open: %q, want it to name %s and say it is a symbolic link", err, path+lockSuffix)
		}
		t.Logf("Open: %v", err)
	}
	if got, err := os.ReadFile(victim); err != nil || !bytes.Equal(got, want) {
		t.Errorf("the link's target holds %q (%v), want %q untouched", got, err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "dangling")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dangling link's target was created: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused Open left a database file: %v", err)
	}
}

// TestTokenKeyFromGo: a new file's token key is 32 bytes read from Go's
// random source (crypto/rand unless a test injects one), not SQLite's
// randomblob; it is kept across a restart, and a file migrated from before
// the key existed gets one too.
func TestTokenKeyFromGo(t *testing.T) {
	key := bytes.Repeat([]byte{0xA5}, tokenKeySize)
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{rand: bytes.NewReader(key)})
	if got := s.TokenKey(); !bytes.Equal(got, key) {
		t.Fatalf("TokenKey() = %x, want the %d bytes of the random source %x", got, tokenKeySize, key)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, Options{rand: bytes.NewReader(bytes.Repeat([]byte{1}, tokenKeySize))})
	if got := s.TokenKey(); !bytes.Equal(got, key) {
		t.Fatalf("TokenKey() after restart = %x, want %x", got, key)
	}

	// Two files from crypto/rand: 32 bytes each, different.
	a := openT(t, filepath.Join(t.TempDir(), "a.db"), Options{})
	b := openT(t, filepath.Join(t.TempDir(), "b.db"), Options{})
	if len(a.TokenKey()) != tokenKeySize || bytes.Equal(a.TokenKey(), b.TokenKey()) {
		t.Fatalf("keys %x and %x: want two different keys of %d bytes", a.TokenKey(), b.TokenKey(), tokenKeySize)
	}

	// A file whose key is gone (as one at schema version 1 never had it)
	// gets a new one at Open.
	old := filepath.Join(t.TempDir(), "old.db")
	s = mustOpen(t, old, Options{})
	s.Close()
	if _, err := rawDB(t, old).Exec("DELETE FROM meta WHERE key = 'token_key'"); err != nil {
		t.Fatal(err)
	}
	s = openT(t, old, Options{rand: bytes.NewReader(key)})
	if got := s.TokenKey(); !bytes.Equal(got, key) {
		t.Fatalf("TokenKey() of a file that had none = %x, want %x", got, key)
	}

	// A random source that fails stops Open.
	if s, err := Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), Options{rand: bytes.NewReader(nil)}); err == nil {
		s.Close()
		t.Fatal("Open with a failing random source succeeded")
	} else if !strings.Contains(err.Error(), "token key") {
		t.Fatalf("Open with a failing random source: %v, want it to say token key", err)
	}
}
