// Command roomchatd is the roomchat server: WebSocket chat rooms, the HTTP
// API and the web client, with history in an embedded SQLite file.
//
// Every flag has an environment variable; `roomchatd -h` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// defaultGOGC is the GC target roomchatd runs with unless GOGC is set.
// Most of its heap is long-lived connection state, so a smaller headroom
// than Go's 100% costs little GC work and keeps resident memory per idle
// connection down (docs/benchmarks.md has both measured).
const defaultGOGC = 50

func main() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(defaultGOGC)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "roomchatd:", err)
		os.Exit(1)
	}
}

// errUsage marks a bad command line, already explained on stderr.
var errUsage = errors.New("usage")

func usageError(stderr io.Writer, format string, args ...any) error {
	fmt.Fprintf(stderr, "roomchatd: "+format+"\n", args...)
	return errUsage
}
