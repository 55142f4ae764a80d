package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/client"
)

// The tests run the built binaries: roomchatd as the server and roomchat
// as a user or a script would, as subprocesses, over loopback. Both are
// built once per test binary.
func TestMain(m *testing.M) { os.Exit(chattest.Main(m)) }

// cliEnv keeps the developer's ROOMCHAT_SERVER and ROOMCHAT_TOKEN out of
// the tests.
func cliEnv() []string {
	return append(os.Environ(), "ROOMCHAT_SERVER=", "ROOMCHAT_TOKEN=", "NO_COLOR=1", "TZ=UTC")
}

// roomchat runs the CLI to completion (at most 20 s) and returns its
// stdout, stderr and exit code.
func roomchat(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return roomchatEnv(t, nil, stdin, args...)
}

// roomchatEnv is roomchat with more environment variables ("K=V").
func roomchatEnv(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chattest.Bin(t, chattest.CLIPackage), args...)
	cmd.Env = append(cliEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok || ctx.Err() != nil {
			t.Fatalf("roomchat %s: %v (stderr: %s)", strings.Join(args, " "), err, errOut.String())
		}
		code = ee.ExitCode()
	}
	return out.String(), errOut.String(), code
}

// proc is a long-running roomchat (join, tail) with a pipe to its stdin
// and its output read line by line.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, closed at EOF
	mu     sync.Mutex
	stderr bytes.Buffer // guarded by mu
	exited chan struct{}
	err    error // set before exited closes
}

func startCLI(t *testing.T, args ...string) *proc {
	t.Helper()
	return startCLIReader(t, nil, args...)
}

// startCLIReader is startCLI with stdout read through wrap(stdout), e.g.
// a slowReader; nil reads it as fast as it comes.
func startCLIReader(t *testing.T, wrap func(io.Reader) io.Reader, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, lines: make(chan string, 1000), exited: make(chan struct{})}
	p.cmd = exec.Command(chattest.Bin(t, chattest.CLIPackage), args...)
	p.cmd.Env = cliEnv()
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.stderr.Write(b)
	})
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out io.Reader = stdout
	if wrap != nil {
		out = wrap(stdout)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 4<<20) // a --json line holds up to a page (256 KiB) of messages
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// expectLine reads stdout until a line matches re (within 10 s) and
// returns it; the lines before it are returned too.
func (p *proc) expectLine(re string) (string, []string) {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	var before []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("roomchat exited before printing %q; printed %q; stderr: %s", re, before, p.Stderr())
			}
			if rx.MatchString(l) {
				return l, before
			}
			before = append(before, l)
		case <-timeout:
			p.t.Fatalf("no line matching %q within 10s; printed %q; stderr: %s", re, before, p.Stderr())
		}
	}
}

// wait waits (at most 15 s) for the process to exit and returns its code
// and the rest of its output.
func (p *proc) wait() (int, []string) {
	p.t.Helper()
	var rest []string
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if ok {
				rest = append(rest, l)
				continue
			}
			<-p.exited
			if p.err != nil {
				ee, ok := p.err.(*exec.ExitError)
				if !ok {
					p.t.Fatal(p.err)
				}
				return ee.ExitCode(), rest
			}
			return 0, rest
		case <-timeout:
			p.t.Fatalf("roomchat did not exit within 15s; stderr: %s", p.Stderr())
		}
	}
}

