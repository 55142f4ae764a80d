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
	"slices"
	"strings"
	"syscall"
)

// defaultGOGC is the GC target roomchatd runs with unless GOGC is set.
// Most of its heap is long-lived connection state, so a smaller headroom
// than Go's 100% costs little GC work and keeps resident memory per idle
// connection down (docs/benchmarks.md has both measured).
const defaultGOGC = 50

// smallStacks is the GODEBUG setting roomchatd runs with unless GODEBUG
// names it: new goroutines start at the minimum stack size instead of the
// average the runtime has seen. A connection's read loop lives as long as
// the connection and needs about 4 KiB; started at the adaptive size (often
// 8 KiB, raised by the deep stacks of request handling) it keeps twice
// that, since a stack is only shrunk when it uses under a quarter of it.
// Measured: 10.0 KB instead of 13 KB of server memory per idle connection
// (docs/benchmarks.md).
const smallStacks = "adaptivestackstart=0"

func main() {
	useSmallStacks()
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

// useSmallStacks re-executes roomchatd, in the same process, with
// smallStacks added to GODEBUG, because the runtime reads that setting only
// at start-up. It does nothing when GODEBUG already names the setting (so
// GODEBUG=adaptivestackstart=1 keeps the runtime's default), or when the
// re-execution fails, in which case roomchatd runs on as it is.
func useSmallStacks() {
	env := os.Getenv("GODEBUG")
	if strings.Contains(env, "adaptivestackstart=") {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	if env != "" {
		env += ","
	}
	// Replace every GODEBUG entry: with two, the first wins, and the new
	// process would not see the setting (and would execute itself again).
	environ := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
	environ = append(environ, "GODEBUG="+env+smallStacks)
	syscall.Exec(exe, os.Args, environ) // returns only on failure
}

// errUsage marks a bad command line, already explained on stderr.
var errUsage = errors.New("usage")

func usageError(stderr io.Writer, format string, args ...any) error {
	fmt.Fprintf(stderr, "roomchatd: "+format+"\n", args...)
	return errUsage
}
