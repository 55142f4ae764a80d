package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
)

// waitStderr waits (at most 10 s) until p's stderr contains s.
func (p *proc) waitStderr(s string) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Stderr(), s) {
		if time.Now().After(deadline) {
			p.t.Fatalf("stderr %q never contained %q", p.Stderr(), s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestModeration: create prints the owner key beside the link; with it the
// moderation commands redact, mute, unmute, configure, ban, kick and unban
// over the HTTP API; the targets' join sessions show what happened (a kick
// or a ban ends them with exit 1 and the reason); tail prints the
// redaction, and a later reader sees the tombstone, not the text (SPEC §11).
func TestModeration(t *testing.T) {
	srv := chattest.Start(t)
	out, errOut, code := roomchat(t, "", "create", "--server", srv.URL)
	link := strings.TrimSpace(out)
	m := regexp.MustCompile(`^http://.+/r/([A-Za-z0-9_-]{21})$`).FindStringSubmatch(link)
	if code != 0 || m == nil {
		t.Fatalf("create: exit %d, stdout %q; want the share link alone on stdout", code, out)
	}
	room := m[1]
	km := regexp.MustCompile(`(?m)^owner key: (k1\.\S+)\nmoderator link: (\S+)$`).FindStringSubmatch(errOut)
	if km == nil || km[2] != link+"#key="+km[1] {
		t.Fatalf("create stderr %q; want the owner key and the moderator link", errOut)
	}
	key := km[1]
	srvFlag := []string{"--server", srv.URL}

	watch := startCLI(t, "tail", link)
	watch.expectLine(`^-- joined ` + room)
	mallory := startCLI(t, "join", link, "--name", "mallory")
	mallory.expectLine(`^-- joined ` + room)
	fmt.Fprintln(mallory.stdin, "buy cheap pills")
	watch.expectLine(`mallory: buy cheap pills$`)

	// Without the key, or with a wrong one, the server refuses: one line,
	// exit 1. A bad command line is exit 2.
	for _, args := range [][]string{
		{"redact", room, "1"},
		{"redact", room, "1", "--key", "k1.forged"},
		{"mute", room, "mallory"},
	} {
		_, errOut, code := roomchat(t, "", append(args, srvFlag...)...)
		if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "(forbidden)") {
			t.Errorf("%v: exit %d, stderr %q; want 1 and the server's refusal", args, code, errOut)
		}
	}
	for _, args := range [][]string{
		{"redact", room, "x", "--key", key},
		{"ban", room},
		{"ban", room, "mallory", "--for", "soon", "--key", key},
		{"configure", room, "--post", "everyone", "--key", key},
	} {
		if _, errOut, code := roomchat(t, "", append(args, srvFlag...)...); code != 2 {
			t.Errorf("%v: exit %d, stderr %q; want a usage error", args, code, errOut)
		}
	}

	out, errOut, code = roomchat(t, "", "redact", room, "1", "--reason", "spam", "--key", key, "--server", srv.URL)
	if code != 0 || strings.TrimSpace(out) != "removed message 1 from "+room+" (redaction seq 2)" {
		t.Fatalf("redact: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	watch.expectLine(`^-- owner removed message 1$`)
	mallory.expectLine(`^-- owner removed message 1$`)

	// A mute refuses mallory's lines until it is lifted.
	out, errOut, code = roomchat(t, "", "mute", room, "mallory", "--for", "10m", "--key", key, "--server", srv.URL)
	if code != 0 || !regexp.MustCompile(`^muted mallory \(\S+\) in `+room+` until 20\d\d-`).MatchString(out) {
		t.Fatalf("mute: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	mallory.expectLine(`^-- you are muted in ` + room + ` until `)
	fmt.Fprintln(mallory.stdin, "more pills")
	mallory.waitStderr("(muted)")
	out, errOut, code = roomchatEnv(t, []string{"ROOMCHAT_KEY=" + key}, "", "unmute", room, "mallory", "--server", srv.URL)
	if code != 0 || !strings.HasPrefix(out, "unmuted mallory (") {
		t.Fatalf("unmute with $ROOMCHAT_KEY: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	mallory.expectLine(`^-- you may post in ` + room + ` again$`)

	// The post policy: only moderators, then every member again.
	out, errOut, code = roomchat(t, "", "configure", room, "--post", "moderators", "--key", key, "--server", srv.URL)
	if code != 0 || strings.TrimSpace(out) != room+": moderators and owners only may post" {
		t.Fatalf("configure: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Every session in the room is told (configured); one that joins now
	// is told by its joined.
	watch.expectLine(`^-- owner set posting in ` + room + ` to moderators only$`)
	mallory.expectLine(`^-- owner set posting in ` + room + ` to moderators only$`)
	late := startCLI(t, "tail", link)
	late.expectLine(`^-- joined ` + room)
	late.expectLine(`^-- posting in ` + room + ` is set to moderators only: members' messages are refused$`)
	if _, errOut, code := roomchat(t, "", "send", room, "hello?", "--server", srv.URL); code != 1 || !strings.Contains(errOut, "(forbidden)") {
		t.Errorf("send while only moderators post: exit %d, stderr %q", code, errOut)
	}
	if out, errOut, code := roomchat(t, "", "send", room, "announcement", "--key", key, "--server", srv.URL); code != 2 || out != "" {
		// send has no --key: the owner posts with tail/join --key instead.
		t.Errorf("send --key: exit %d, stdout %q, stderr %q; want a usage error", code, out, errOut)
	}
	if out, errOut, code := roomchat(t, "announcement\n", "join", room, "--name", "boss", "--key", key, "--server", srv.URL); code != 0 || !strings.Contains(out, "boss: announcement") {
		t.Errorf("join --key while only moderators post: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, _, code := roomchat(t, "", "configure", room, "--post", "members", "--key", key, "--json", "--server", srv.URL); code != 0 || mustJSON(t, out)["post"] != "members" {
		t.Errorf("configure --json: exit %d, stdout %q", code, out)
	}
	late.expectLine(`^-- owner set posting in ` + room + ` to every member$`)

	// A ban ends mallory's session with the reason.
	out, errOut, code = roomchat(t, "", "ban", room, "mallory", "--for", "1h", "--reason", "spam", "--key", key, "--server", srv.URL)
	if code != 0 || !regexp.MustCompile(`^banned mallory \((\S+)\) from `+room+` until 20\d\d-`).MatchString(out) {
		t.Fatalf("ban: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	mallorysID := regexp.MustCompile(`\((\S+)\)`).FindStringSubmatch(out)[1]
	mallory.expectLine(`^-- you were banned from ` + room + ` until .* by owner: spam$`)
	if code, _ := mallory.wait(); code != 1 || !strings.Contains(mallory.Stderr(), "banned from "+room) {
		t.Errorf("banned join: exit %d, stderr %q; want 1 and the ban", code, mallory.Stderr())
	}
	watch.expectLine(`^-- mallory left`)

	// A kick ends a session too.
	eve := startCLI(t, "tail", link, "--name", "eve")
	eve.expectLine(`^-- joined ` + room)
	if out, errOut, code := roomchat(t, "", "kick", room, "eve", "--reason", "bye", "--key", key, "--server", srv.URL); code != 0 || !strings.HasPrefix(out, "kicked eve (") {
		t.Fatalf("kick: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	eve.expectLine(`^-- you were kicked out of ` + room + ` by owner: bye$`)
	if code, _ := eve.wait(); code != 1 || !strings.Contains(eve.Stderr(), "kicked out of "+room) {
		t.Errorf("kicked tail: exit %d, stderr %q", code, eve.Stderr())
	}
	if _, errOut, code := roomchat(t, "", "kick", room, "eve", "--key", key, "--server", srv.URL); code != 1 || !strings.Contains(errOut, "(not_found)") {
		t.Errorf("kick someone not there: exit %d, stderr %q", code, errOut)
	}

	// A later reader sees the tombstone and the redaction, not the text.
	out, _, code = roomchat(t, "", "join", room, "--from-start", "--server", srv.URL)
	if code != 0 || strings.Contains(out, "pills") || !strings.Contains(out, "mallory: (removed by a moderator)") || !strings.Contains(out, "-- owner removed message 1") {
		t.Errorf("join --from-start after the redaction: exit %d, stdout %q", code, out)
	}

	out, errOut, code = roomchat(t, "", "unban", room, mallorysID, "--key", key, "--server", srv.URL)
	if code != 0 || strings.TrimSpace(out) != "unbanned "+mallorysID+" in "+room {
		t.Errorf("unban: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := roomchat(t, "", "unban", room, mallorysID, "--key", key, "--server", srv.URL); code != 1 || !strings.Contains(errOut, "(not_found)") {
		t.Errorf("unban again: exit %d, stderr %q", code, errOut)
	}
}

// A room of a namespace where only the HTTP API posts (SPEC §9 post =
// "api"): tail says so as it joins, before any line is refused.
func TestTailSaysReadOnly(t *testing.T) {
	const config = "[namespace.news]\npost = \"api\"\n"
	srv := chattest.StartInProcess(t, chattest.WithConfig(t, config, nil, 0))
	p := startCLI(t, "tail", "news:launch", "--server", srv.URL)
	p.expectLine(`^-- joined news:launch`)
	p.expectLine(`^-- news:launch is read-only here: only the server's HTTP API posts to it$`)
}