func TestCreateJoinSend(t *testing.T) {
	srv := chattest.Start(t)
	out, errOut, code := roomchat(t, "", "create", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("create: exit %d, stderr %q", code, errOut)
	}
	link := strings.TrimSpace(out)
	m := regexp.MustCompile(`^http://.+/r/([A-Za-z0-9_-]{21})$`).FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("create printed %q, want a share link", out)
	}
	room := m[1]

	// The link alone names the server; flags come after ROOM as in SPEC.
	alice := startCLI(t, "join", link, "--name", "alice")
	alice.expectLine(`^-- joined ` + room + ` as alice`)

	out, errOut, code = roomchat(t, "", "send", room, "hello", "alice", "--name", "bob", "--server", srv.URL)
	if code != 0 || strings.TrimSpace(out) != "1" {
		t.Fatalf("send: exit %d, stdout %q, stderr %q; want seq 1", code, out, errOut)
	}
	line, _ := alice.expectLine(`bob: hello alice$`)
	if !regexp.MustCompile(`^\d\d:\d\d bob: hello alice$`).MatchString(line) {
		t.Errorf("message line = %q, want HH:MM bob: hello alice", line)
	}

	// Text from stdin, and a line typed into join.
	out, errOut, code = roomchat(t, "second line\n", "send", "--server", srv.URL, room)
	if code != 0 || strings.TrimSpace(out) != "2" {
		t.Fatalf("send from stdin: exit %d, stdout %q, stderr %q; want seq 2", code, out, errOut)
	}
	alice.expectLine(`: second line$`)
	fmt.Fprintln(alice.stdin, "hi bob")
	alice.expectLine(`^\d\d:\d\d alice: hi bob$`)

	// EOF on stdin leaves and exits 0.
	alice.stdin.Close()
	if code, _ := alice.wait(); code != 0 {
		t.Errorf("join after EOF: exit %d, want 0; stderr %s", code, alice.Stderr())
	}
	if s := alice.Stderr(); s != "" {
		t.Errorf("join stderr = %q, want nothing", s)
	}
}

func TestJoinPipedPrintsOwnMessages(t *testing.T) {
	srv := chattest.Start(t)
	out, errOut, code := roomchat(t, "one\n\ntwo\n", "join", "piped", "--name", "bot", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := regexp.MustCompile(`(?s)-- joined piped as bot · 1 here\n\d\d:\d\d bot: one\n\d\d:\d\d bot: two\n$`)
	if !want.MatchString(out) {
		t.Errorf("stdout = %q", out)
	}
	// History is printed on the next join, and --since selects it.
	out, _, code = roomchat(t, "", "join", "piped", "--since", "1", "--server", srv.URL)
	if code != 0 || strings.Contains(out, "bot: one") || !strings.Contains(out, "bot: two") {
		t.Errorf("join --since 1: exit %d, stdout %q; want only message 2", code, out)
	}
}

func TestJSONLinesParse(t *testing.T) {
	srv := chattest.Start(t)
	out, errOut, code := roomchat(t, "", "create", "--json", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("create --json: exit %d, stderr %q", code, errOut)
	}
	created := mustJSON(t, out)
	if created["type"] != "created" {
		t.Fatalf("create --json = %s", out)
	}
	room := created["payload"].(map[string]any)["roomID"].(string)

	tail := startCLI(t, "tail", room, "--json", "--server", srv.URL)
	first, _ := tail.expectLine(`.`)
	if ev := mustJSON(t, first); ev["type"] != "joined" {
		t.Errorf("first tail --json line = %s, want the joined event", first)
	}
	out, _, code = roomchat(t, "", "send", room, `quote " and ünïcode`, "--json", "--server", srv.URL)
	if ack := mustJSON(t, out); code != 0 || ack["type"] != "ack" {
		t.Fatalf("send --json: exit %d, %s", code, out)
	}
	var msg map[string]any
	for msg == nil {
		line, _ := tail.expectLine(`.`)
		if ev := mustJSON(t, line); ev["type"] == "msg" {
			msg = ev
		}
	}
	p := msg["payload"].(map[string]any)
	if p["message"] != `quote " and ünïcode` || p["seq"] != 1.0 {
		t.Errorf("msg payload = %v", p)
	}

	// join --json prints events too, and its piped lines are sent.
	out, errOut, code = roomchat(t, "from join\n", "join", room, "--json", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("join --json: exit %d, stderr %q", code, errOut)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		mustJSON(t, l)
	}
	if !strings.Contains(out, `"message":"from join"`) {
		t.Errorf("join --json output lacks its own message: %s", out)
	}
}

func mustJSON(t *testing.T, line string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		t.Fatalf("not a JSON object line: %q: %v", line, err)
	}
	if strings.Count(strings.TrimSpace(line), "\n") > 0 {
		t.Fatalf("more than one line: %q", line)
	}
	return v
}

