// Command roomchat-bench measures roomchat against a minimal relay on the
// same WebSocket library, for the budget of docs/benchmarks.md: fan-out
// throughput and latency (p50, p90, p99, p99.9 and max, from each
// message's scheduled send time), memory per idle connection,
// connect+join rate and connection churn. It only ever connects to
// loopback addresses, and every loop is bounded in count and time.
//
// Usage:
//
//	roomchat-bench baseline [-addr 127.0.0.1:PORT]
//	roomchat-bench fanout [-server URL[,URL...]] [-mem URL] [-baseline URL] [-rooms R -members M -rate X ...] [-find-max] [-json] [-o FILE]
//	roomchat-bench idle -server URL[,URL...] [-relay | -centrifugo [-cf-secret S]] [-conns N] [-pid PID[,PID...]]
//	roomchat-bench churn -server URL [-relay] [-cycles N]
//	roomchat-bench chart -in FILE [-out SVG]
//	roomchat-bench summary -in FILE
//
// Given several -server URLs (a cluster's nodes), fanout and idle spread
// every room's members over them round robin, senders too, so that
// messages cross the cluster (target.place).
//
// roomchat-bench -h lists the commands (from the table in commands.go; the
// measuring ones are scenarios run by runner.go, one file each), and
// roomchat-bench COMMAND -h a command's flags. Exit status: 0 on success, 1
// when a run fails, 2 for a usage error.
//
// idle -centrifugo measures Centrifugo's connect + subscribe the same way
// (centrifugo.go), for the connect + join comparison of
// docs/benchmarks.md.
//
// The baseline relay is internal/relay; the result records, their table and
// JSON-lines form, the chart and the budget summary are internal/report.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // a run failed: a server, the network or a result file
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env is what every command gets: the streams it prints to.
type env struct {
	stdout, stderr io.Writer
}

// runFunc runs a command once its flags are parsed.
type runFunc func(ctx context.Context, e *env) error

// command is one row of the command table.
type command struct {
	name    string
	summary string // one line, for the command list and the command's -h
	// setup defines the command's flags on fs and returns the function that
	// runs it with their parsed values.
	setup func(fs *flag.FlagSet) runFunc
}

// run is main without the process: it parses args, runs one command and
// returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name, args := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		printUsage(stdout)
		return exitOK
	}
	i := slices.IndexFunc(commands, func(c *command) bool { return c.name == name })
	if i < 0 {
		fmt.Fprintf(stderr, "roomchat-bench: unknown command %q\n\n", name)
		printUsage(stderr)
		return exitUsage
	}
	cmd := commands[i]
	fs := flag.NewFlagSet("roomchat-bench "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported below, once
	runCmd := cmd.setup(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			printCommandUsage(stdout, cmd, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "roomchat-bench %s: %v (see roomchat-bench %s -h)\n", cmd.name, err, cmd.name)
		return exitUsage
	}
	if fs.NArg() > 0 {
		// The flag package stops at the first argument that is not a flag,
		// so any flag after it would be silently ignored.
		fmt.Fprintf(stderr, "roomchat-bench %s: unexpected argument %q (see roomchat-bench %s -h)\n", cmd.name, fs.Arg(0), cmd.name)
		return exitUsage
	}
	if err := runCmd(ctx, &env{stdout: stdout, stderr: stderr}); err != nil {
		fmt.Fprintln(stderr, "roomchat-bench:", err)
		return exitFailure
	}
	return exitOK
}

// printUsage lists the commands of the table.
func printUsage(w io.Writer) {
	fmt.Fprint(w, "usage: roomchat-bench <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\n\"roomchat-bench <command> -h\" lists a command's flags.\n")
}

func printCommandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: roomchat-bench %s [flags]\n\n%s\n\nflags:\n", c.name, c.summary)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}
