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
//
//   - Raw, a client below any WebSocket library: it upgrades by hand on
//     a TCP connection and writes exactly the bytes the test gives it (a
//     frame in pieces, a frame that never ends, floods of pings or pongs;
//     ClientFrame and FrameHeader build them), and reads server frames
//     without answering any.
//
//   - Server, the built roomchatd run as a subprocess on a loopback port:
//     Bin builds it once per test binary (Main removes the build), Start
//     runs it and learns its address from its log (ListenAddr is the only
//     reader of that line), StartNoFile with a lowered open-files limit,
//     Stop, Kill and Restart end it or start it again on the same port.
//     Command is roomchatd for a test that runs it to its end.
//
//   - InProcess, the server run inside the test's process on an
//     httptest.Server: ServerConfig is the one place that builds a test's
//     server.Config (a memory store, logs to the test's output, then the
//     test's mods), NewInProcess builds the server and closes it when the
//     test ends, Serve serves it (on a listener or an http.Server of the
//     test's choice), StartInProcess does both.
//
//   - Poll and Eventually, the one way to wait in real time for a
//     condition (a metric, a log line, a key in Redis), and Seqs, SeqRun
//     and CheckSeqs, the one check that a room's seqs run from, from+1, …,
//     to with no gap and no repeat (SPEC §4).
//
//   - Main, which also fails the run when goroutines of the code under test
//     outlive the tests (LeakedGoroutines).
//
// Only tests import this package; TestOnlyTestsImport checks that. So it
// may import the server, which nothing else but cmd does.
package chattest
