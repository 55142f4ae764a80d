// Package room is roomchat's registry (SPEC §4): rooms and their members,
// users and their resume tokens, presence with its grace period, capacity,
// typing, and the order of each room's messages.
//
// A chat message goes: Registry.Send checks membership and hands the
// message to the store, which assigns its seq; once stored, the store calls
// back in seq order and the room encodes the msg event once and queues the
// same bytes to every member's Conn without blocking.
//
// # Locks
//
// Four kinds of lock of this package and the server meet here. When more than one is held, they are taken
// in this order, and never the other way:
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
// The registry starts none of its own. Its methods run on the caller's
// goroutine (a connection's frame handler, an HTTP handler); the store's
// committer runs Send's and Post's callbacks; timers run presence flushes
// (Room.flush), grace periods (User.graceOver) and resume windows
// (User.expire). Close stops every timer; a timer that fires after its
// state moved on finds a generation or connection changed and does
// nothing.
package room
