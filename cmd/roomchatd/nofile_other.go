//go:build !unix

package main

// openFilesLimit reports that this system has no open-files limit to read.
func openFilesLimit() (uint64, bool) { return 0, false }