func TestUnreachableServer(t *testing.T) {
	for _, args := range [][]string{
		{"create"},
		{"send", "room", "hi"},
		{"join", "room"},
		{"tail", "room"},
	} {
		_, errOut, code := roomchat(t, "", append(args, "--server", "http://127.0.0.1:1", "--timeout", "3s")...)
		if code != 1 {
			t.Errorf("%v: exit %d, want 1", args, code)
		}
		if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "cannot reach http://127.0.0.1:1") {
			t.Errorf("%v: stderr = %q, want one line saying the server cannot be reached", args, errOut)
		}
	}
}

func TestServerRefusal(t *testing.T) {
	srv := chattest.Start(t)
	_, errOut, code := roomchat(t, "", "send", "room", strings.Repeat("x", 4001), "--server", srv.URL)
	if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "(too_long)") {
		t.Errorf("too long: exit %d, stderr %q; want 1 and the server's sentence", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"join"},
		{"join", "a", "b"},
		{"join", "room", "--since", "-1"},
		{"join", "room", "--nope"},
		{"send", "room"}, // no TEXT and empty stdin
		{"send", "bad room!", "hi"},
		{"tail"},
		{"create", "extra"},
		{"--timeout", "0", "create"},
		{"tail", "room", "--from-start", "--since", "3"},
		{"event", "room"},
		{"event", "room", "name", "{bad json"},
		{"event", "room", "name", `{"a":1,"a":2}`},
		{"event", "room", "name", "1", "2"},
	} {
		_, errOut, code := roomchat(t, "", args...)
		if code != 2 {
			t.Errorf("roomchat %q: exit %d, want 2", args, code)
		}
		if errOut == "" {
			t.Errorf("roomchat %q: nothing on stderr", args)
		}
	}
	for _, args := range [][]string{{"-h"}, {"help"}, {"join", "-h"}, {"send", "--help"}, {"tail", "-h"}, {"create", "-h"}, {"event", "-h"}} {
		out, _, code := roomchat(t, "", args...)
		if code != 0 || !strings.Contains(out, "roomchat") || !strings.Contains(out, "xample") {
			t.Errorf("roomchat %q: exit %d, stdout %q; want help with an example", args, code, out)
		}
	}
}

// TestTailSurvivesRestart restarts the server (same -db file, so a
// persistent store keeps the history) under a running tail: it reconnects,
// catches up and prints every message exactly once. If the store loses the
// room on restart, the room's epoch changes and tail starts over in the new
// epoch: still every message once.
func TestTailSurvivesRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	srv := chattest.Start(t, "-db", db)
	send := func(text string) {
		t.Helper()
		_, errOut, code := roomchat(t, "", "send", "restart", text, "--server", srv.URL)
		if code != 0 {
			t.Fatalf("send %q: exit %d, %s", text, code, errOut)
		}
	}
	send("m1")
	send("m2")
	tail := startCLI(t, "tail", "restart", "--since", "0", "--json", "--server", srv.URL)
	var texts []string
	readUntil := func(want string) {
		t.Helper()
		for len(texts) == 0 || texts[len(texts)-1] != want {
			line, _ := tail.expectLine(`.`)
			ev := mustJSON(t, line)
			p, _ := ev["payload"].(map[string]any)
			switch ev["type"] {
			case "joined":
				for _, m := range p["history"].([]any) {
					texts = append(texts, m.(map[string]any)["message"].(string))
				}
			case "msg":
				texts = append(texts, p["message"].(string))
			}
		}
	}
	readUntil("m2")
	send("m3")
	readUntil("m3")

	srv.Restart(t, false)
	send("m4")
	send("m5")
	readUntil("m5")
	if want := "[m1 m2 m3 m4 m5]"; fmt.Sprint(texts) != want {
		t.Errorf("tail printed %v, want %s", texts, want)
	}
	// stderr is copied by another goroutine than stdout: give it a moment.
	if !chattest.Poll(5*time.Second, func() bool { return strings.Contains(tail.Stderr(), "reconnected") }) {
		t.Errorf("tail stderr = %q, want a reconnect notice", tail.Stderr())
	}

	// Plain output across a kill -9 restart: still once each.
	plain := startCLI(t, "tail", "restart", "--server", srv.URL)
	plain.expectLine(`: m5$`)
	srv.Restart(t, true)
	send("m6")
	_, before := plain.expectLine(`: m6$`)
	for _, l := range before {
		if strings.Contains(l, ": m") {
			t.Errorf("printed again after restart: %q", l)
		}
	}
	tail.cmd.Process.Signal(os.Interrupt)
	if code, _ := tail.wait(); code != 0 {
		t.Errorf("tail after SIGINT: exit %d, want 0", code)
	}
}

