package server

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/roomchat/roomchat/internal/identity"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/store"
)

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Store keeps history: the HTTP API reads it and Shutdown flushes
	// it. Required; with Registry set, it is the registry's store.
	Store store.Store
	// Registry holds the rooms and users (room.New, with the broker,
	// directory and roster of a cluster and the room budgets). nil builds
	// a single-node one on Store, with Limits, the server's Logger and
	// room.DefaultBudgets. Its ResumeMaxAge sets when a connection gets a
	// new resume token: at the keepalive ping once its token is half that
	// old. Shutdown closes it.
	Registry *room.Registry
	// Verifier returns the token verifier in force (SPEC §10; a reload
	// may replace it); nil, or a nil result, refuses every token.
	Verifier func() *identity.Verifier
	// AuthGrace is how long a connection whose token expired may go on
	// without an auth frame before it is closed with 4001 (30 s).
	AuthGrace time.Duration
	// Limits are SPEC §4's limits; zero means protocol.DefaultLimits().
	// With Registry set, they are the registry's.
	Limits protocol.Limits
	// Origins are the browser origins allowed besides the server's own:
	// host patterns (chat.example.com, *.example.com) or full origins
	// (https://chat.example.com). Clients that send no Origin are accepted.
	Origins []string
	// PublicURL is the scheme and host of share links
	// (https://chat.example.com); empty derives it from each request.
	// Its host is also one that the server answers to (see Hosts).
	PublicURL string
	// Hosts are the names the server answers to, each a host name or IP
	// address (any port) or host:port (that port only). With Hosts or
	// PublicURL set, a request whose Host is none of them (nor
	// PublicURL's) gets 421 bad_host before anything else, except GET
	// /healthz and /readyz; so a DNS-rebinding page, whose requests carry
	// its own name, is never taken for the server's own origin. Both
	// empty answers every Host.
	Hosts []string
	// Web holds the browser client's files (index.html, room.html and
	// static assets); nil serves a placeholder page.
	Web fs.FS
	// Logger receives structured logs; nil discards them. The lines that
	// can come once per message or request when something is wrong (a
	// store that fails, refused upgrades) are throttled to one per 10 s
	// each, with the number left out (throttle).
	Logger *slog.Logger

	// MaxQueue is the most bytes a connection may have queued before it is
	// closed as too slow (1 MiB).
	MaxQueue int
	// WriteTimeout is how long a write to a connection may go without
	// progress, the socket taking no byte of it (10 s); past it the
	// connection is closed as too slow. A write that keeps progressing
	// may take longer.
	WriteTimeout time.Duration
	// PingInterval is the keepalive period (25 s); PingTimeout is how long a
	// pong may take (10 s).
	PingInterval, PingTimeout time.Duration
	// FrameTimeout is how long a client's data message may take to
	// arrive, from its first byte to its last (10 s); past it the
	// connection is closed with 1008. A message started and never
	// finished would otherwise hold a goroutine and a buffer of up to
	// MaxFrame bytes for as long as the client trickles a byte per
	// keepalive interval.
	FrameTimeout time.Duration
	// Collectors are more Prometheus series for /metrics (the cluster's).
	Collectors []prometheus.Collector
	// SeparateMetrics leaves GET /metrics out of the server's routes (it
	// answers 404 there), for a caller that serves MetricsHandler on a
	// listener of its own, such as a private address (roomchatd's
	// -metrics-addr).
	SeparateMetrics bool

	// MaxConns is the most WebSocket connections open at once; past it
	// an upgrade gets 503 server_full before anything is allocated for
	// it. 0 means no limit (roomchatd derives its default from the
	// process's open-files limit).
	MaxConns int
	// MaxTCPConns is the most TCP connections open at once on a listener
	// wrapped by Listener, WebSockets included (HTTPServer must serve it):
	// past it, the connection idle longest among keep-alive HTTP ones is
	// closed to make room, or with none idle the new one is closed at
	// once. 0 means no limit (roomchatd derives it from the open-files
	// limit, a little above MaxConns, so that no accept fails with
	// EMFILE).
	MaxTCPConns int
	// IPHTTPConns is the most HTTP connections (not upgraded to
	// WebSocket; idle keep-alive ones included) open at once from one
	// socket peer address, IPv6 by /64, on a listener wrapped by
	// Listener; past it a new one is closed at once. A peer in TrustProxy
	// is not limited (its clients are told apart only in requests). 0
	// means no limit.
	IPHTTPConns int
	// IPConns is the most WebSocket connections open at once from one
	// client address (see TrustProxy; IPv6 counts by /64); past it an
	// upgrade gets 429 rate_limited. 0 means no limit.
	IPConns int
	// IPConnRate is how many new WebSocket connections one client
	// address may open per second, IPConnBurst (20) how many at once;
	// past it an upgrade gets 429 rate_limited. 0 turns it off.
	IPConnRate  float64
	IPConnBurst int
	// IPHTTPRate is how many HTTP requests other than /ws one client
	// address may make per second, IPHTTPBurst (100) how many at once;
	// past it 429 rate_limited. 0 turns it off.
	IPHTTPRate  float64
	IPHTTPBurst int
	// TrustProxy are the reverse proxies whose X-Forwarded-For names the
	// client address for the per-address limits. Empty trusts none: the
	// socket's peer is the client.
	TrustProxy []netip.Prefix

	// HeaderTimeout bounds reading a request's headers (10 s, or
	// RequestTimeout if shorter), the WebSocket upgrade's included: a
	// client trickling headers in is cut off.
	HeaderTimeout time.Duration
	// RequestTimeout bounds reading a whole request, body included, and
	// writing a response (30 s); a page of messages gets RequestTimeout
	// per 128 KiB for its whole response instead, so that a reader at
	// that average rate or faster gets all of it. See HTTPServer.
	RequestTimeout time.Duration
	// MaxPageResponses is the most GET /api/rooms/{id}/messages answered
	// at once (64): each holds a store read and up to a few hundred KiB
	// of encoded page while a client reads it. Past it, 503 server_busy
	// with Retry-After.
	MaxPageResponses int
	// IdleTimeout is how long a keep-alive connection may wait for its
	// next request (60 s).
	IdleTimeout time.Duration
}

