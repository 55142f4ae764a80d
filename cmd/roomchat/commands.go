package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
)

var createCmd = &command{
	name:     "create",
	synopsis: "create [--namespace NS] [--json]",
	help: `Creates a new room with a fresh ID and prints its share link, which anyone
can open in a browser or pass to 'roomchat join'. The room's owner key,
which moderates it ('roomchat kick ROOM USER --key KEY' and the like), and
the moderator link that opens the room in a browser with the key go to
stderr, so that stdout stays the one line of the link; keep the key
secret. With --namespace NS the
room is NS:ID, governed by the server's policy for NS (the server must know
the namespace). With --json it prints the server's created event instead
(its payload.ownerKey is the key).

Examples:
  roomchat create
  roomchat create --namespace staff --token "$JWT"
  roomchat create --json | jq -r .payload.roomID
  roomchat create 2>key.txt
`,
	setup: func(fs *flag.FlagSet) runFunc {
		ns := fs.String("namespace", "", "create the room in namespace `NS` (its ID is NS:ID)")
		return func(ctx context.Context, e *env, args []string) error { return runCreate(ctx, e, args, *ns) }
	},
}

func runCreate(ctx context.Context, e *env, args []string, ns string) error {
	if len(args) > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", args[0])}
	}
	if ns != "" {
		if perr := protocol.DefaultLimits().CheckRoomID("namespace", ns+":x"); perr != nil {
			return usageError{fmt.Sprintf("--namespace %q: %s", ns, perr.Message)}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	c, err := client.Dial(ctx, e.server, e.options())
	if err != nil {
		return err
	}
	defer c.Close()
	cr, raw, err := c.CreateInRaw(ctx, ns)
	if err != nil {
		return err
	}
	if e.json {
		return writeLine(e.stdout, raw)
	}
	if _, err := fmt.Fprintln(e.stdout, cr.URL); err != nil {
		return err
	}
	if cr.OwnerKey != "" {
		// The key is in the fragment of the moderator link, which a
		// browser never sends to the server (SPEC §11).
		fmt.Fprintf(e.stderr, "owner key: %s\nmoderator link: %s#key=%s\n", cr.OwnerKey, cr.URL, cr.OwnerKey)
	}
	return nil
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

	return inRoom(ctx, e, room, name, func(ctx context.Context, c *client.Conn) error {
		ack, raw, err := c.SendMessageID(ctx, client.NewID(), room, text)
		if err != nil {
			return err
		}
		if e.json {
			return writeLine(e.stdout, raw)
		}
		_, err = fmt.Fprintln(e.stdout, ack.Seq)
		return err
	})
}

// inRoom dials, joins room as name, runs f within e.timeout, and leaves.
// Leaving is a courtesy (closing cleanly announces it too), so its failure
// does not fail what f did.
func inRoom(ctx context.Context, e *env, room, name string, f func(context.Context, *client.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	c, err := client.Dial(ctx, e.server, e.options())
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Join(ctx, room, name, nil); err != nil {
		return err
	}
	if err := f(ctx, c); err != nil {
		return err
	}
	c.Leave(ctx, room)
	return nil
}

var eventCmd = &command{
	name:     "event",
	synopsis: "event ROOM NAME [JSON] [--name N]",
	help: `Joins ROOM and sends the custom event NAME, with JSON as its data, to the
other members, who see it live (tail and join print "* SENDER NAME DATA",
--json an event line); it is not stored and has no seq. NAME is 1-64
characters of A-Z a-z 0-9 and _.:- ; JSON is any one JSON value, at most
8 KiB encoded (without it the data is null; "-" reads it from stdin).
Invalid JSON is a usage error (exit 2). roomchat waits until the server has
accepted the event, prints nothing (also with --json) and exits 0, or exits
1 with the server's reason.

Examples:
  roomchat event abc123 reaction '{"emoji":"👍","seq":42}'
  roomchat event abc123 build.done --name ci
  jq -c '{status, url}' result.json | roomchat event abc123 deploy -
`,
	setup: func(fs *flag.FlagSet) runFunc {
		name := fs.String("name", "", "display `NAME` (default: a guest name chosen by the server)")
		return func(ctx context.Context, e *env, args []string) error { return runEvent(ctx, e, args, *name) }
	},
}

func runEvent(ctx context.Context, e *env, args []string, name string) error {
	switch {
	case len(args) == 0:
		return usageError{"missing ROOM"}
	case len(args) == 1:
		return usageError{"missing NAME"}
	case len(args) > 3:
		return usageError{fmt.Sprintf("unexpected argument %q (quote the JSON: '{\"a\": 1}')", args[3])}
	}
	room, err := roomArg(e, args[0])
	if err != nil {
		return err
	}
	var data jsontext.Value
	if len(args) == 3 {
		data = jsontext.Value(args[2])
		if args[2] == "-" {
			b, err := io.ReadAll(io.LimitReader(e.stdin, 1<<20))
			if err != nil {
				return fmt.Errorf("read stdin: %w", err)
			}
			data = jsontext.Value(b)
		}
		if !data.IsValid() {
			return usageError{fmt.Sprintf("event data is not one valid JSON value: %.60q", data)}
		}
		data.Compact()
	}

	return inRoom(ctx, e, room, name, func(ctx context.Context, c *client.Conn) error {
		return c.Event(ctx, room, args[1], data)
	})
}

var joinCmd = &command{
	name:     "join",
	synopsis: "join ROOM [--name N] [--since SEQ | --from-start] [--json]",
	help: `Joins ROOM and prints its recent history (or everything after --since,
or all of it with --from-start), then every new message as
"HH:MM name: text". Each line typed (or piped) on stdin is sent as a message;
end of input (Ctrl-D) leaves the room and exits 0. Arrivals, departures and
typing are shown as dim notices on a terminal (typing only there), custom
events as "* SENDER NAME DATA", removed messages as "(removed by a
moderator)". If the connection drops, roomchat reconnects and catches up
without repeating a message. A kick or a ban ends it with exit 1 and the
moderator's reason; a mute is shown, and lines typed meanwhile are refused.
With --token, another connection of the same identity (a browser tab,
another roomchat) takes this one over: roomchat then says so and exits 1.
With --key (the room's owner key) it joins as the room's owner.

Examples:
  roomchat join abc123 --name alice
  roomchat join http://chat.example.com/r/abc123 --from-start
  printf 'hello\nbye\n' | roomchat join abc123 --name bot
`,
	setup: func(fs *flag.FlagSet) runFunc { return followFlags(fs, true) },
}

var tailCmd = &command{
	name:     "tail",
	synopsis: "tail ROOM [--since SEQ | --from-start] [--json] [--name N]",
	help: `Follows ROOM read-only: prints its recent history (or everything after
--since, or all of it with --from-start), then every new message and custom
event ("* SENDER NAME DATA") and redaction ("-- NAME removed message SEQ";
the message itself then shows as "(removed by a moderator)"), until
interrupted, kicked or banned (exit 1), or, with --token, taken over by
another connection of the same identity (exit 1). A long backlog is fetched
page by page as it is printed, so a slow reader never makes the server drop
it. It reconnects by itself and never prints a message twice.

With --json every server event is printed as one line of JSON, exactly as the
server sent it. Messages arrive in joined events (payload.history, at start
and after a reconnect), in history events (payload.messages, the pages that
follow a joined whose payload.more is true) and in msg events; together they
hold every message once, in seq order.

Examples:
  roomchat tail abc123
  roomchat tail abc123 --from-start --json |
    jq -r 'if .type=="joined" then .payload.history[] elif .type=="history" then .payload.messages[]
           elif .type=="msg" then .payload else empty end | .message'
`,
	setup: func(fs *flag.FlagSet) runFunc { return followFlags(fs, false) },
}

func followFlags(fs *flag.FlagSet, interactive bool) runFunc {
	name := fs.String("name", "", "display `NAME` (default: a guest name chosen by the server)")
	key := fs.String("key", os.Getenv("ROOMCHAT_KEY"), "join as the room's owner with its owner `KEY` (also $ROOMCHAT_KEY)")
	since := sinceFlag(fs)
	fromStart := fs.Bool("from-start", false, "start from the room's first stored message (the same as --since 0)")
	return func(ctx context.Context, e *env, args []string) error {
		if *fromStart {
			if since.v != nil && *since.v != 0 {
				return usageError{"--from-start and --since " + since.String() + " disagree; give one"}
			}
			since.v = new(int64(0))
		}
		return follow(ctx, e, args, *name, *key, since, interactive)
	}
}

// follow is join (interactive) and tail (read-only): it opens the
// session, prints the joined event and its history (printJoined), then
// every event until the session ends (tail) or stdin does (chat).
func follow(ctx context.Context, e *env, args []string, name, key string, since *seqFlag, interactive bool) error {
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
	sess, err := openFollow(ctx, e, room, name, key, since)
	if err != nil {
		return err
	}
	defer sess.Close()
	p := newPrinter(e)
	if ok, err := printJoined(ctx, sess, p); !ok {
		return err
	}
	if !interactive {
		for {
			ev, err := sess.Next(ctx)
			if err != nil {
				return ended(ctx, sess)
			}
			if err := p.print(ev); err != nil {
				return err
			}
		}
	}
	return chat(ctx, e, sess, p)
}

// openFollow opens the session of join and tail in room: batched frames,
// since as given, and a line on stderr for each reconnect and each drop.
func openFollow(ctx context.Context, e *env, room, name, key string, since *seqFlag) (*client.Session, error) {
	o := e.options()
	o.Batch = true
	opts := client.SessionOptions{
		Options:     o,
		Name:        name,
		Key:         key,
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
	return client.OpenSession(ctx, e.server, room, opts)
}

// printJoined prints the joined event (with the history) before stdin is
// read, so that even "roomchat join R </dev/null" shows it; so are the
// history pages that complete it when it says more. It reports false when
// the command ends here, with the error to end it with (nil when the
// session ended normally).
func printJoined(ctx context.Context, sess *client.Session, p *printer) (bool, error) {
	ev, err := sess.Next(ctx)
	if err != nil {
		return false, ended(ctx, sess)
	}
	if err := p.print(ev); err != nil {
		return false, err
	}
	for j := ev.Joined; j != nil && j.More && p.lastSeq < j.LastSeq; {
		ev, err := sess.Next(ctx)
		if err != nil {
			return false, ended(ctx, sess)
		}
		if err := p.print(ev); err != nil {
			return false, err
		}
		if ev.History == nil {
			break // the catch-up ended early (a drop, or a server that cannot page)
		}
	}
	return true, nil
}

// chat is join once the history is shown: stdin lines are sent
// (sendLines) while events are printed, until stdin ends, the session
// ends or ctx is interrupted. At the end of stdin it prints the echo of
// what was sent, then leaves the room.
func chat(ctx context.Context, e *env, sess *client.Session, p *printer) error {
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
	if err := ended(ctx, sess); err != nil {
		return err // the server ended it (stdin may never end: do not wait for it)
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

// ended is why a session's Next stopped: nil when ctx was interrupted or
// the session closed, else the reason the session gave up on the server
// (SPEC §10: a 4001 close without a new token, a 401 on reconnect).
func ended(ctx context.Context, sess *client.Session) error {
	if ctx.Err() != nil {
		return nil // interrupted: a normal end
	}
	if err := sess.Err(); err != nil && !errors.Is(err, client.ErrClosed) {
		return err
	}
	return nil
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
