// Package chattest holds what roomchat's tests share for speaking to a real
// server (SPEC §4):
//
//   - Client, a raw WebSocket client: it sends any bytes (malformed frames
//     included, for the bad-input tests) and reads the server's events in a
//     goroutine of its own that ends with the connection, so that waiting
//     with a timeout never touches the connection. Its helpers (Expect,
//     Await, ExpectError, ExpectClose, Join, JoinAll, AckOf, SendAck…) take
//     the running test's testing.TB and fail it with what they waited for
//     and what came instead. Fill stores a backlog through one.
//   - Raw, a client below any WebSocket library: it upgrades by hand on
//     a TCP connection and writes exactly the bytes the test gives it (a
//     frame in pieces, a frame that never ends, floods of pings or pongs;
//     ClientFrame and FrameHeader build them), and reads server frames
//     without answering any.
//   - Server, the built roomchatd run as a subprocess on a loopback port:
//     Bin builds it once per test binary (Main removes the build), Start
//     runs it and learns its address from its log (ListenAddr is the only
//     reader of that line), StartNoFile with a lowered open-files limit,
//     Stop, Kill and Restart end it or start it again on the same port.
//     Command is roomchatd for a test that runs it to its end.
//
// Tests of an in-process server (httptest) use the Client with the
// server's URL. Only tests import this package; TestOnlyTestsImport checks
// that.
package chattest
