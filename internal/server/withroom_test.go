package server_test

import (
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
)

// withRoom gives c a registry built with opts, on c's store, limits and
// logger as they are when it runs (so it comes after what sets them),
// with the budgets a server gives its own registry.
func withRoom(c *server.Config, opts room.Options) {
	opts.Limits = c.Limits
	if opts.Limits == (protocol.Limits{}) {
		opts.Limits = protocol.DefaultLimits()
	}
	opts.Budgets = room.DefaultBudgets(opts.Limits)
	if c.Logger != nil {
		opts.Logger = server.Throttled(c.Logger)
	}
	c.Registry = room.New(c.Store, opts)
}
