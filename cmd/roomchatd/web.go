package main

import "io/fs"

// webFS returns the embedded web client.
func webFS() fs.FS { return nil }
