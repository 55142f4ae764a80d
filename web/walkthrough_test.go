package web_test

// The walkthroughs of docs/operations.md as a new user meets them: the real
// roomchatd binary, the example configuration file exactly as the doc
// prints it, secrets and a token made by the doc's own shell lines, the
// doc's curl command, and pages in headless Chromium. When the doc's
// examples stop working as written, these tests fail.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/roomchat/roomchat/internal/chattest"
)

// TestMain removes the roomchatd that chattest.Bin builds for the
// walkthroughs (these and the cluster's, browser_cluster_test.go).
func TestMain(m *testing.M) { os.Exit(chattest.Main(m)) }

// operationsDoc is docs/operations.md, which the walkthroughs follow.
func operationsDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docBlock returns the body of the first fenced block whose opening fence
// is fence (such as "```toml") after the first line of doc that starts
// with after.
func docBlock(t *testing.T, doc, after, fence string) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	i := 0
	for i < len(lines) && !strings.HasPrefix(lines[i], after) {
		i++
	}
	for i < len(lines) && lines[i] != fence {
		i++
	}
	if i == len(lines) {
		t.Fatalf("docs/operations.md: no %s block after %q", fence, after)
	}
	var body []string
	for i++; i < len(lines) && lines[i] != "```"; i++ {
		body = append(body, lines[i])
	}
	return strings.Join(body, "\n") + "\n"
}

// docCommand returns the shell command of doc that starts with "$ " and
// prefix, its continuation lines joined.
func docCommand(t *testing.T, doc, prefix string) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "$ "+prefix) {
			continue
		}
		cmd := strings.TrimPrefix(l, "$ ")
		for strings.HasSuffix(cmd, `\`) && i+1 < len(lines) {
			i++
			cmd = strings.TrimSuffix(cmd, `\`) + " " + strings.TrimSpace(lines[i])
		}
		return cmd
	}
	t.Fatalf("docs/operations.md: no command $ %s…", prefix)
	return ""
}

// shell runs script with bash in dir with env and returns its standard
// output; it fails t unless the script exits 0 within 20 s.
func shell(t *testing.T, dir string, env []string, script string) string {
	t.Helper()
	for _, tool := range []string{"bash", "openssl", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the doc's examples need %s: %v (scripts/deps.sh installs it)", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash -c %q: %v\n%s", script, err, stderr.String())
	}
	return string(out)
}

// roomchatd runs the binary with args in dir and env to its end (at most
// 20 s) and returns its exit code, standard output and standard error.
func roomchatd(t *testing.T, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chattest.Bin(t, chattest.ServerPackage), args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("roomchatd %q still running after 20 s", args)
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// walkSetup is the doc's set-up in a fresh directory: roomchat.toml as
// "Identity" prints it, and the environment with the secrets its export
// lines make.
type walkSetup struct {
	doc    string
	dir    string
	config string // path of roomchat.toml
	env    []string
	apiKey string
}

func newWalkSetup(t *testing.T) *walkSetup {
	t.Helper()
	w := &walkSetup{doc: operationsDoc(t), dir: t.TempDir()}
	w.config = filepath.Join(w.dir, "roomchat.toml")
	if err := os.WriteFile(w.config, []byte(docBlock(t, w.doc, "A complete file", "```toml")), 0o644); err != nil {
		t.Fatal(err)
	}
	// The doc's start-up lines: the exports as written, then roomchatd
	// (started by the test, on a loopback port).
	var exports []string
	for _, l := range strings.Split(docBlock(t, w.doc, "A complete file", "```sh"), "\n") {
		if strings.HasPrefix(l, "export ") {
			exports = append(exports, l)
		}
	}
	if len(exports) != 2 {
		t.Fatalf("docs/operations.md: want the two export lines before roomchatd, got %q", exports)
	}
	out := shell(t, w.dir, chattest.Environ(), strings.Join(exports, "\n")+"\n"+`printf '%s\n%s\n' "$ROOMCHAT_JWT_SECRET" "$ROOMCHAT_API_KEYS"`)
	secrets := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(secrets) != 2 || secrets[0] == "" || secrets[1] == "" {
		t.Fatalf("the doc's exports made %q", out)
	}
	w.apiKey = secrets[1]
	w.env = append(chattest.Environ(), "ROOMCHAT_JWT_SECRET="+secrets[0], "ROOMCHAT_API_KEYS="+secrets[1])
	return w
}

// start runs roomchatd -config roomchat.toml on a loopback port with a
// SQLite file, as the doc starts it.
func (w *walkSetup) start(t *testing.T) *chattest.Server {
	t.Helper()
	return chattest.StartEnv(t, w.env, "-config", w.config, "-addr", "127.0.0.1:0", "-db", filepath.Join(w.dir, "roomchat.db"))
}

