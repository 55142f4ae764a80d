//go:build !unix

package sqlite

import "os"

// flock does nothing where flock(2) does not exist (Windows): there only
// SQLite's own locking applies, and nothing stops a second roomchatd on
// the same database.
func flock(*os.File) (held bool, err error) { return false, nil }
