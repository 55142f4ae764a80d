// Package protocol is roomchat's wire vocabulary (SPEC §4): the envelope,
// every client→server and server→client payload, the error and close codes,
// the limits and their validation, and the strict JSON decoding and encoding
// of frames. The server, the Go client, the CLI, the benchmark and the tests
// all speak through it, so each message type is defined exactly once.
//
// It imports nothing else from roomchat.
package protocol