func TestParseInterleaved(t *testing.T) {
	tests := []struct {
		args []string
		pos  string
		name string
	}{
		{[]string{"room", "--name", "bob"}, "[room]", "bob"},
		{[]string{"--name", "bob", "room"}, "[room]", "bob"},
		{[]string{"room", "hello", "--name", "bob", "world"}, "[room hello world]", "bob"},
		{[]string{"room", "--", "--name", "x"}, "[room --name x]", ""},
	}
	for _, tc := range tests {
		e := &env{}
		fs := newFlagSet("t", e)
		name := fs.String("name", "", "")
		pos, err := parseInterleaved(fs, tc.args)
		if err != nil || fmt.Sprint(pos) != tc.pos || *name != tc.name {
			t.Errorf("parseInterleaved(%q) = %v, name %q, %v; want %s, %q", tc.args, pos, *name, err, tc.pos, tc.name)
		}
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         "plain",
		"two\nlines":    `two\nlines`,
		"\x1b[31mred":   `\x1b[31mred`,
		"tab\tok":       "tab\tok",
		"c1 \u009b end": `c1 \x9b end`,
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

// filler is message i's text: its number and 500 to 699 bytes of padding,
// so that 2,000 of them (about 1.2 MB) need several pages by count and by
// bytes, and are more than a server queues for a slow connection (1 MiB).
func filler(i int) string { return fmt.Sprintf("%d %s", i, strings.Repeat("y", 500+i%200)) }

var fillerLine = regexp.MustCompile(`^\d\d:\d\d (\w+): (\d+) (y+)$`)

// readFiller reads tail's plain output until message last and checks that
// it printed 1..last, each once, in order, with its whole text.
func readFiller(t *testing.T, p *proc, last int) {
	t.Helper()
	want := 1
	for want <= last {
		line, _ := p.expectLine(`^\d\d:\d\d `)
		m := fillerLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %.80q…, want message %d", line, want)
		}
		if got := m[2] + " " + m[3]; got != filler(want) {
			t.Fatalf("line %.80q…, want message %d (seen 1..%d once each)", line, want, want-1)
		}
		want++
	}
}

// slowReader reads at most 4 KiB at a time, each read after pause, and
// none before gate is closed: a consumer much slower than the server.
type slowReader struct {
	r     io.Reader
	gate  <-chan struct{}
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	<-s.gate
	time.Sleep(s.pause)
	return s.r.Read(p[:min(len(p), 4<<10)])
}

// TestTailFromStart has tail --from-start print a room of 2,000 stored
// messages (about 1.2 MB, so the server must page them), each once and in
// order, then messages sent while it catches up, then a live one; also when
// its stdout is read slowly, so that it blocks on the pipe with the
// backlog half printed.
func TestTailFromStart(t *testing.T) {
	srv := chattest.Start(t)
	const stored = 2000
	chattest.Fill(t, srv.URL, "backlog", stored, filler)
	chattest.Fill(t, srv.URL, "backlog-slow", stored, filler)

	t.Run("fast", func(t *testing.T) {
		tail := startCLI(t, "tail", "backlog", "--from-start", "--server", srv.URL)
		tail.expectLine(`^-- joined backlog as `)
		readFiller(t, tail, stored)
		_, errOut, code := roomchat(t, "", "send", "backlog", "live one", "--name", "bob", "--server", srv.URL)
		if code != 0 {
			t.Fatalf("send: exit %d, %s", code, errOut)
		}
		tail.expectLine(`^\d\d:\d\d bob: live one$`)
		if s := tail.Stderr(); s != "" {
			t.Errorf("tail stderr = %q, want nothing", s)
		}
	})

	t.Run("slow reader", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		// The live sender joins first, so that tail's presence tells when
		// tail has joined.
		live, err := client.Dial(ctx, srv.URL, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		j, err := live.Join(ctx, "backlog-slow", "filler", nil)
		if err != nil {
			t.Fatal(err)
		}
		next := int(j.LastSeq) + 1
		gate := make(chan struct{})
		tail := startCLIReader(t, func(r io.Reader) io.Reader {
			return &slowReader{r: r, gate: gate, pause: time.Millisecond}
		}, "tail", "backlog-slow", "--from-start", "--server", srv.URL)
		for {
			env, raw, err := live.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for tail to join: %v", err)
			}
			if env.Type == "presence" && strings.Contains(string(raw), `"event":"join"`) {
				break
			}
		}
		// tail is printing the backlog into a pipe nobody reads; these
		// arrive while it is stuck.
		for range 50 {
			if _, err := live.SendMessage(ctx, "backlog-slow", filler(next)); err != nil {
				t.Fatal(err)
			}
			next++
		}
		close(gate)
		tail.expectLine(`^-- joined backlog-slow as `)
		readFiller(t, tail, next-1)
		if _, err := live.SendMessage(ctx, "backlog-slow", filler(next)); err != nil {
			t.Fatal(err)
		}
		line, _ := tail.expectLine(`^\d\d:\d\d `)
		if m := fillerLine.FindStringSubmatch(line); m == nil || m[2]+" "+m[3] != filler(next) {
			t.Errorf("live line %.80q…, want message %d", line, next)
		}
		if s := tail.Stderr(); s != "" {
			t.Errorf("tail stderr = %q, want nothing (no drop, no reconnect)", s)
		}
	})
}

