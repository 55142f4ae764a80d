package server

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
)

// Listener wraps ln, the listener that s.HTTPServer() serves, so that
// every TCP connection it accepts is counted from its accept to its close,
// whatever it becomes: a request being read (or an upgrade, which may never
// finish sending its headers), an idle keep-alive connection, a WebSocket.
// At Config.MaxTCPConns open, an idle keep-alive connection (the one idle
// longest) is closed to make room for the new one; with none idle, the new
// connection is closed at once. Past Config.IPHTTPConns HTTP connections
// (not upgraded) from its address, the new one is closed at once too. Each
// refusal is counted in /metrics (roomchat_tcp_refused_total) and logged
// ("refused connection", throttled).
//
// Without it, only WebSockets are counted (MaxConns): idle keep-alive
// connections and half-sent requests could take the file descriptors
// MaxConns leaves spare, and accept would then fail with EMFILE, while a
// new client's handshake waited for one to close.
//
// Idle connections are known from the http.Server's ConnState, which
// HTTPServer sets; the counts need both.
func (s *Server) Listener(ln net.Listener) net.Listener {
	return &listener{Listener: ln, s: s}
}

// listener is Server.Listener's.
type listener struct {
	net.Listener
	s *Server
}

// Accept returns the next connection that finds room (see
// Server.Listener); it closes the ones that do not and goes on.
func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c, idle, why := l.s.sockets.admit(nc)
		if idle != nil {
			// Outside the lock: a close is I/O. Its net/http goroutine,
			// blocked reading, then ends; the count was moved to c.
			idle.Conn.Close()
			l.s.metrics.idleClosed.Inc()
		}
		if c != nil {
			return c, nil
		}
		nc.Close()
		if why == refusedFull {
			l.s.metrics.tcpRefused.WithLabelValues("server_full").Inc()
			l.s.log.Warn("refused connection", "remote", nc.RemoteAddr().String(), "why", why, "max_tcp_conns", l.s.cfg.MaxTCPConns)
		} else {
			l.s.metrics.tcpRefused.WithLabelValues("address").Inc()
			l.s.log.Info("refused connection", "remote", nc.RemoteAddr().String(), "why", why, "ip_http_conns", l.s.cfg.IPHTTPConns)
		}
	}
}

// Why a connection was refused at accept: the "why" of the log line
// (roomchat_tcp_refused_total's reason is server_full or address).
const (
	refusedFull    = "server full"
	refusedAddress = "address connections"
)

// sockets counts the connections of Server.Listener: all of them against
// max, and the HTTP ones (not upgraded) of each client address against
// perAddr. It knows which are idle keep-alive connections, in the order
// they became idle, from the http.Server's ConnState (state).
type sockets struct {
	max     int                   // Config.MaxTCPConns; 0: no limit
	perAddr int                   // Config.IPHTTPConns; 0: no limit
	trusted func(netip.Addr) bool // a reverse proxy: not limited per address

	mu     sync.Mutex // guards the fields below and every sock's
	open   int
	byAddr map[netip.Prefix]int // HTTP connections per address (with perAddr); never 0
	peak   int                  // the size byAddr grew to since it was rebuilt
	// idle lists the idle keep-alive connections, the one idle longest
	// first.
	idleHead, idleTail *sock
}

// sock is a connection of Server.Listener: net/http serves it, and it is
// the net.Conn of the WebSocket it may become (Hijack returns it), so its
// Close gives its place back however it ends. Reads and writes go straight
// to the socket: nothing here is on the message path.
type sock struct {
	net.Conn
	s *sockets

	// Guarded by s.mu.
	prev, next *sock // in the idle list
	idle       bool  // in the idle list
	http       bool  // counted in byAddr
	gone       bool  // its place was given back
}

// admit takes a place for nc, or says why there is none. At max, it gives
// nc the place of the connection idle longest, which it returns for the
// caller to close.
func (s *sockets) admit(nc net.Conn) (c *sock, idle *sock, why string) {
	var key netip.Prefix
	limitAddr := false
	if s.perAddr > 0 {
		a := peerAddr(nc)
		if limitAddr = !s.trusted(a); limitAddr {
			key = addrKey(a)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if limitAddr && s.byAddr[key] >= s.perAddr {
		return nil, nil, refusedAddress
	}
	if s.max > 0 && s.open >= s.max {
		if s.idleHead == nil {
			return nil, nil, refusedFull
		}
		idle = s.idleHead
		s.release(idle)
	}
	s.open++
	c = &sock{Conn: nc, s: s}
	if limitAddr {
		if s.byAddr == nil {
			s.byAddr = make(map[netip.Prefix]int)
		}
		s.byAddr[key]++
		s.peak = max(s.peak, len(s.byAddr))
		c.http = true
	}
	return c, idle, ""
}

// state follows net/http's view of a connection (http.Server.ConnState).
func (s *sockets) state(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*sock)
	if !ok || c.s != s {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.gone {
		return
	}
	switch st {
	case http.StateIdle:
		if !c.idle {
			c.idle, c.prev = true, s.idleTail
			if s.idleTail != nil {
				s.idleTail.next = c
			} else {
				s.idleHead = c
			}
			s.idleTail = c
		}
	case http.StateActive:
		s.unlinkIdle(c)
	case http.StateHijacked:
		// A WebSocket now: MaxConns and IPConns count it by its client
		// address; here it keeps its place among all connections.
		s.unlinkIdle(c)
		s.uncountHTTP(c)
	case http.StateClosed:
		s.release(c)
	}
}

// release gives back c's place, once. Guarded by s.mu.
func (s *sockets) release(c *sock) {
	if c.gone {
		return
	}
	c.gone = true
	s.open--
	s.unlinkIdle(c)
	s.uncountHTTP(c)
}

// unlinkIdle takes c out of the idle list if it is there. Guarded by s.mu.
func (s *sockets) unlinkIdle(c *sock) {
	if !c.idle {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		s.idleHead = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		s.idleTail = c.prev
	}
	c.prev, c.next, c.idle = nil, nil, false
}

// uncountHTTP takes c out of its address's HTTP connections. Guarded by
// s.mu.
func (s *sockets) uncountHTTP(c *sock) {
	if !c.http {
		return
	}
	c.http = false
	key := addrKey(peerAddr(c.Conn))
	s.byAddr = release(s.byAddr, key, &s.peak)
}

// count is how many connections hold a place.
func (s *sockets) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Close gives the connection's place back and closes the socket; it may
// be called more than once (net/http and the WebSocket library both do).
func (c *sock) Close() error {
	c.s.mu.Lock()
	c.s.release(c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite shuts the socket's writing side, as net/http does before it
// closes a connection after an error response, so that the client reads
// the response rather than a reset.
func (c *sock) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// peerAddr is the address of a connection's peer, an IPv4 address mapped
// into IPv6 unmapped; the zero Addr if it has none.
func peerAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return remoteAddr(c.RemoteAddr().String())
}
