package main

import (
	"context"
	"errors"
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
	if cfg.redis != "" {
		return errors.New("cluster mode (-redis) is not available in this version")
	}

	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	maxConns := connLimit(cfg, log)
	srv, err := server.New(server.Config{
		Store:        st,
		Limits:       cfg.limits,
		Origins:      cfg.originList(),
		PublicURL:    cfg.publicURL,
		Web:          webFS(),
		Logger:       log,
		MaxQueue:     cfg.maxQueue,
		WriteTimeout: cfg.writeTimeout,
		PingInterval: cfg.ping,
		PingTimeout:  cfg.pingTimeout,
		Grace:        cfg.grace,
		ResumeWindow: cfg.resumeWindow,

		MaxConns:       maxConns,
		IPConns:        cfg.ipConns,
		IPConnRate:     cfg.ipConnRate,
		IPConnBurst:    cfg.ipConnBurst,
		IPHTTPRate:     cfg.ipHTTPRate,
		IPHTTPBurst:    cfg.ipHTTPBurst,
		TrustProxy:     cfg.trustedProxies,
		RequestTimeout: cfg.httpTimeout,
		IdleTimeout:    cfg.httpIdle,
	})
	if err != nil {
		st.Close()
		return err
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		st.Close()
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	hs := srv.HTTPServer()
	log.Info("listening", "addr", ln.Addr().String(), "db", cfg.db)
	if cfg.debugAddr != "" {
		stopDebug, err := serveDebug(cfg.debugAddr, log)
		if err != nil {
			hs.Close()
			st.Close()
			return err
		}
		defer stopDebug()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	select {
	case err = <-serveErr:
		st.Close()
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
	if err := st.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	log.Info("stopped")
	return nil
}

// connLimit returns -max-conns, or when it is 0 the default derived from
// the open-files limit, and logs the choice.
func connLimit(cfg config, log *slog.Logger) int {
	nofile, ok := openFilesLimit()
	switch {
	case cfg.maxConns > 0:
		if ok && cfg.maxConns > maxConnsFor(nofile) {
			log.Warn("-max-conns leaves little room under the open-files limit: past it, accept fails instead of a clean 503", "max_conns", cfg.maxConns, "open_files_limit", nofile, "suggested", maxConnsFor(nofile))
		} else {
			log.Info("connection limit", "max_conns", cfg.maxConns, "open_files_limit", nofile, "from", "-max-conns")
		}
		return cfg.maxConns
	case !ok:
		log.Info("connection limit", "max_conns", "none", "from", "no open-files limit to read")
		return 0
	}
	n := maxConnsFor(nofile)
	log.Info("connection limit", "max_conns", n, "open_files_limit", nofile, "from", "open-files limit - max(256, limit/10)")
	return n
}

// serveDebug serves net/http/pprof on its own listener, apart from the
// public routes.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on -debug-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	log.Info("debug listening", "addr", ln.Addr().String())
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

// openStore opens the history store that -db names, creating the file's
// directory if needed.
func openStore(ctx context.Context, cfg config) (store.Store, error) {
	ret := store.Retention{MaxMessages: cfg.retention, MaxAge: cfg.retentionAge}
	if cfg.db == ":memory:" {
		return store.NewMemory(ret), nil
	}
	if dir := filepath.Dir(cfg.db); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create directory for -db: %w", err)
		}
	}
	return sqlite.Open(ctx, cfg.db, sqlite.Options{Retention: ret, Synchronous: strings.ToUpper(cfg.sync)})
}
