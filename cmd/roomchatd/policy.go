package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/roomchat/roomchat/internal/identity"
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

// printPolicy is -check-config: the effective policy, on out. The [auth]
// keys are checked too (the environment variables and files they name).
func (c config) printPolicy(out io.Writer) error {
	pc, err := c.loadPolicy()
	if err != nil {
		return err
	}
	v, err := identity.New(context.Background(), pc.Auth, os.Getenv)
	if err != nil {
		return fmt.Errorf("%s: %w", c.configFile, err)
	}
	v.Close()
	_, err = pc.WriteTo(out)
	return err
}

// access is the policy and the token verifier in force. A reload replaces
// both or neither.
type access struct {
	file     string
	policies *policy.Source
	verifier atomic.Pointer[identity.Verifier]
}

// openAccess loads -config and builds its verifier. ctx bounds the
// verifier's JWKS refresh; Close ends it too.
func (c config) openAccess(ctx context.Context, log *slog.Logger) (*access, error) {
	pc, err := c.loadPolicy()
	if err != nil {
		return nil, err
	}
	v, err := identity.New(ctx, pc.Auth, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.configFile, err)
	}
	a := &access{file: c.configFile, policies: policy.NewSource(pc)}
	a.verifier.Store(v)
	return a, nil
}

// logPolicy logs the hash of the effective policy, which every node of a
// cluster should share (SPEC §9). run logs it once the store is open: a
// start-up that fails prints one line only.
func (a *access) logPolicy(log *slog.Logger) {
	pc := a.policies.Config()
	log.Info("policy", "file", a.file, "hash", pc.Hash(), "namespaces", len(pc.Namespaces), "auth", pc.Auth.Mode)
}

// Verifier is the verifier in force (server.Config.Verifier).
func (a *access) Verifier() *identity.Verifier { return a.verifier.Load() }

// Close stops the verifier's JWKS refresh.
func (a *access) Close() error { return a.verifier.Load().Close() }

// reload reads the file again: a good one (policy and keys) is put in
// force, a bad one is refused with a log line and the old one stays.
func (a *access) reload(ctx context.Context, c config, log *slog.Logger) {
	if a.file == "" {
		log.Warn("SIGHUP: no -config file to reload")
		return
	}
	pc, err := c.loadPolicy()
	var v *identity.Verifier
	if err == nil {
		if v, err = identity.New(ctx, pc.Auth, os.Getenv); err != nil {
			err = fmt.Errorf("%s: %w", a.file, err)
		}
	}
	if err != nil {
		log.Error("config reload refused; the policy in force stays", "err", err, "hash", a.policies.Config().Hash())
		return
	}
	a.policies.Swap(pc)
	a.verifier.Swap(v).Close()
	log.Info("config reloaded", "file", a.file, "hash", pc.Hash(), "namespaces", len(pc.Namespaces), "auth", pc.Auth.Mode)
}

// reloadOnHangup reloads on every SIGHUP until ctx ends. Its goroutine is
// run's; the returned wait returns once it has ended.
func (a *access) reloadOnHangup(ctx context.Context, c config, log *slog.Logger) (wait func()) {
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
				a.reload(ctx, c, log)
			}
		}
	}()
	return func() { <-done }
}
