package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/sqlite"
)

// backend is where a node keeps its state: the history store, in a
// cluster (-redis) the broker, directory and roster on Redis, and the
// registry built on them. Close stops them in order.
type backend struct {
	store store.Store
	where string // the store, for the log, without credentials
	reg   *room.Registry
	// In a cluster only; nil on one node.
	broker *cluster.Broker
	dir    *cluster.Directory
	roster *cluster.Roster
	// closeTimeout bounds how long Close waits for Redis to take what it
	// has not yet (-shutdown-timeout).
	closeTimeout time.Duration
}

// openBackend opens the store and, in a cluster, the broker, directory
// and roster on it; builds the registry on them and hands it to the
// broker and the roster, which start. log must be server.Throttled: the
// registry's failed store appends come once per message.
func openBackend(ctx context.Context, cfg config, policies *policy.Source, log *slog.Logger) (*backend, error) {
	st, where, err := openStore(ctx, cfg, policies, log)
	if err != nil {
		return nil, err
	}
	b := &backend{store: st, where: where, closeTimeout: cfg.shutdownTimeout}
	opts := room.Options{
		Limits:       cfg.limits,
		Grace:        cfg.grace,
		ResumeWindow: cfg.resumeWindow,
		ResumeMaxAge: cfg.resumeMaxAge,
		Logger:       log,
		Budgets:      cfg.budgets(),
		Policy:       policies,
	}
	if cst, ok := st.(*cluster.Store); ok {
		b.broker = cluster.NewBroker(cst, cluster.BrokerOptions{Logger: log})
		b.dir = cluster.NewDirectory(cst, cfg.resumeWindow)
		b.roster = cluster.NewRoster(cst)
		opts.Broker, opts.Directory, opts.Roster = b.broker, b.dir, b.roster
	}
	b.reg = room.New(st, opts)
	if b.broker != nil {
		b.broker.Start(b.reg.Handler())
		b.roster.Start(b.reg.AnnounceLeave)
	}
	return b, nil
}

// waitReady waits, in a cluster, until the broker is subscribed, or 10 s
// at most: /readyz says when the node can take traffic.
func (b *backend) waitReady(ctx context.Context, log *slog.Logger) {
	if b.broker == nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.broker.WaitReady(wctx); err != nil {
		log.Warn("redis pub/sub not ready yet; serving, /readyz answers 503 until it is", "err", err)
	}
}

// Close stops the backend in order: the registry (the server's Shutdown
// has closed it already; its roster removals end first), the roster,
// which takes this node's members out of every list and announces their
// leaves through the broker, then the directory and the broker, then the
// store, which in a cluster gives up on what Redis has not taken after
// closeTimeout. It returns the store's error.
func (b *backend) Close() error {
	b.reg.Close()
	if b.broker != nil {
		b.roster.Close()
		b.dir.Close()
		b.broker.Close()
	}
	if cst, ok := b.store.(*cluster.Store); ok {
		ctx, cancel := context.WithTimeout(context.Background(), b.closeTimeout)
		defer cancel()
		return cst.CloseContext(ctx)
	}
	return b.store.Close()
}

// collectors are the cluster broker's counters for /metrics; none on one
// node.
func (b *backend) collectors() []prometheus.Collector {
	if b.broker == nil {
		return nil
	}
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomchat_cluster_pubsub_reconnects_total", Help: "Redis pub/sub connections made again after a loss (cluster mode).",
		}, func() float64 { return float64(b.broker.Stats().Reconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomchat_cluster_gap_fills_total", Help: "Messages delivered from a room's stream because pub/sub lost them (cluster mode).",
		}, func() float64 { return float64(b.broker.Stats().Fills) }),
	}
}

// openStore opens the history store: Redis with -redis (cluster mode),
// else the SQLite file -db names, creating its directory (0700: it holds
// history and the token key) if needed. where describes it for the log,
// without credentials.
func openStore(ctx context.Context, cfg config, policies *policy.Source, log *slog.Logger) (st store.Store, where string, err error) {
	ret := store.Retention{MaxMessages: cfg.retention, MaxAge: cfg.retentionAge}
	if cfg.configFile != "" {
		// Without a file every room has the flags' retention: the stores
		// keep their one rule (and SQLite its cheaper trimming).
		ret.Room = policies.RoomRetention
	}
	switch {
	case cfg.redis != "":
		cst, err := cluster.Open(ctx, cluster.Options{URL: cfg.redis, Wait: cfg.redisWait, Retention: ret, Logger: log})
		if err != nil {
			return nil, "", err
		}
		return cst, "redis " + cluster.RedactURL(cfg.redis), nil
	case cfg.db == ":memory:":
		return store.NewMemory(ret), "memory", nil
	}
	if dir := filepath.Dir(cfg.db); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, "", fmt.Errorf("create directory for -db: %w", err)
		}
	}
	sst, err := sqlite.Open(ctx, cfg.db, sqlite.Options{Retention: ret, Synchronous: strings.ToUpper(cfg.synchronous), Logger: log})
	if err != nil {
		return nil, "", err
	}
	return sst, "sqlite " + cfg.db, nil
}
