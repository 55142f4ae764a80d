package server

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/go-json-experiment/json"
)

// maxHeaderBytes bounds a request's headers (net/http's default is 1 MiB):
// a browser's or a proxy's headers for this site are a few KiB, and a
// client that sends more is not a chat client. Past it, 431.
const maxHeaderBytes = 32 << 10

// HTTPServer returns an http.Server that serves s with every timeout set,
// so that no client holds a connection, a goroutine and their buffers for
// long without sending or reading:
//
//   - ReadHeaderTimeout (Config.HeaderTimeout, 10 s): a client that
//     trickles its headers in, the WebSocket upgrade's included
//     (slowloris), is cut off.
//   - ReadTimeout (Config.RequestTimeout, 30 s): the whole request, body
//     included; a POST body that trickles in is cut.
//   - WriteTimeout (RequestTimeout): from the end of the headers to the end
//     of the response. A page of messages, up to a few hundred KiB, gets
//     RequestTimeout per 128 KiB instead (writePage).
//   - IdleTimeout (Config.IdleTimeout, 60 s): a keep-alive connection
//     waiting for its next request.
//
// Its ConnState tells the connections of Listener which of them are idle
// keep-alive ones, the first to go when they are at MaxTCPConns; serve a
// listener from Listener with it.
//
// net/http clears a connection's deadlines when it hands it over with
// Hijack, so none of these limits a WebSocket connection after the
// upgrade: its reads have no deadline (keepalive pings find dead peers)
// and its writes have Config.WriteTimeout from the last progress.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.HeaderTimeout,
		ReadTimeout:       s.cfg.RequestTimeout,
		WriteTimeout:      s.cfg.RequestTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         s.sockets.state,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// pageChunk is how much of a page of messages may take one
// RequestTimeout to be written (writePage): an average of about 4 KiB/s
// with the default 30 s, which a phone on a poor link exceeds many times.
const pageChunk = 128 << 10

// pageDeadline is how long a response of n bytes may take to be written
// in all: RequestTimeout per pageChunk, and at least RequestTimeout. So a
// client reading at the average rate of pageChunk per RequestTimeout or
// faster gets the whole response, and one that reads slower, or
// trickles, or stops, is cut off once that time is up: it holds a page
// slot (Config.MaxPageResponses), a goroutine and the encoded page for a
// bounded time, however it reads.
func (s *Server) pageDeadline(n int) time.Duration {
	return max(s.cfg.RequestTimeout, time.Duration(float64(s.cfg.RequestTimeout)*float64(n)/pageChunk))
}

// writePage writes v as writeJSON does, with one write deadline for the
// whole response: pageDeadline of its size from now.
func (s *Server) writePage(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encoding a response", "err", err)
		writeError(w, http.StatusInternalServerError, errInternal)
		return
	}
	b = append(b, '\n')
	// An http.ResponseWriter that cannot set deadlines (not net/http's)
	// gets none.
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.pageDeadline(len(b))))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
