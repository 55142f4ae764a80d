package main

// The defaults of -max-conns and of the limit on all connections come from
// the open-files limit (nofile). Every connection the listener accepts is
// counted (server.Listener), so what has to be kept back is small and
// fixed, not a share of the limit:
//
//   - otherFiles (128) for every file that is not a client connection:
//     SQLite (the database, its -wal, -shm and -lock, temporary files:
//     under 10), the listeners (-addr, -metrics-addr, -debug-addr) and
//     what scrapes and profiles them, stdin, stdout and stderr, the
//     runtime's epoll and wake-up descriptors, Redis in cluster mode
//     (rueidis: a few pipelined connections and the pub/sub one, under
//     10), and DNS lookups. That is under 40 in all; 128 leaves three
//     times that.
//   - httpHeadroom (128) between the WebSockets' limit and all
//     connections', for HTTP when the WebSockets are at theirs: the API,
//     health checks, scrapes and the 503 server_full answers to upgrades
//     still get a connection (idle keep-alive ones make room for them).
//
// So at 20,000 files, 19,744 WebSockets fit, where a tenth kept back
// allowed 18,000. A limit too small for that keeps a quarter of it for
// each.
const (
	otherFiles   = 128
	httpHeadroom = 128
)

// tcpConnsFor returns the limit on all connections of the listener for a
// process that may open nofile files: what otherFiles leaves.
func tcpConnsFor(nofile uint64) int {
	n := capNofile(nofile)
	return int(n - min(otherFiles, n/4))
}

// maxConnsFor returns the default -max-conns for a process that may open
// nofile files: tcpConnsFor less httpHeadroom.
func maxConnsFor(nofile uint64) int {
	n := capNofile(nofile)
	return max(tcpConnsFor(nofile)-int(min(httpHeadroom, n/4)), 0)
}

// capNofile bounds a limit of "unlimited", which still needs a number.
func capNofile(nofile uint64) uint64 { return min(nofile, 1<<24) }
