package chattest

import (
	"strings"
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

// OwnedRoom creates a room on the server at base over a new connection
// and joins it there with the owner key that create returned (SPEC §11),
// named "owner": it returns the room, the key and the owner's client.
func OwnedRoom(t testing.TB, base string) (roomID, key string, owner *Client) {
	t.Helper()
	owner = Dial(t, base, "")
	owner.Send(t, `{"type":"create","id":"c"}`)
	var cr protocol.Created
	Decode(t, owner.Expect(t, protocol.TypeCreated), &cr)
	if !strings.HasPrefix(cr.OwnerKey, "k1.") {
		t.Fatalf("created carries ownerKey %q", cr.OwnerKey)
	}
	owner.Sendf(t, `{"type":"join","payload":{"roomID":%q,"name":"owner","key":%q}}`, cr.RoomID, cr.OwnerKey)
	owner.Expect(t, protocol.TypeJoined)
	return cr.RoomID, cr.OwnerKey, owner
}
