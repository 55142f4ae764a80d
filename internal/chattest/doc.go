// Package chattest holds what roomchat's tests share for speaking to a real
// server:
//
//   - Client, a raw WebSocket client: it sends any bytes (malformed frames
//     included, for the bad-input tests) and reads the server's events in a
//     goroutine of its own, so that waiting with a timeout never touches the
//     connection. Its helpers (Expect, Await, ExpectError, ExpectClose, Join,
//     JoinAll, AckOf, SendAck…) take the test's testing.TB and fail it with
//     what they waited for and what came instead.
//   - Server, the built roomchatd run as a subprocess on a loopback port:
//     Bin builds it once per test binary, Start runs it and learns its
//     address from its log (ListenAddr is the only parser of that line),
//     Stop, Kill and Restart end it or start it again on the same port.
//
// Only tests import it (a test in this package checks that); SPEC §4 is
// the protocol it speaks. Tests of in-process servers (httptest) use the
// Client with the server's URL.
package chattest
