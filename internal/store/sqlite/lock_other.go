//go:build !unix

package sqlite

import "os"

// oNoFollow is 0 where O_NOFOLLOW does not exist (Windows, where the lock
// is a no-op anyway): there a symbolic lock file is followed.
const oNoFollow = 0

// flock does nothing where flock(2) does not exist (Windows): there only
// SQLite's own locking applies, and nothing stops a second roomchatd on
// the same database.
func flock(*os.File) (held bool, err error) { return false, nil }
