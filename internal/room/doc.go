// Package room is roomchat's registry (SPEC §4): rooms and their members,
// users and their resume tokens, presence with its grace period, capacity,
// typing, and the order of each room's messages.
//
// A chat message goes: Registry.Send checks membership and the room's
// budget and hands the message to the broker (Publish), whose store
// assigns its seq; the broker then delivers it, in seq order per room,
// to the registry (Handler.Deliver), which encodes the msg event once and
// queues the same bytes to every live member's Conn without blocking. A
// node's own members get their messages through the broker like every
// other node's. The sender's ack goes out from Publish's callback, which
// is not ordered with the delivery. Typing and custom events take no
// place in that order: they are queued to this node's members at once
// and relayed to the other nodes (Broker.Relay).
//
// # Locks
//
// Four kinds of lock of this package and the server meet here. When more
// than one is held, they are taken in this order, and never the other way:
//
//  1. a Room's mu: the room's members and presence;
//  2. Registry.mu: the rooms and users maps (dropIfEmpty takes it under a
//     room's mu);
//  3. a User's mu: taken under Registry.mu by Connect; never held together
//     with a Room's mu;
//  4. a connection's own lock (conn.mu in internal/server): a leaf, taken
//     inside Conn.Queue under any of the above. Code holding it never
//     calls into the registry (the server calls Connect, Join and
//     Disconnect without it).
//
// Two more are leaves, taken under a Room's mu and holding nothing else:
// Registry.life (spawn) and the broker's own lock (Subscribe, Unsubscribe
// and Relay do no I/O under it).
//
// The store's locks come before all of these: the in-memory store calls
// Append's callback (which delivers, taking a Room's mu) while it holds its
// own lock, which is how it keeps deliveries in seq order. So no registry
// lock is ever held across a store call.
//
// No lock is held across a store read, a socket write, encoding a reply
// that can be large (joined), or logging: code takes a lock, copies what it
// needs, and lets go before doing any of those.
//
// # Goroutines
//
// Most of the registry's work runs on its callers' goroutines: a
// connection's frame handler or an HTTP handler (Connect, Join, Send…),
// the broker's delivery goroutine (Handler: Deliver, Reset, Relayed) and
// the store's committer (Publish's callbacks). Timers run presence flushes
// (Room.flush), grace periods (User.graceOver) and resume windows
// (User.expire); a timer that fires after its state moved on finds a
// generation or connection changed and does nothing.
//
// The registry starts goroutines of its own in two places, both through
// spawn, and Close waits for them: rejoin, which reads a room's history
// again after the broker reset it, and, in a cluster, the roster removal
// of a member that left (Roster.Remove is I/O, and removeMember runs
// under the room's lock).
//
// Close is final. It marks the registry closed first: from then on spawn
// starts nothing and no timer is armed. It then stops the timers that
// run, and returns once the goroutines of its own have ended.
package room
