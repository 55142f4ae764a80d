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
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/sqlite"
)

// run starts roomchatd and serves until ctx ends, then shuts down: stop
// accepting, close every connection with 1001, flush the store. It returns
// nil after a clean shutdown.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return usageError(stderr, "%v", err)
	}
	st, newBroker, where, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	var (
		clusterBroker *cluster.Broker
		dir           *cluster.Directory
		roster        *cluster.Roster
		newRoster     func(func(string, protocol.User, int)) room.Roster
		collectors    []prometheus.Collector
	)
	if cst, ok := st.(*cluster.Store); ok {
		newBroker = func(h broker.Handler) broker.Broker {
			clusterBroker = cluster.NewBroker(cst, h, cluster.BrokerOptions{Logger: log})
			return clusterBroker
		}
		newRoster = func(left func(string, protocol.User, int)) room.Roster {
			roster = cluster.NewRoster(cst, left)
			return roster
		}
		dir = cluster.NewDirectory(cst, cfg.resumeWindow)
		collectors = clusterMetrics(func() *cluster.Broker { return clusterBroker })
	}
	// closeStore stops the cluster's parts in order: the roster takes this
	// node's members out of every list (announcing their leaves through
	// the broker), then the directory and the broker stop, then the store,
	// which in a cluster gives up on what Redis has not taken once ctx
	// ends.
	closeStore := func(ctx context.Context) error {
		if roster != nil {
			roster.Close()
		}
		if clusterBroker != nil {
			dir.Close()
			clusterBroker.Close()
		}
		if cst, ok := st.(*cluster.Store); ok {
			return cst.CloseContext(ctx)
		}
		return st.Close()
	}
	maxConns, maxTCP := connLimit(cfg, log)
	srv, err := server.New(server.Config{
		Broker:     newBroker,
		Directory:  directory(dir),
		Roster:     newRoster,
		Collectors: collectors,
		// -metrics-addr: /metrics on its own listener only.
		SeparateMetrics: cfg.metricsAddr != "",
		Store:           st,
		Limits:          cfg.limits,
		Origins:         cfg.originList(),
		PublicURL:       cfg.publicURL,
		Hosts:           cfg.hostList,
		Web:             webFS(),
		Logger:          log,
		MaxQueue:        cfg.maxQueue,
		WriteTimeout:    cfg.writeTimeout,
		PingInterval:    cfg.ping,
		PingTimeout:     cfg.pingTimeout,
		Grace:           cfg.grace,
		ResumeWindow:    cfg.resumeWindow,
		ResumeMaxAge:    cfg.resumeMaxAge,

		MaxConns:       maxConns,
		MaxTCPConns:    maxTCP,
		IPHTTPConns:    cfg.ipHTTPConns,
		IPConns:        cfg.ipConns,
		IPConnRate:     cfg.ipConnRate,
		IPConnBurst:    cfg.ipConnBurst,
		IPHTTPRate:     cfg.ipHTTPRate,
		IPHTTPBurst:    cfg.ipHTTPBurst,
		TrustProxy:     cfg.trustedProxies,
		RequestTimeout: cfg.httpTimeout,
		IdleTimeout:    cfg.httpIdle,
		RoomRate:       budget(cfg.roomRate),
		RoomEvents:     budget(cfg.roomEvents),
		RoomBytes:      budget(cfg.roomBytes),
		RoomJoins:      budget(cfg.roomJoins),
	})
	if err != nil {
		closeStore(context.Background())
		return err
	}
	if clusterBroker != nil {
		// Serve once subscribed, or after a while anyway: /readyz says
		// when the node can take traffic.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := clusterBroker.WaitReady(wctx); err != nil {
			log.Warn("redis pub/sub not ready yet; serving, /readyz answers 503 until it is", "err", err)
		}
		cancel()
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		closeStore(context.Background())
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	hs := srv.HTTPServer()
	log.Info("listening", "addr", ln.Addr().String(), "store", where)
	ln = srv.Listener(ln) // every connection counted, against maxTCP
	if cfg.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", srv.MetricsHandler())
		stopMetrics, err := serveAside("metrics", cfg.metricsAddr, mux, log)
		if err != nil {
			ln.Close()
			closeStore(context.Background())
			return err
		}
		defer stopMetrics()
	}
	if cfg.debugAddr != "" {
		stopDebug, err := serveDebug(cfg.debugAddr, log)
		if err != nil {
			ln.Close()
			closeStore(context.Background())
			return err
		}
		defer stopDebug()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	select {
	case err = <-serveErr:
		closeStore(context.Background())
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdown)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := hs.Shutdown(sctx); err != nil {
			log.Warn("http shutdown", "err", err)
		}
	})
	wg.Go(func() {
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("websocket shutdown", "err", err)
		}
	})
	wg.Wait()
	<-serveErr // http.ErrServerClosed
	if err := closeStore(sctx); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	log.Info("stopped")
	return nil
}

// clusterMetrics are the cluster broker's counters for /metrics. b
// returns the broker, which server.New creates.
func clusterMetrics(b func() *cluster.Broker) []prometheus.Collector {
	stats := func() cluster.BrokerStats {
		if br := b(); br != nil {
			return br.Stats()
		}
		return cluster.BrokerStats{}
	}
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomchat_cluster_pubsub_reconnects_total", Help: "Redis pub/sub connections made again after a loss (cluster mode).",
		}, func() float64 { return float64(stats().Reconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomchat_cluster_gap_fills_total", Help: "Messages delivered from a room's stream because pub/sub lost them (cluster mode).",
		}, func() float64 { return float64(stats().Fills) }),
	}
}

// directory returns dir as a room.Directory: nil (none) when dir is nil.
func directory(dir *cluster.Directory) room.Directory {
	if dir == nil {
		return nil
	}
	return dir
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

// openStore opens the history store: Redis with -redis (cluster mode),
// else the SQLite file -db names, creating its directory (0700: it holds
// history and the token key) if needed. where
// describes it for the log, without credentials. newBroker is nil: the
// registry's single-node broker on the store, unless run sets the
// cluster's.
func openStore(ctx context.Context, cfg config, log *slog.Logger) (st store.Store, newBroker func(broker.Handler) broker.Broker, where string, err error) {
	ret := store.Retention{MaxMessages: cfg.retention, MaxAge: cfg.retentionAge}
	switch {
	case cfg.redis != "":
		cst, err := cluster.Open(ctx, cluster.Options{URL: cfg.redis, Wait: cfg.redisWait, Retention: ret, Logger: log})
		if err != nil {
			return nil, nil, "", err
		}
		return cst, nil, "redis " + cluster.RedactURL(cfg.redis), nil
	case cfg.db == ":memory:":
		return store.NewMemory(ret), nil, "memory", nil
	}
	if dir := filepath.Dir(cfg.db); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, "", fmt.Errorf("create directory for -db: %w", err)
		}
	}
	sst, err := sqlite.Open(ctx, cfg.db, sqlite.Options{Retention: ret, Synchronous: strings.ToUpper(cfg.sync), Logger: log})
	if err != nil {
		return nil, nil, "", err
	}
	return sst, nil, "sqlite " + cfg.db, nil
}
