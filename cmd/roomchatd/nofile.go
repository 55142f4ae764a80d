package main

// maxConnsFor returns the default -max-conns for a process that may open
// nofile files: every WebSocket connection holds one, and the rest keep
// max(256, nofile/10) for what else needs one. 256 covers SQLite (the
// database, its -wal and -shm, temporary files: under 10), the listeners,
// the runtime's epoll and pipe, a future Redis pool (go-redis defaults to
// 10 per CPU) and 100 or more HTTP requests and keep-alive connections at
// once; on a large limit, a tenth scales the HTTP share with the number of
// users. A limit too small to leave that much gives half of it.
func maxConnsFor(nofile uint64) int {
	const most = 1 << 24 // a limit of "unlimited" still needs a number
	n := min(nofile, most)
	reserve := min(max(256, n/10), n/2)
	return int(n - reserve)
}
