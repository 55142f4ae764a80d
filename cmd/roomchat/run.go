package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the server refused, or the network failed
	exitUsage   = 2
)

// defaultServer is used when neither --server nor ROOMCHAT_SERVER is set,
// and ROOM is not a share link.
const defaultServer = "http://localhost:8080"

// defaultTimeout bounds connecting and waiting for a reply; 10 s is long
// enough for a slow link and short enough for a script to fail fast.
const defaultTimeout = 10 * time.Second

// usageError is a wrong command line: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// env is what every command gets: its parsed common flags and the streams.
type env struct {
	server     string
	serverSet  bool   // --server was given (a share link does not override it)
	token      string // --token or $ROOMCHAT_TOKEN: a signed identity (SPEC §10)
	timeout    time.Duration
	json       bool
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	sessionOpt func(*client.SessionOptions) // tests shorten backoff; nil in main
}

// runFunc runs a command with its positional arguments.
type runFunc func(ctx context.Context, e *env, args []string) error

type command struct {
	name     string
	synopsis string
	help     string // after the synopsis: what it does and an example
	// setup defines the command's own flags on fs and returns the function
	// that runs it with their parsed values.
	setup func(fs *flag.FlagSet) runFunc
}

var commands []*command

func init() {
	commands = []*command{createCmd, joinCmd, sendCmd, eventCmd, tailCmd,
		redactCmd, kickCmd, banCmd, unbanCmd, muteCmd, unmuteCmd, configureCmd}
}

const topUsage = `roomchat is the command-line client of a roomchat server.

Usage:
  roomchat create [--namespace NS]              create a room, print its share link
  roomchat join ROOM [--name N] [--since SEQ]   chat: stdin lines are sent, messages printed
  roomchat send ROOM [TEXT...]                  send one message (TEXT or stdin), print its seq
  roomchat event ROOM NAME [JSON]               send a custom event (not stored) to the others
  roomchat tail ROOM [--since SEQ] [--json]     follow a room, read-only

Moderation (SPEC §11; with --key, the room's owner key, or --token):
  roomchat redact ROOM SEQ [--reason R]         remove a message's text
  roomchat kick ROOM USER [--reason R]          put a user out of the room
  roomchat ban|mute ROOM USER [--for D]         keep a user out / silent (default: until lifted)
  roomchat unban|unmute ROOM USER               lift a ban or a mute
  roomchat configure ROOM --post members|moderators   who may post

join and tail print the room's last messages first; --since SEQ starts after
message SEQ instead, and --from-start at the room's first message.

ROOM is a room ID (ID, or NS:ID in a namespace) or a share link
(http://host/r/ID); a link also names the server unless --server is given.

Flags for every command:
  --server URL      server (default $ROOMCHAT_SERVER, else http://localhost:8080)
  --timeout D       how long to wait to connect and for a reply (default 10s)
  --json            print server events as JSON, one per line, exactly as sent
  --token JWT       a signed identity, sent as Authorization: Bearer (default
                    $ROOMCHAT_TOKEN); a server that refuses it (401) or closes
                    the connection when it expires (4001) ends roomchat with exit 1,
                    and so does another connection of the same identity (a
                    browser tab, another roomchat), which takes this one over

Exit status: 0 ok, 1 server or network error, 2 usage error.

Example:
  link=$(roomchat create) && roomchat join "$link" --name alice

create prints the share link on stdout and the room's owner key, which
the moderation commands take as --key, on stderr.

Run 'roomchat COMMAND -h' for more about a command.
`

// run is main without the process: it parses args, runs one command and
// returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runEnv(ctx, args, &env{stdin: stdin, stdout: stdout, stderr: stderr})
}

// runEnv is run with the streams in e: it sets e's defaults, parses the
// common flags, finds the command, parses its flags and runs it, and maps
// the result to an exit code.
func runEnv(ctx context.Context, args []string, e *env) int {
	e.setDefaults()
	// Common flags may also come before the command.
	top := newFlagSet("roomchat", e)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(e.stdout, topUsage)
			return exitOK
		}
		return usage(e, fmt.Sprintf("%v (see roomchat -h)", err))
	}
	top.Visit(func(f *flag.Flag) { e.serverSet = e.serverSet || f.Name == "server" })
	args = top.Args()
	if len(args) == 0 {
		fmt.Fprint(e.stderr, topUsage)
		return exitUsage
	}
	if args[0] == "help" {
		fmt.Fprint(e.stdout, topUsage)
		return exitOK
	}
	cmd := lookupCommand(args[0])
	if cmd == nil {
		return usage(e, fmt.Sprintf("unknown command %q (see roomchat -h)", args[0]))
	}

	fs := newFlagSet("roomchat "+cmd.name, e)
	runCmd := cmd.setup(fs)
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(e.stdout, cmd, fs)
			return exitOK
		}
		return usage(e, fmt.Sprintf("%s: %v (see roomchat %s -h)", cmd.name, err, cmd.name))
	}
	fs.Visit(func(f *flag.Flag) { e.serverSet = e.serverSet || f.Name == "server" })
	if e.timeout <= 0 {
		return usage(e, "--timeout must be positive")
	}
	err = runCmd(ctx, e, pos)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, new(usageError)):
		return usage(e, fmt.Sprintf("%s: %v (see roomchat %s -h)", cmd.name, err, cmd.name))
	default:
		fmt.Fprintf(e.stderr, "roomchat: %s\n", describe(err, e))
		return exitFailure
	}
}

