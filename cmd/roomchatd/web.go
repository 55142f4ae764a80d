package main

import (
	"io/fs"

	"github.com/roomchat/roomchat/web"
)

// webFS returns the embedded web client.
func webFS() fs.FS { return web.FS }
