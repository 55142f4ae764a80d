// Package client is roomchat's Go client (SPEC §4 from the client's side,
// §7 through cmd/roomchat): it dials /ws, reads the welcome, sends frames
// and waits for their replies by id, and reads the server's events one at a
// time with their exact raw bytes. Session adds what a long-lived reader
// needs: reconnection with backoff and jitter, resume tokens, re-joining
// with since, paging through a backlog with history requests when a joined
// says more, and de-duplication by seq, so that its reader gets every
// message once, in order.
//
// The CLI, the benchmark and the tests use it. It speaks only through
// internal/protocol, so every frame has one definition.
package client
