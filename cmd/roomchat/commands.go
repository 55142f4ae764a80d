package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/roomchat/roomchat/internal/client"
)

var createCmd = &command{
	name:     "create",
	synopsis: "create [--json]",
	help: `Creates a new room with a fresh ID and prints its share link, which anyone
can open in a browser or pass to 'roomchat join'. With --json it prints the
server's created event instead.

Examples:
  roomchat create
  roomchat create --json | jq -r .payload.roomID
`,
	setup: func(fs *flag.FlagSet) runFunc { return runCreate },
}

func runCreate(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", args[0])}
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	c, err := client.Dial(ctx, e.server, client.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	cr, raw, err := c.CreateRaw(ctx)
	if err != nil {
		return err
	}
	if e.json {
		return writeLine(e.stdout, raw)
	}
	_, err = fmt.Fprintln(e.stdout, cr.URL)
	return err
}

var sendCmd = &command{
	name:     "send",
	synopsis: "send ROOM [TEXT...] [--name N] [--json]",
	help: `Joins ROOM, sends one message, waits until the server has stored it and
prints its seq (with --json, the server's ack event). TEXT is the arguments
joined by spaces; without TEXT the message is all of stdin (a final newline
is dropped). Exits 1 with the server's reason if the message is refused.

Examples:
  roomchat send abc123 hello everyone
  uptime | roomchat send http://localhost:8080/r/abc123 --name monitor
`,
	setup: func(fs *flag.FlagSet) runFunc {
		name := fs.String("name", "", "display `NAME` (default: a guest name chosen by the server)")
		return func(ctx context.Context, e *env, args []string) error { return runSend(ctx, e, args, *name) }
	},
}

func runSend(ctx context.Context, e *env, args []string, name string) error {
	if len(args) == 0 {
		return usageError{"missing ROOM"}
	}
	room, err := roomArg(e, args[0])
	if err != nil {
		return err
	}
	var text string
	if len(args) > 1 {
		text = strings.Join(args[1:], " ")
	} else {
		b, err := io.ReadAll(io.LimitReader(e.stdin, 1<<20))
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		text = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	if strings.TrimSpace(text) == "" {
		return usageError{"nothing to send: the message is empty"}
	}

	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	c, err := client.Dial(ctx, e.server, client.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Join(ctx, room, name, nil); err != nil {
		return err
	}
	ack, raw, err := c.SendMessageID(ctx, client.NewID(), room, text)
	if err != nil {
		return err
	}
	if e.json {
		err = writeLine(e.stdout, raw)
	} else {
		_, err = fmt.Fprintln(e.stdout, ack.Seq)
	}
	if err != nil {
		return err
	}
	// Leaving is a courtesy (closing cleanly announces it too), so its
	// failure does not fail a message that is already stored.
	c.Leave(ctx, room)
	return nil
}

var joinCmd = &command{
	name:     "join",
	synopsis: "join ROOM [--name N] [--since SEQ] [--json]",
	help: `Joins ROOM and prints its recent history, then every new message as
"HH:MM name: text". Each line typed (or piped) on stdin is sent as a message;
end of input (Ctrl-D) leaves the room and exits 0. Arrivals, departures and
typing are shown as dim notices on a terminal (typing only there). If the
connection drops, roomchat reconnects and catches up without repeating a
message.

Examples:
  roomchat join abc123 --name alice
  roomchat join http://chat.example.com/r/abc123 --since 0
  printf 'hello\nbye\n' | roomchat join abc123 --name bot
`,
	setup: func(fs *flag.FlagSet) runFunc { return followFlags(fs, true) },
}

var tailCmd = &command{
	name:     "tail",
	synopsis: "tail ROOM [--since SEQ] [--json] [--name N]",
	help: `Follows ROOM read-only: prints its recent history (or everything after
--since), then every new message, until interrupted. It reconnects by itself
and never prints a message twice. With --json every server event is printed
as one line of JSON, exactly as the server sent it; messages arrive both in
joined events (payload.history, at start and after a reconnect) and in msg
events.

Examples:
  roomchat tail abc123
  roomchat tail abc123 --since 0 --json | jq -r 'select(.type=="msg") | .payload.message'
`,
	setup: func(fs *flag.FlagSet) runFunc { return followFlags(fs, false) },
}

func followFlags(fs *flag.FlagSet, interactive bool) runFunc {
	name := fs.String("name", "", "display `NAME` (default: a guest name chosen by the server)")
	since := sinceFlag(fs)
	return func(ctx context.Context, e *env, args []string) error {
		return follow(ctx, e, args, *name, since, interactive)
	}
}

// follow is join (interactive) and tail (read-only).
func follow(ctx context.Context, e *env, args []string, name string, since *seqFlag, interactive bool) error {
	if len(args) == 0 {
		return usageError{"missing ROOM"}
	}
	if len(args) > 1 {
		return usageError{fmt.Sprintf("unexpected argument %q", args[1])}
	}
	room, err := roomArg(e, args[0])
	if err != nil {
		return err
	}
	opts := client.SessionOptions{
		Options:     client.Options{Batch: true},
		Name:        name,
		Since:       since.v,
		DialTimeout: e.timeout,
		OnState: func(st client.State) {
			if st.Connected {
				fmt.Fprintln(e.stderr, "roomchat: reconnected")
				return
			}
			fmt.Fprintf(e.stderr, "roomchat: %s; reconnecting in %s\n", describe(st.Err, e), st.RetryIn.Round(10*time.Millisecond))
		},
	}
	if e.sessionOpt != nil {
		e.sessionOpt(&opts)
	}
	sess, err := client.OpenSession(ctx, e.server, room, opts)
	if err != nil {
		return err
	}
	defer sess.Close()
	p := newPrinter(e)
	// The joined event (with the history) is printed before stdin is read,
	// so that even "roomchat join R </dev/null" shows it.
	ev, err := sess.Next(ctx)
	if err != nil {
		return nil // interrupted
	}
	if err := p.print(ev); err != nil {
		return err
	}

	if !interactive {
		for {
			ev, err := sess.Next(ctx)
			if err != nil {
				return nil // interrupted: a normal end
			}
			if err := p.print(ev); err != nil {
				return err
			}
		}
	}

	loopCtx, stopLoop := context.WithCancel(ctx)
	defer stopLoop()
	input := make(chan inputResult, 1)
	// This goroutine cannot be waited for: a read from a terminal does not
	// end when ctx does. It ends at EOF; on interrupt the process exits.
	go func() {
		input <- sendLines(ctx, e, sess)
		stopLoop()
	}()
	for {
		ev, err := sess.Next(loopCtx)
		if err != nil {
			break
		}
		if err := p.print(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: closing the session says goodbye
	}
	in := <-input
	// Show the echo of what was just sent before leaving, so that
	// "printf 'hi\n' | roomchat join R" prints hi.
	dctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	for p.lastSeq < in.lastSeq {
		ev, err := sess.Next(dctx)
		if err != nil {
			break
		}
		if err := p.print(ev); err != nil {
			return err
		}
	}
	sess.Leave(dctx)
	return in.err
}

type inputResult struct {
	lastSeq int64 // seq of the last message stored
	err     error // reading stdin failed
}

// sendLines sends each non-blank line of stdin and waits for its ack, so
// lines are stored in the order typed. Refused lines are reported on
// stderr and do not stop the session.
func sendLines(ctx context.Context, e *env, sess *client.Session) inputResult {
	var r inputResult
	sc := bufio.NewScanner(e.stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, e.timeout)
		ack, err := sess.SendMessage(sctx, line)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return r
			}
			fmt.Fprintf(e.stderr, "roomchat: not sent: %s\n", describe(err, e))
			continue
		}
		r.lastSeq = max(r.lastSeq, ack.Seq)
	}
	if err := sc.Err(); err != nil {
		r.err = fmt.Errorf("read stdin: %w", err)
	}
	return r
}

func writeLine(w io.Writer, raw []byte) error {
	b := make([]byte, 0, len(raw)+1)
	b = append(append(b, raw...), '\n')
	_, err := w.Write(b)
	return err
}

// lockedWriter serialises writes from the session's goroutine, the input
// goroutine and the main loop.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
