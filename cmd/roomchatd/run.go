package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"github.com/roomchat/roomchat/internal/server"
)

// run starts roomchatd and serves until ctx ends, then shuts down: stop
// accepting, close every connection with 1001, flush the store, stop the
// backend. It returns nil after a clean shutdown.
func run(ctx context.Context, args []string, stderr io.Writer) (err error) {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	if cfg.checkConfig {
		return cfg.printPolicy(os.Stdout)
	}
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return usageError(stderr, "%v", err)
	}
	acc, err := cfg.openAccess(ctx, log)
	if err != nil {
		return err
	}
	defer acc.Close()
	log = server.Throttled(log) // once, for the registry and the server: their lines can come per message
	be, err := openBackend(ctx, cfg, acc.policies, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := be.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
		if err == nil {
			log.Info("stopped")
		}
	}()
	srv, err := server.New(cfg.serverConfig(be, acc, log))
	if err != nil {
		return err
	}
	be.waitReady(ctx, log)
	ln, err := listen(cfg.addr, srv, be.where, log)
	if err != nil {
		return err
	}
	stopAsides, err := serveAsides(cfg, srv, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer stopAsides()
	defer acc.reloadOnHangup(ctx, cfg, log)()
	hs := srv.HTTPServer()
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	select {
	case err = <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdown(hs, srv, cfg.shutdownTimeout, log)
	<-serveErr // http.ErrServerClosed
	return nil
}

// listen opens -addr for srv, every connection counted against its
// limit of TCP connections (server.Listener).
func listen(addr string, srv *server.Server, where string, log *slog.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	log.Info("listening", "addr", ln.Addr().String(), "store", where)
	return srv.Listener(ln), nil
}

// serverConfig is the server's Config: the flags, and the backend's
// registry, store and metrics.
func (c config) serverConfig(be *backend, acc *access, log *slog.Logger) server.Config {
	acc.logPolicy(log)
	maxConns, maxTCP := connLimit(c, log)
	return server.Config{
		Verifier:   acc.Verifier,
		Store:      be.store,
		Registry:   be.reg,
		Collectors: be.collectors(),
		// -metrics-addr: /metrics on its own listener only.
		SeparateMetrics: c.metricsAddr != "",
		Limits:          c.limits,
		Origins:         c.originList(),
		PublicURL:       c.publicURL,
		Hosts:           c.hostList,
		Web:             webFS(),
		Logger:          log,
		MaxQueue:        c.maxQueue,
		WriteTimeout:    c.writeTimeout,
		PingInterval:    c.pingInterval,
		PingTimeout:     c.pingTimeout,

		MaxConns:       maxConns,
		MaxTCPConns:    maxTCP,
		IPHTTPConns:    c.ipHTTPConns,
		IPConns:        c.ipConns,
		IPConnRate:     c.ipConnRate,
		IPConnBurst:    c.ipConnBurst,
		IPHTTPRate:     c.ipHTTPRate,
		IPHTTPBurst:    c.ipHTTPBurst,
		TrustProxy:     c.trustedProxies,
		RequestTimeout: c.httpTimeout,
		IdleTimeout:    c.httpIdle,
	}
}

// shutdown stops hs and srv together within timeout: hs takes no more
// requests, and srv closes every WebSocket connection with 1001 (hs
// ignores them: they are hijacked), flushes the store and closes the
// registry.
func shutdown(hs *http.Server, srv *server.Server, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := hs.Shutdown(ctx); err != nil {
			log.Warn("http shutdown", "err", err)
		}
	})
	wg.Go(func() {
		if err := srv.Shutdown(ctx); err != nil {
			log.Warn("websocket shutdown", "err", err)
		}
	})
	wg.Wait()
}

// serveAsides serves, each on a listener of its own apart from the public
// routes, /metrics at -metrics-addr and net/http/pprof at -debug-addr,
// those set, until stop is called.
func serveAsides(cfg config, srv *server.Server, log *slog.Logger) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	if cfg.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", srv.MetricsHandler())
		s, err := serveAside("metrics", cfg.metricsAddr, mux, log)
		if err != nil {
			return nil, err
		}
		stops = append(stops, s)
	}
	if cfg.debugAddr != "" {
		s, err := serveDebug(cfg.debugAddr, log)
		if err != nil {
			stop()
			return nil, err
		}
		stops = append(stops, s)
	}
	return stop, nil
}

// connLimit returns -max-conns, or when it is 0 the default derived from
// the open-files limit, and the limit on all connections of the listener,
// derived from the open-files limit (0: none, where there is no limit to
// read); it logs the choice.
func connLimit(cfg config, log *slog.Logger) (maxConns, maxTCP int) {
	nofile, ok := openFilesLimit()
	if ok {
		maxTCP = tcpConnsFor(nofile)
	}
	switch {
	case cfg.maxConns > 0:
		if ok && cfg.maxConns > maxConnsFor(nofile) {
			log.Warn("-max-conns leaves little room under the open-files limit: past it, new connections are closed at accept instead of a clean 503", "max_conns", cfg.maxConns, "max_tcp_conns", maxTCP, "open_files_limit", nofile, "suggested", maxConnsFor(nofile))
		} else {
			log.Info("connection limit", "max_conns", cfg.maxConns, "max_tcp_conns", maxTCP, "open_files_limit", nofile, "from", "-max-conns")
		}
		return cfg.maxConns, maxTCP
	case !ok:
		log.Info("connection limit", "max_conns", "none", "from", "no open-files limit to read")
		return 0, 0
	}
	maxConns = maxConnsFor(nofile)
	log.Info("connection limit", "max_conns", maxConns, "max_tcp_conns", maxTCP, "open_files_limit", nofile, "from", "open-files limit - 256 (WebSockets), - 128 (all connections)")
	return maxConns, maxTCP
}

// serveDebug serves net/http/pprof on its own listener, apart from the
// public routes.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return serveAside("debug", addr, mux, log)
}

// serveAside serves h on a listener of its own at addr (-what-addr), apart
// from the public routes, until stop is called; it logs "what
// listening".
func serveAside(what, addr string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on -%s-addr %s: %w", what, addr, err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	log.Info(what+" listening", "addr", ln.Addr().String())
	return func() {
		hs.Close()
		<-done
	}, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