// Server serves roomchat's HTTP routes and WebSocket connections.
type Server struct {
	cfg     Config
	limits  protocol.Limits
	reg     *room.Registry
	store   store.Store
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *metrics
	pings   *wheel        // pings every connection
	hosts   []hostPattern // Config.Hosts and PublicURL's host; none: any

	// The per-address and connection limits; each guards itself.
	postLimit *addrLimiter  // POSTs with a body, at Limits.Rate
	requests  *addrLimiter  // every HTTP request but /ws, at IPHTTPRate
	upgrades  *addrLimiter  // new WebSocket connections, at IPConnRate
	gate      *gate         // open WebSocket connections
	sockets   *sockets      // every connection of Listener
	pages     chan struct{} // a token per page response being answered; never closed
	// fullWarned is when logFull last warned (Unix ns).
	fullWarned atomic.Int64

	ctx      context.Context // cancelled when Shutdown ends
	cancel   context.CancelFunc
	shutting atomic.Bool
	notReady atomic.Bool // the last /readyz answer was 503; for logging changes only
	// handling is read-locked by each frame's handler while it runs past
	// the shutting check; Shutdown write-locks it once, which waits for
	// those handlers (and makes later ones see shutting).
	handling sync.RWMutex
	// reads is the parent of every store read made for a frame; Shutdown
	// cancels it first, so that frames waiting for the store end at once.
	reads       context.Context
	cancelReads context.CancelFunc

	mu   sync.Mutex // guards live and livePeak
	live map[*conn]struct{}
	// livePeak is the size live grew to: it is rebuilt smaller when it
	// empties out, since deleting from a Go map frees no buckets.
	livePeak int
	conns    sync.WaitGroup // one per connection's serve goroutine
}

