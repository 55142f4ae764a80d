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
//     of the response. A page of messages, which may be megabytes, gets
//     RequestTimeout per 32 KiB instead (writeJSONPaced).
//   - IdleTimeout (Config.IdleTimeout, 60 s): a keep-alive connection
//     waiting for its next request.
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
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// pacedChunk is how much of a large response is written under one write
// deadline (writeJSONPaced).
const pacedChunk = 32 << 10

// writeJSONPaced writes v as writeJSON does, in pacedChunk pieces, each
// with a write deadline of RequestTimeout from when it starts. So a
// response of any size reaches a client that keeps reading at least
// pacedChunk per RequestTimeout (about 1 KiB/s with the defaults), and a
// client that stops reading is cut off RequestTimeout later, as for any
// other response.
func (s *Server) writeJSONPaced(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encoding a response", "err", err)
		writeError(w, http.StatusInternalServerError, errInternal)
		return
	}
	b = append(b, '\n')
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	for len(b) > 0 {
		n := min(len(b), pacedChunk)
		// An http.ResponseWriter that cannot set deadlines (not net/http's)
		// gets none.
		rc.SetWriteDeadline(time.Now().Add(s.cfg.RequestTimeout))
		if _, err := w.Write(b[:n]); err != nil {
			return
		}
		b = b[n:]
	}
}
