// Package web holds roomchat's browser client (SPEC §6): static HTML, CSS
// and JavaScript modules, embedded into the server binary. There is no build
// step; the files in this directory are what the browser gets.
//
// The server maps URLs to files in FS like this:
//
//	GET /             → index.html  (landing page: create a room, join by ID)
//	GET /r/{id}       → room.html   (the chat; reads the room ID from the URL)
//	GET /static/{f…}  → static/{f…} (CSS, JS modules, icon)
//
// Because FS keeps the "static/" prefix, http.FileServerFS(FS) can be mounted
// at "/static/" as is, without http.StripPrefix. The pages use absolute asset
// URLs (/static/…) since room.html is served below /r/. They contain no
// inline script, inline style or event-handler attributes, so they work
// under the server's Content-Security-Policy
// (default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; …).
package web

import "embed"

// FS holds index.html, room.html and everything under static/.
//
//go:embed index.html room.html static
var FS embed.FS

// Paths of the two pages inside FS.
const (
	IndexPage = "index.html"
	RoomPage  = "room.html"
)
