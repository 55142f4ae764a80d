// Package room is roomchat's registry (SPEC §4): rooms and their members,
// users and their resume tokens, presence with its grace period, capacity,
// typing, and the order of each room's messages.
//
// A chat message goes: Registry.Send checks membership and hands the
// message to the store, which assigns its seq; once stored, the store calls
// back in seq order and the room encodes the msg event once and queues the
// same bytes to every member's Conn without blocking. No socket, no store
// call and no blocking send ever happens under a room's lock.
package room
