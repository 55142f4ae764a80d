package chattest

import (
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/identity"
	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
)

// WithConfig is a server mod (ServerConfig, NewInProcess, StartInProcess)
// that puts a configuration file (SPEC §9–§10) under the server as
// roomchatd -config does: a registry deciding by its policy over the
// built-in layer, and its token verifier, which reads the environment
// variables the file names from env and is closed when t ends. A grace
// above 0 is the server's AuthGrace. It builds the registry on the
// store the Config has when it runs: put it after mods that set Store.
func WithConfig(t testing.TB, toml string, env map[string]string, grace time.Duration) func(*server.Config) {
	t.Helper()
	pc, err := policy.Parse("roomchat.toml", []byte(toml), policy.Builtin(protocol.DefaultLimits(), store.DefaultMaxMessages, 0))
	if err != nil {
		t.Fatal(err)
	}
	v, err := identity.New(t.Context(), pc.Auth, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	src := policy.NewSource(pc)
	return func(c *server.Config) {
		c.Verifier = func() *identity.Verifier { return v }
		if grace > 0 {
			c.AuthGrace = grace
		}
		limits := c.Limits
		if limits == (protocol.Limits{}) {
			limits = protocol.DefaultLimits()
		}
		opts := room.Options{Limits: limits, Policy: src, Budgets: room.DefaultBudgets(limits)}
		if c.Logger != nil {
			opts.Logger = server.Throttled(c.Logger)
		}
		c.Registry = room.New(c.Store, opts)
	}
}
