// The database file: its real path, its private modes, the check that it
// is roomchat's before SQLite opens it, and the DSNs of its connections.

package sqlite

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// privateMode is the mode of the database's files: history and the token
// key are for the user that runs roomchat only.
const privateMode = 0o600

// createPrivate creates the database file at path, empty and privateMode,
// if nothing is there, so that SQLite opens a file with that mode instead
// of creating one with its default (0644 less the umask). SQLite gives the
// -wal and -shm files it creates the database file's mode, also
// regardless of the umask.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, privateMode)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Chmod(privateMode) // the umask may have taken bits of privateMode
}

// narrowModes takes the group's and others' permissions off those of paths
// that exist and have any. It does not follow a -wal or -shm that is a
// symbolic link (SQLite refuses those anyway).
func narrowModes(paths ...string) error {
	var errs []error
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil && fi.Mode().Perm()&0o077 != 0 {
			err = os.Chmod(p, fi.Mode().Perm()&^0o077)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// resolve returns the path of the file that path (absolute) names, its
// symbolic links followed; for a file that does not exist yet, its
// directory's links. SQLite resolves a database's path the same way and
// keeps its -wal and -shm beside the file the path resolves to.
func resolve(path string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if errors.Is(err, os.ErrNotExist) {
		var dir string
		if dir, err = filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
			real = filepath.Join(dir, filepath.Base(path))
		}
	}
	return real, err
}

// checkFile refuses an existing path that is not a regular file or whose
// header is not SQLite's, with a clearer message than SQLite's own.
func checkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file (%s)", ErrNotRoomchat, fi.Mode())
	}
	if fi.Size() == 0 {
		return nil // SQLite treats an empty file as an empty database
	}
	head := make([]byte, len(sqliteMagic))
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, sqliteMagic) {
		return fmt.Errorf("%w: not an SQLite database file", ErrNotRoomchat)
	}
	return nil
}

// dsn returns the modernc.org/sqlite data source name for path, with WAL
// mode and the busy timeout set on every new connection.
func dsn(path string, busy time.Duration, extra string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&%s",
		esc, busy.Milliseconds(), extra)
}
