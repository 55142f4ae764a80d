package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/roomchat/roomchat/internal/policy"
)

// builtinPolicy is the layer under the file (SPEC §9): what the flags say
// every room gets.
func (c config) builtinPolicy() policy.Policy {
	return policy.Builtin(c.limits, c.retention, c.retentionAge)
}

// loadPolicy reads -config over the flags' layer; without -config every
// room gets that layer and no namespace exists.
func (c config) loadPolicy() (*policy.Config, error) {
	if c.configFile == "" {
		return policy.BuiltinConfig(c.builtinPolicy()), nil
	}
	return policy.Load(c.configFile, c.builtinPolicy())
}

// printPolicy is -check-config: the effective policy, on out.
func (c config) printPolicy(out io.Writer) error {
	pc, err := c.loadPolicy()
	if err != nil {
		return err
	}
	_, err = pc.WriteTo(out)
	return err
}

// policySource loads -config for run and logs the hash of the effective
// policy, which every node of a cluster should share (SPEC §9).
func (c config) policySource(log *slog.Logger) (*policy.Source, error) {
	pc, err := c.loadPolicy()
	if err != nil {
		return nil, err
	}
	log.Info("policy", "file", c.configFile, "hash", pc.Hash(), "namespaces", len(pc.Namespaces), "auth", pc.Auth.Mode)
	return policy.NewSource(pc), nil
}

// reloadOnHangup reloads -config on every SIGHUP until ctx ends: a good
// file is put in force (the next action of every connection follows it),
// a bad one is refused with a log line and the old policy stays. It is
// run's goroutine and ends when ctx does; the returned wait returns once
// it has.
func reloadOnHangup(ctx context.Context, c config, src *policy.Source, log *slog.Logger) (wait func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			if c.configFile == "" {
				log.Warn("SIGHUP: no -config file to reload")
				continue
			}
			pc, err := c.loadPolicy()
			if err != nil {
				log.Error("config reload refused; the policy in force stays", "err", err, "hash", src.Config().Hash())
				continue
			}
			src.Swap(pc)
			log.Info("config reloaded", "file", c.configFile, "hash", pc.Hash(), "namespaces", len(pc.Namespaces))
		}
	}()
	return func() { <-done }
}
