package server

import (
	"maps"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// retryFull is the Retry-After of an upgrade refused because the server
// or the address holds as many connections as it may: when one closes is
// unknown, and clients that honour it should not all come back at once,
// so it is 5 s plus up to 5 s of jitter.
const retryFull = 5 * time.Second

// handleWS upgrades a request to a WebSocket connection and starts
// serving it: admit, then the connection (newConn), then start.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	addr, key, ok := s.admit(w, r)
	if !ok {
		return
	}
	id, ok := s.authenticate(w, r, key)
	if !ok {
		return
	}
	c, ok := s.newConn(w, r, key)
	if !ok {
		return
	}
	c.start(r, addr, id)
}

// admit decides whether an upgrade may go ahead, and answers it when not:
// in this order, 503 shutting_down during shutdown; 429 rate_limited past
// the address's rate of new connections or its open connections; 503
// server_full past MaxConns. Nothing is allocated for a connection before
// these pass. It returns the client's address and its key (addrKey), whose
// place in the gate the caller now holds.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (addr netip.Addr, key netip.Prefix, ok bool) {
	if s.shutting.Load() {
		s.metrics.refused.Inc()
		s.fail(w, http.StatusServiceUnavailable, errShuttingDown)
		return addr, key, false
	}
	addr = s.clientAddr(r)
	key = addrKey(addr)
	if ok, wait := s.upgrades.allow(key, time.Now()); !ok {
		s.log.Info("refused websocket", "remote", r.RemoteAddr, "client", addr, "why", "address connection rate")
		s.metrics.refused.Inc()
		s.refuse(w, http.StatusTooManyRequests, wait, protocol.Errorf(protocol.CodeRateLimited, "too many new connections from your address; the limit is %g per second", s.cfg.IPConnRate))
		return addr, key, false
	}
	switch s.gate.enter(key) {
	case addrFull:
		s.log.Info("refused websocket", "remote", r.RemoteAddr, "client", addr, "why", "address connections")
		s.metrics.refused.Inc()
		s.refuse(w, http.StatusTooManyRequests, retryFull+rand.N(retryFull), protocol.Errorf(protocol.CodeRateLimited, "too many open connections from your address; the limit is %d", s.cfg.IPConns))
		return addr, key, false
	case serverFull:
		s.logFull()
		s.log.Info("refused websocket", "remote", r.RemoteAddr, "client", addr, "why", "server full")
		s.metrics.refused.Inc()
		s.refuse(w, http.StatusServiceUnavailable, retryFull+rand.N(retryFull), protocol.Errorf(protocol.CodeServerFull, "the server holds as many connections as it may; try again in a few seconds"))
		return addr, key, false
	}
	return addr, key, true
}

// subprotocols is what the upgrade may select (protocol.Subprotocol);
// never modified.
var subprotocols = []string{protocol.Subprotocol}

// resumeToken returns the resume token of an upgrade (SPEC §4 "Identity
// across reconnects"), first found: the subprotocol roomchat.resume.<token>,
// which stays out of request lines that proxies log, then the query
// parameter resume, for scripts. "" when there is none.
func resumeToken(r *http.Request) string {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if tok, ok := strings.CutPrefix(strings.TrimSpace(p), protocol.ResumeSubprotocol); ok {
				return tok
			}
		}
	}
	return r.URL.Query().Get("resume")
}

// logFull warns that the server is full, at most once a minute: under a
// flood of upgrades one line per refusal would bury it.
func (s *Server) logFull() {
	now := time.Now().UnixNano()
	last := s.fullWarned.Load()
	if now-last < int64(time.Minute) || !s.fullWarned.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("server full: refusing WebSocket upgrades with 503", "max_conns", s.cfg.MaxConns)
}

// track adds c to the live connections and returns how many there are.
func (s *Server) track(c *conn) (online int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live[c] = struct{}{}
	online = len(s.live)
	s.livePeak = max(s.livePeak, online)
	s.conns.Add(1)
	return online
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.live, c)
	if n := len(s.live); n < s.livePeak/4 {
		s.live, s.livePeak = maps.Collect(maps.All(s.live)), n
	}
	s.mu.Unlock()
}

// baseURL is the scheme and host a share link starts with.
func (s *Server) baseURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