// setDefaults sets the values of the common flags before they are parsed:
// the server and token from the environment, the default timeout. It
// also makes stderr safe to write from the session's goroutines.
func (e *env) setDefaults() {
	e.stderr = &lockedWriter{w: e.stderr}
	e.server = defaultServer
	if s := os.Getenv("ROOMCHAT_SERVER"); s != "" {
		e.server = s
	}
	e.timeout = defaultTimeout
	e.token = os.Getenv("ROOMCHAT_TOKEN")
}

// lookupCommand is the command named name, nil if there is none.
func lookupCommand(name string) *command {
	var cmd *command
	for _, c := range commands {
		if c.name == name {
			cmd = c
		}
	}
	return cmd
}

func usage(e *env, msg string) int {
	fmt.Fprintf(e.stderr, "roomchat: %s\n", msg)
	return exitUsage
}

// newFlagSet returns a FlagSet with the flags every command has, bound to
// e. It reports errors to its caller instead of printing them.
func newFlagSet(name string, e *env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	commonFlags(fs, e)
	return fs
}

func commonFlags(fs *flag.FlagSet, e *env) {
	fs.StringVar(&e.server, "server", e.server, "server `URL` (also $ROOMCHAT_SERVER)")
	fs.DurationVar(&e.timeout, "timeout", e.timeout, "how long to wait to connect and for a reply")
	fs.BoolVar(&e.json, "json", e.json, "print server events as JSON, one per line, exactly as sent")
	fs.StringVar(&e.token, "token", e.token, "signed identity `JWT`, sent as Authorization: Bearer (also $ROOMCHAT_TOKEN)")
}

// options are the client options of every connection: the token.
func (e *env) options() client.Options {
	return client.Options{Token: e.token}
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments (roomchat join ROOM --name bob). After "--" every
// argument is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func printCommandUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: roomchat %s\n\n%s\nFlags:\n", cmd.synopsis, cmd.help)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// roomArg parses ROOM (an ID or a share link); a link sets the server
// unless --server was given.
func roomArg(e *env, arg string) (string, error) {
	id, server, err := client.ParseRoom(arg)
	if err != nil {
		return "", usageError{err.Error()}
	}
	if server != "" && !e.serverSet {
		e.server = server
	}
	return id, nil
}

// seqFlag is an optional --since: nil until set, then a seq ≥ 0.
type seqFlag struct{ v *int64 }

func (s *seqFlag) String() string {
	if s == nil || s.v == nil {
		return ""
	}
	return strconv.FormatInt(*s.v, 10)
}

func (s *seqFlag) Set(v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return errors.New("must be a whole number ≥ 0")
	}
	s.v = &n
	return nil
}

func sinceFlag(fs *flag.FlagSet) *seqFlag {
	s := new(seqFlag)
	fs.Var(s, "since", "first replay every stored message with seq > `SEQ` (default: the room's last messages)")
	return s
}

// describe turns an error into one readable line for stderr.
func describe(err error, e *env) string {
	if pe, ok := errors.AsType[*protocol.Error](err); ok {
		return fmt.Sprintf("%s (%s)", pe.Message, pe.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("no answer from %s within %s", e.server, e.timeout)
	}
	if errors.Is(err, client.ErrTokenExpired) {
		return "the token expired and the server closed the connection (4001); run again with a new --token"
	}
	if de, ok := errors.AsType[*client.DialError](err); ok && errors.Is(err, client.ErrUnauthorized) {
		why := de.Reason
		if why == "" {
			why = "the token is missing or invalid"
		}
		return fmt.Sprintf("%s refused the connection (401): %s", e.server, why)
	}
	if de, ok := errors.AsType[*client.DialError](err); ok {
		if de.Status != "" {
			return fmt.Sprintf("cannot connect to %s: the server answered %s (is it a roomchat server?)", e.server, de.Status)
		}
		return fmt.Sprintf("cannot reach %s: %s", e.server, netReason(de.Err))
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func netReason(err error) string {
	if errno, ok := errors.AsType[syscall.Errno](err); ok {
		return errno.Error()
	}
	if dns, ok := errors.AsType[*net.DNSError](err); ok {
		if dns.IsNotFound {
			return "no such host " + strconv.Quote(dns.Name)
		}
		return dns.Err
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}