// TestWalkthroughPolicy is the "Done means" of namespaces, policy and
// identity (SPEC §9–§10) with the doc's example file: -check-config prints
// what the doc shows; a news: room that a browser reads and cannot post to,
// and says why, while the doc's curl with the API key posts to it; a staff:
// room that a browser without a token cannot join, and says why, and that
// one with the doc's shell-minted token joins; a typo stops start-up with
// one line naming the file, the line and the key.
func TestWalkthroughPolicy(t *testing.T) {
	w := newWalkSetup(t)

	// ---- -check-config on the good file prints what the doc prints -------
	code, out, errOut := roomchatd(t, w.dir, w.env, "-config", "roomchat.toml", "-check-config")
	if code != 0 {
		t.Fatalf("-check-config on the doc's file: exit %d\n%s", code, errOut)
	}
	const prompt = "$ ROOMCHAT_JWT_SECRET=… ROOMCHAT_API_KEYS=… roomchatd -config roomchat.toml -check-config\n"
	if want := docBlock(t, w.doc, "**`-check-config`**", "```"); prompt+out != want {
		t.Errorf("-check-config printed\n%s\nwant, as docs/operations.md shows it,\n%s", prompt+out, want)
	}

	// ---- a bad file stops start-up with one line: the doc's three --------
	// Each doc line comes from roomchat.toml changed as its key says: a
	// typo in staff's join, an unknown value of news's post, and the good
	// file without the HMAC secret in the environment.
	good, err := os.ReadFile(w.config)
	if err != nil {
		t.Fatal(err)
	}
	errBlock := strings.Split(strings.TrimSuffix(docBlock(t, w.doc, "**Errors are one line**", "```"), "\n"), "\n")
	noSecret := []string{}
	for _, kv := range w.env {
		if !strings.HasPrefix(kv, "ROOMCHAT_JWT_SECRET=") {
			noSecret = append(noSecret, kv)
		}
	}
	bad := []struct {
		old, new string
		env      []string
	}{
		{"\njoin = \"token\"\n", "\njion = \"token\"\n", w.env},
		{"\npost = \"api\"\n", "\npost = \"admins\"\n", w.env},
		{"", "", noSecret},
	}
	if len(errBlock) != 2*len(bad) {
		t.Fatalf("docs/operations.md: want %d commands and their lines after \"Errors are one line\", got %q", len(bad), errBlock)
	}
	for i, b := range bad {
		if b.old != "" && strings.Count(string(good), b.old) != 1 {
			t.Fatalf("the doc's file has not one %q", b.old)
		}
		dir := filepath.Join(w.dir, "bad"+strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "roomchat.toml"), []byte(strings.Replace(string(good), b.old, b.new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		if cmd := errBlock[2*i]; cmd != "$ roomchatd -config roomchat.toml" {
			t.Fatalf("docs/operations.md: command %q, want $ roomchatd -config roomchat.toml", cmd)
		}
		want := errBlock[2*i+1] + "\n"
		// The doc's command, on a loopback port should it start after all.
		for _, args := range [][]string{
			{"-config", "roomchat.toml", "-addr", "127.0.0.1:0", "-db", ":memory:"},
			{"-config", "roomchat.toml", "-check-config"},
		} {
			code, out, errOut := roomchatd(t, dir, b.env, args...)
			if code != 1 || errOut != want || out != "" {
				t.Errorf("roomchatd %q on the doc's file with %q for %q: exit %d, stdout %q, stderr %q; want exit 1 and the doc's one line %q",
					args, b.new, b.old, code, out, errOut, want)
			}
		}
	}

	// ---- the server with the good file ------------------------------------
	srv := w.start(t)
	if logs := srv.Logs(); !regexp.MustCompile(`msg=policy file=\S*roomchat.toml hash=\w+ namespaces=3 auth=optional`).MatchString(logs) {
		t.Errorf("start-up logs lack the policy line:\n%s", logs)
	}
	browser := newBrowser(t)

	// A news: room: the browser reads...
	reader := newPage(t, browser, "reader")
	reader.do(chromedp.Navigate(srv.URL + "/r/news:launch"))
	reader.chooseName("Reader")
	reader.waitConnected()
	// ...and cannot post: joined says post = "api", so the page disables
	// its input from the join on and says why.
	const why = `This room is read-only: its messages come from an application.`
	reader.waitJS("the input disabled, with the reason", `document.getElementById('message-input').disabled &&
		document.getElementById('send').disabled && roomchat.postRule === 'api' &&
		!document.getElementById('muted-note').hidden && document.getElementById('muted-note').textContent === `+jsString(why))

	// The doc's curl, with the API key, posts; the browser sees it.
	curl := docCommand(t, w.doc, "curl -s -X POST localhost:8080/api/rooms/news:launch/messages")
	curl = strings.ReplaceAll(curl, "localhost:8080", srv.Addr)
	res := shell(t, w.dir, append(w.env, "KEY="+w.apiKey), curl)
	if !strings.Contains(res, `"roomID":"news:launch"`) || !strings.Contains(res, `"message":"v2 is out"`) {
		t.Errorf("the doc's curl answered %q", res)
	}
	reader.waitMessage("v2 is out", "release-bot")

	// A staff: room: a browser without a token cannot join, and says why.
	anon := newPage(t, browser, "anon")
	anon.do(chromedp.Navigate(srv.URL + "/r/staff:support"))
	anon.chooseName("Anon")
	anon.waitJS("the refusal, naming the rule", `/Not allowed: .*staff/.test(document.getElementById('error').textContent) && !roomchat.joined`)
	if got, want := evalJS[string](anon, `document.getElementById('error').textContent`), `Not allowed: namespace "staff": joining needs a token whose rooms claim grants this room, or the room's key (join = "token").`; got != want {
		t.Errorf("anon: the page says %q, want %q", got, want)
	}

	// One with the token the doc's shell lines mint joins as its sub.
	mint := docBlock(t, w.doc, "In a shell, with `openssl`", "```sh")
	tok := strings.TrimSpace(shell(t, w.dir, w.env, mint))
	bob := newPage(t, browser, "bob")
	bob.do(chromedp.Navigate(srv.URL + "/r/staff:support?token=" + tok))
	bob.waitConnected()
	// The token's name claim fixes the name: the page does not ask for one.
	if evalJS[bool](bob, `document.getElementById('name-dialog').open || !document.getElementById('change-name').hidden`) {
		t.Error("the page asks for a name although the token fixes it")
	}
	if id, name := evalJS[string](bob, `roomchat.userID`), evalJS[string](bob, `document.getElementById('my-name').textContent`); id != "bob" || name != "Bob" {
		t.Errorf("with the doc's token: userID %q, name %q; want bob, Bob", id, name)
	}
	bob.do(chromedp.SendKeys(chromedp.ID("message-input"), "staff only"+kb.Enter))
	bob.waitMessage("staff only", "Bob")

	for _, p := range []*pageT{reader, anon, bob} {
		if err := p.problems(); err != nil {
			t.Error(err)
		}
	}
}

// waitFrame waits until a WebSocket event recorded after the first n
// satisfies match.
func (p *pageT) waitFrame(n int, what string, match func(wsEvent) bool) {
	p.t.Helper()
	if !chattest.Poll(waitFor, func() bool {
		for _, f := range p.framesSince(n) {
			if match(f) {
				return true
			}
		}
		return false
	}) {
		var seen []string
		for _, f := range p.framesSince(n) {
			seen = append(seen, fmt.Sprintf("sent=%v %s %s %s", f.Sent, f.Type, f.ID, f.Payload))
		}
		p.t.Fatalf("%s: waiting %v for %s; frames:\n%s", p.name, waitFor, what, strings.Join(seen, "\n"))
	}
}

// TestWalkthroughModeration is the "Done means" of moderation (SPEC §11)
// with the doc's example file, as three people meet it in three browsers:
// the creator makes a room on the landing page and opens it; a guest opens
// the share link and posts spam; the creator removes the message and bans
// the guest, with a reason, from the member menu; the guest is told why and
// a reload (the same identity) is refused, saying so; a third browser
// joining later sees "removed by a moderator", never the text.
func TestWalkthroughModeration(t *testing.T) {
	w := newWalkSetup(t)
	srv := w.start(t)
	browser := newBrowser(t)

	// ---- browser 1 creates a room on the landing page and opens it -------
	owner := newPage(t, browser, "owner")
	owner.do(chromedp.Navigate(srv.URL + "/"))
	owner.grantClipboard(srv.URL)
	owner.do(chromedp.Click(chromedp.ID("create-room")))
	owner.waitJS("the created room, its link copied", `!document.getElementById('created').hidden &&
		document.getElementById('copy-status').textContent === 'Link copied.'`)
	roomID := evalJS[string](owner, `document.getElementById('created').dataset.roomId`)
	shareLink := evalJS[string](owner, `document.getElementById('share-link').value`)
	if want := srv.URL + "/r/" + roomID; shareLink != want || clipboardText(owner) != want {
		t.Fatalf("share link %q, clipboard %q; want %q", shareLink, clipboardText(owner), want)
	}
	owner.do(chromedp.Click(chromedp.ID("open-room")))
	owner.waitJS("the room page", `location.pathname === '/r/' + `+jsString(roomID))
	owner.chooseName("Olga")
	owner.waitConnected()
	owner.waitJS("the moderator's tools", `!document.getElementById('mod-panel').hidden && roomchat.moderator`)

	// ---- browser 2, a guest, opens the share link and posts spam ---------
	guest := newPage(t, browser, "guest")
	guest.do(chromedp.Navigate(shareLink))
	guest.chooseName("Spammer")
	guest.waitConnected()
	if evalJS[bool](guest, `!document.getElementById('mod-panel').hidden || document.querySelector('.mod-remove, .mod-toggle') !== null`) {
		t.Error("the guest sees moderator tools")
	}
	const spamText = "CHEAP PILLS at spam.example"
	guest.do(chromedp.SendKeys(chromedp.ID("message-input"), spamText+kb.Enter))
	guest.waitMessage(spamText, "Spammer")
	spam := owner.waitMessage(spamText, "Spammer")
	guestID := evalJS[string](guest, `roomchat.userID`)

	// ---- browser 1 removes the spam and bans the guest -------------------
	owner.do(chromedp.Click(chromedp.CSS(`#messages .message[data-seq="` + spam.Seq + `"] .mod-remove`)))
	removedJS := `(() => {
		const m = document.querySelector('#messages .message[data-seq="` + spam.Seq + `"]');
		return m !== null && m.querySelector('.text').textContent === 'removed by a moderator' &&
			!document.body.textContent.includes(` + jsString(spamText) + `);
	})()`
	owner.waitJS("the spam removed", removedJS)
	owner.waitJS("the removal confirmed", `document.getElementById('mod-status').textContent === 'Message removed.'`)
	guest.waitJS("the spam removed for the guest too", removedJS)

	member := `#members .member[data-user-id="` + guestID + `"]`
	owner.do(chromedp.Click(chromedp.CSS(member + ` .mod-toggle`)))
	owner.waitJS("the member menu, its reason field focused", `document.activeElement === document.querySelector(`+jsString(member+` .mod-reason`)+`)`)
	owner.do(
		chromedp.SendKeys(chromedp.CSS(member+` .mod-reason`), "spam"),
		chromedp.Click(chromedp.CSS(member+` button[data-action="ban"]`)),
	)
	owner.waitJS("the ban confirmed", `document.getElementById('mod-status').textContent === 'Banned Spammer.'`)
	owner.waitJS("the guest gone from the members", `document.querySelector(`+jsString(member)+`) === null &&
		document.getElementById('member-count').textContent === '1'`)

	// ---- the guest sees why, and cannot come back as the same user -------
	guest.waitJS("the ban and its reason", `document.getElementById('error').textContent ===
		'You were banned from this room by Olga, until a moderator lifts the ban. Reason: spam.' &&
		document.getElementById('status-text').textContent === 'Banned from this room' &&
		document.getElementById('message-input').disabled && !roomchat.joined`)
	guest.do(chromedp.Reload())
	guest.waitJS("the ban after a reload", `document.getElementById('error').textContent ===
		'You are banned from this room: you are banned from room `+roomID+` until a moderator lifts it (spam).' &&
		document.getElementById('status-text').textContent === 'Banned from this room' &&
		roomchat.userID === `+jsString(guestID)+` && !roomchat.joined && document.getElementById('message-input').disabled`)

	// ---- browser 3 joins later: the tombstone, not the text --------------
	late := newPage(t, browser, "late")
	late.do(chromedp.Navigate(shareLink))
	late.chooseName("Lena")
	late.waitConnected()
	late.waitJS("the tombstone", removedJS)
	late.waitJS("the redaction line", `[...document.querySelectorAll('#messages .message.redaction .text')].some(t => t.textContent === 'Olga removed a message.')`)
	if evalJS[bool](late, `!document.getElementById('mod-panel').hidden || document.querySelector('.mod-remove, .mod-toggle') !== null`) {
		t.Error("the later member sees moderator tools")
	}
	for _, f := range late.framesSince(0) {
		if strings.Contains(string(f.Payload), spamText) {
			t.Errorf("the later browser received the removed text: %s %s", f.Type, f.Payload)
		}
	}

	for _, p := range []*pageT{owner, guest, late} {
		if err := p.problems(); err != nil {
			t.Error(err)
		}
	}
}
