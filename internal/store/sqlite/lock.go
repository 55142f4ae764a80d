package sqlite

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ErrLocked is returned (wrapped) by Open when another Store, in this
// process or another, has the database open.
var ErrLocked = errors.New("database is in use by another roomchatd")

// lockSuffix names the lock file beside the database, next to SQLite's
// own -wal and -shm.
const lockSuffix = "-lock"

// fileLock is an exclusive lock on the database's lock file, held for a
// Store's life, so that one database has one writer: the committer caches
// each room's last seq (see committer.rooms), which a second writer would
// make stale, and the two would fail each other's batches.
//
// It is flock(2) on a file of its own, never on the database: SQLite locks
// the database with POSIX record locks, which the kernel drops when the
// process closes any descriptor of that file, so a descriptor of ours on it
// would release SQLite's locks when closed. A flock belongs to its open
// file description: a second Open in the same process conflicts too, and
// the kernel releases it when the process ends however it ends (kill -9
// included), so it never goes stale. The file itself stays; it holds the
// holder's pid, for the message another process gets.
type fileLock struct {
	f       *os.File
	path    string
	created bool // the file did not exist before; removed if Open fails
}

// lockDB takes the lock of the database at real, the path with its
// symbolic links resolved (see resolve). The lock file sits beside that
// file, as SQLite's -wal does, so that two spellings of one database (a
// symlink) share one lock. It fails with ErrLocked, naming the holder's
// pid when the file tells it, if another Store has it.
//
// The lock file itself is never followed if it is a symbolic link, nor
// truncated before the lock is held: whoever can write to the directory
// could otherwise make roomchatd overwrite any file it may write. Such a
// link, or a lock file that is not a regular file, fails with an error
// naming it. A new lock file is privateMode.
func lockDB(real string) (*fileLock, error) {
	l := &fileLock{path: real + lockSuffix, created: true}
	var err error
	l.f, err = os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_EXCL|oNoFollow, privateMode)
	if errors.Is(err, os.ErrExist) {
		l.created = false
		l.f, err = os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|oNoFollow, privateMode)
	}
	if err != nil {
		if fi, lerr := os.Lstat(l.path); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			return nil, fmt.Errorf("lock file %s is a symbolic link; refusing to follow it (remove it: roomchatd creates its own)", l.path)
		}
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if fi, err := l.f.Stat(); err != nil || !fi.Mode().IsRegular() {
		l.f.Close()
		if err == nil {
			err = fmt.Errorf("not a regular file (%s)", fi.Mode())
		}
		return nil, fmt.Errorf("lock file %s: %w", l.path, err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		l.f.Chmod(fi.Mode().Perm() &^ 0o077) // best effort: it holds a pid only
	}
	held, err := flock(l.f)
	if err != nil || held {
		var pid []byte
		if held {
			pid, _ = io.ReadAll(io.LimitReader(l.f, 32))
		}
		l.f.Close()
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", l.path, err)
		}
		who := "pid unknown"
		if n, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil && n > 0 {
			who = "pid " + strconv.Itoa(n)
		}
		return nil, fmt.Errorf("%w (%s; lock file %s)", ErrLocked, who, l.path)
	}
	// Best effort: the pid only makes another process's message clearer.
	if l.f.Truncate(0) == nil {
		l.f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return l, nil
}

// release closes the lock file, which releases the lock, and removes the
// file if remove is set and lockDB created it. Call it only once SQLite
// has closed the database.
func (l *fileLock) release(remove bool) error {
	if l == nil || l.f == nil {
		return nil
	}
	if remove && l.created {
		os.Remove(l.path) // while still locked: no other Store holds a removed file
	}
	err := l.f.Close()
	l.f = nil
	return err
}
