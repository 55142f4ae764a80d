//go:build unix

package sqlite

import (
	"errors"
	"os"
	"syscall"
)

// oNoFollow makes opening a symbolic link fail (ELOOP) instead of
// opening what it points to.
const oNoFollow = syscall.O_NOFOLLOW

// flock takes an exclusive flock on f without waiting. held reports that
// another open file description has it.
func flock(f *os.File) (held bool, err error) {
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true, nil
	}
	return false, err
}