// TestJoinFromStartPrintsBacklog checks that join prints the whole
// backlog, every page of it, before it reads stdin: with nothing on stdin
// it still prints everything after --from-start, then leaves.
func TestJoinFromStartPrintsBacklog(t *testing.T) {
	srv := chattest.Start(t)
	const stored = 450 // three pages of 200
	chattest.Fill(t, srv.URL, "backlog", stored, filler)
	out, errOut, code := roomchat(t, "", "join", "backlog", "--from-start", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("join: exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != stored+1 || !strings.HasPrefix(lines[0], "-- joined backlog as ") {
		t.Fatalf("join printed %d lines, starting %.60q; want the joined notice and %d messages", len(lines), lines[0], stored)
	}
	for i, l := range lines[1:] {
		if m := fillerLine.FindStringSubmatch(l); m == nil || m[2]+" "+m[3] != filler(i+1) {
			t.Fatalf("line %d = %.60q…, want message %d", i+2, l, i+1)
		}
	}
}

// TestTailJSONPages checks tail --from-start --json on a backlog: the
// joined says more, history events follow, and together with the msg
// events they hold every message once, in order.
func TestTailJSONPages(t *testing.T) {
	srv := chattest.Start(t)
	const stored = 600
	chattest.Fill(t, srv.URL, "pages", stored, filler)
	tail := startCLI(t, "tail", "pages", "--from-start", "--json", "--server", srv.URL)
	var seqs []int64
	pages := 0
	read := func(want int) {
		t.Helper()
		for len(seqs) < want {
			line, _ := tail.expectLine(`.`)
			var ev struct {
				Type    string `json:"type"`
				Payload struct {
					History  []struct{ Seq int64 } `json:"history"`
					Messages []struct{ Seq int64 } `json:"messages"`
					Seq      int64                 `json:"seq"`
					More     bool                  `json:"more"`
				} `json:"payload"`
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("line %.80q: %v", line, err)
			}
			switch ev.Type {
			case "joined":
				if !ev.Payload.More {
					t.Errorf("joined without more on %d stored messages: %.200s", stored, line)
				}
				for _, m := range ev.Payload.History {
					seqs = append(seqs, m.Seq)
				}
			case "history":
				pages++
				for _, m := range ev.Payload.Messages {
					seqs = append(seqs, m.Seq)
				}
			case "msg":
				seqs = append(seqs, ev.Payload.Seq)
			}
		}
	}
	read(stored)
	if _, errOut, code := roomchat(t, "", "send", "pages", "live", "--server", srv.URL); code != 0 {
		t.Fatalf("send: exit %d, %s", code, errOut)
	}
	read(stored + 1)
	chattest.CheckSeqs(t, "seqs printed", seqs, 1, int64(len(seqs)))
	if pages < 2 {
		t.Errorf("%d history events, want at least 2 for %d messages", pages, stored)
	}
}

// TestEventCommand sends custom events with roomchat event to a tail
// --json and an interactive join in the same room.
func TestEventCommand(t *testing.T) {
	srv := chattest.Start(t)
	tail := startCLI(t, "tail", "ev", "--json", "--server", srv.URL)
	tail.expectLine(`"type":"joined"`)
	carol := startCLI(t, "join", "ev", "--name", "carol", "--server", srv.URL)
	carol.expectLine(`^-- joined ev as carol`)

	out, errOut, code := roomchat(t, "", "event", "ev", "reaction", `{"emoji": "👍", "seq": 1}`, "--name", "bob", "--server", srv.URL)
	if code != 0 || out != "" || errOut != "" {
		t.Fatalf("event: exit %d, stdout %q, stderr %q; want 0 and no output", code, out, errOut)
	}
	line, _ := tail.expectLine(`"type":"event"`)
	ev := mustJSON(t, line)
	p := ev["payload"].(map[string]any)
	from := p["from"].(map[string]any)
	data, _ := p["data"].(map[string]any)
	if p["roomID"] != "ev" || p["name"] != "reaction" || from["name"] != "bob" || data["emoji"] != "👍" || data["seq"] != 1.0 {
		t.Errorf("tail --json event = %s", line)
	}
	carol.expectLine(`^\* bob reaction {"emoji":"👍","seq":1}$`)

	// Without JSON the data is null; "-" reads it from stdin.
	if _, errOut, code := roomchat(t, "", "event", "ev", "build.done", "--name", "ci", "--server", srv.URL); code != 0 {
		t.Fatalf("event without data: exit %d, %s", code, errOut)
	}
	carol.expectLine(`^\* ci build.done$`)
	if _, errOut, code := roomchat(t, "[1,\n 2]\n", "event", "ev", "nums", "-", "--server", srv.URL); code != 0 {
		t.Fatalf("event with data from stdin: exit %d, %s", code, errOut)
	}
	carol.expectLine(`^\* guest-\w+ nums \[1,2\]$`)

	// Refusals: the server's sentence, exit 1. Bad JSON never reaches it: exit 2.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bad name!"}, 1, "(bad_payload)"},
		{[]string{"big", `"` + strings.Repeat("d", 9000) + `"`}, 1, "(too_long)"},
		{[]string{"x", "{bad"}, 2, "JSON"},
		{[]string{"x", ""}, 2, "JSON"},
	} {
		_, errOut, code := roomchat(t, "", append(append([]string{"event", "ev"}, tc.args...), "--server", srv.URL)...)
		if code != tc.code || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("event %.30q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
	// A message after them is the next thing either reader prints: the
	// refused events reached nobody.
	if _, errOut, code := roomchat(t, "", "send", "ev", "done", "--name", "bob", "--server", srv.URL); code != 0 {
		t.Fatalf("send: exit %d, %s", code, errOut)
	}
	_, before := carol.expectLine(`bob: done$`)
	for _, l := range before {
		if strings.HasPrefix(l, "* ") {
			t.Errorf("join printed %q for a refused event", l)
		}
	}
	_, before = tail.expectLine(`"message":"done"`)
	for _, l := range before {
		if strings.Contains(l, `"type":"event"`) && !strings.Contains(l, `"build.done"`) && !strings.Contains(l, `"nums"`) {
			t.Errorf("tail printed %s", l)
		}
	}
}