// setDefaults fills the zero fields of c with their defaults (the ones
// Config's fields document) and wraps the Logger so that repeated lines
// are throttled.
func (c *Config) setDefaults() {
	if c.Limits == (protocol.Limits{}) {
		c.Limits = protocol.DefaultLimits()
	}
	c.Limits = c.Limits.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = Throttled(c.Logger)
	if c.MaxQueue <= 0 {
		c.MaxQueue = 1 << 20
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = 10 * time.Second
	}
	if c.FrameTimeout <= 0 {
		c.FrameTimeout = 10 * time.Second
	}
	if c.IPConnBurst <= 0 {
		c.IPConnBurst = 20
	}
	if c.IPHTTPBurst <= 0 {
		c.IPHTTPBurst = 100
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = min(10*time.Second, c.RequestTimeout)
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxPageResponses <= 0 {
		c.MaxPageResponses = 64
	}
}

// New returns a Server. It does no I/O and starts nothing: mount it with
// an http.Server and call Shutdown to stop it.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: Config.Store is required")
	}
	cfg.setDefaults()
	hosts, err := allowedHosts(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	reads, cancelReads := context.WithCancel(ctx)
	s := &Server{
		reads:       reads,
		cancelReads: cancelReads,
		cfg:         cfg,
		limits:      cfg.Limits,
		store:       cfg.Store,
		log:         cfg.Logger,
		ctx:         ctx,
		cancel:      cancel,
		live:        make(map[*conn]struct{}),
		hosts:       hosts,
		pages:       make(chan struct{}, cfg.MaxPageResponses),
	}
	s.reg = cfg.Registry
	if s.reg == nil {
		s.reg = room.New(cfg.Store, room.Options{Limits: cfg.Limits, Logger: cfg.Logger, Budgets: room.DefaultBudgets(cfg.Limits)})
	}
	s.postLimit = newAddrLimiter(cfg.Limits.Rate, cfg.Limits.Burst)
	s.requests = newAddrLimiter(cfg.IPHTTPRate, cfg.IPHTTPBurst)
	s.upgrades = newAddrLimiter(cfg.IPConnRate, cfg.IPConnBurst)
	s.gate = &gate{max: max(cfg.MaxConns, 0), perAddr: max(cfg.IPConns, 0)}
	s.sockets = &sockets{max: max(cfg.MaxTCPConns, 0), perAddr: max(cfg.IPHTTPConns, 0), trusted: s.trusted}
	s.pings = newWheel(cfg.PingInterval, cfg.PingTimeout, s.reg.MaxAge()/2)
	s.metrics = newMetrics(s)
	s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler. A request for a Host the server
// does not answer to (Config.Hosts) gets 421 first; then, past the
// per-address HTTP rate (Config.IPHTTPRate), a request other than /ws
// gets 429.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.hostAllowed(r.Host) && !anyHost(r.URL.Path) {
		s.refuseHost(w, r)
		return
	}
	if s.requests.on() && r.URL.Path != "/ws" {
		if ok, wait := s.requests.allow(addrKey(s.clientAddr(r)), time.Now()); !ok {
			s.refuse(w, http.StatusTooManyRequests, wait, protocol.Errorf(protocol.CodeRateLimited, "too many requests from your address; the limit is %g per second", s.cfg.IPHTTPRate))
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// Shutdown stops taking frames, waits for the ones being handled, flushes
// the store so that every message accepted so far is stored and its ack
// and deliveries are queued, then closes every WebSocket connection with
// 1001 once its queue is written, at most 128 at a time. Connections still
// open when ctx ends are dropped without a handshake. It closes the
// registry last. Stop the http.Server (which ignores hijacked
// connections) separately.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	s.cancelReads()
	handled := make(chan struct{})
	go func() {
		s.handling.Lock()
		s.handling.Unlock()
		close(handled)
	}()
	select {
	case <-handled:
	case <-ctx.Done():
	}
	if err := s.store.Flush(ctx); err != nil {
		s.log.Warn("shutdown: store flush", "err", err)
	}
	handshakes := s.closeAll(ctx)
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.dropAll()
		<-done
	}
	<-handshakes
	s.pings.close()
	s.cancel()
	s.reg.Close()
	return err
}

// liveConns returns the open connections.
func (s *Server) liveConns() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*conn, 0, len(s.live))
	for c := range s.live {
		conns = append(conns, c)
	}
	return conns
}

// closeAll closes every open connection with 1001 once its queue is
// written (closeDrained), at most 128 at a time, and closes the channel it
// returns when it is done. The close handshakes run beside Shutdown's
// wait, so that ctx's end cuts them short: Conn.Close waits up to 5 s for
// a peer that never answers, and 128 such peers at a time would hold
// Shutdown past ctx.
func (s *Server) closeAll(ctx context.Context) <-chan struct{} {
	conns := s.liveConns()
	handshakes := make(chan struct{})
	go func() {
		defer close(handshakes)
		var g errgroup.Group
		g.SetLimit(128)
		for _, c := range conns {
			if ctx.Err() != nil {
				break
			}
			g.Go(func() error {
				c.closeDrained(ctx)
				return nil
			})
		}
		g.Wait()
	}()
	return handshakes
}

// dropAll drops every connection still open, without a handshake.
func (s *Server) dropAll() {
	for _, c := range s.liveConns() {
		// Closing the socket first also ends a close handshake in
		// progress, which CloseNow would wait for (up to 5 s).
		c.wire.CloseSocket()
		c.ws.CloseNow()
	}
}
