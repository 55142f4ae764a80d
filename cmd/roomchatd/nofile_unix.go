//go:build unix

package main

import "syscall"

// openFilesLimit returns the process's open-files limit (the soft
// RLIMIT_NOFILE). Go's runtime has already raised it to the hard limit
// (less one) at start, in syscall's init since Go 1.19, so there is
// nothing to raise here.
func openFilesLimit() (uint64, bool) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, false
	}
	return uint64(lim.Cur), true
}
