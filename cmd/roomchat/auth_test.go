package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/identity/identitytest"
)

// authConfig turns signed identity on (SPEC §10) and makes staff a
// private namespace (§9): its rooms need a token that grants them.
const authConfig = `
[auth]
mode = "optional"
algorithms = ["HS256"]
hmac_secret_env = "ROOMCHAT_JWT_SECRET"
leeway = "0s"

[namespace.staff]
join = "token"
`

// staffToken is a token for sub granting every staff room, expiring at exp.
func staffToken(t *testing.T, sub string, exp time.Time) string {
	return identitytest.Token(t, sub, exp, map[string]any{"staff:*": "member"})
}

// TestTokenCommands: --token and $ROOMCHAT_TOKEN reach the server on every
// command; create --namespace makes a staff room; send and tail work on
// NS:ID rooms; without a token the private room's refusal, and with a bad
// token the 401, are one line and exit 1.
func TestTokenCommands(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "roomchat.toml")
	if err := os.WriteFile(cfg, []byte(authConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := chattest.StartEnv(t, append(chattest.Environ(), "ROOMCHAT_JWT_SECRET="+identitytest.Secret),
		"-addr", "127.0.0.1:0", "-db", ":memory:", "-config", cfg)
	tok := staffToken(t, "ada", time.Now().Add(time.Hour))

	out, errOut, code := roomchat(t, "", "create", "--namespace", "staff", "--token", tok, "--server", srv.URL)
	m := regexp.MustCompile(`^http://.+/r/(staff:[A-Za-z0-9_-]{21})$`).FindStringSubmatch(strings.TrimSpace(out))
	if code != 0 || m == nil {
		t.Fatalf("create --namespace staff: exit %d, stdout %q, stderr %q; want a /r/staff:ID link", code, out, errOut)
	}
	link, room := strings.TrimSpace(out), m[1]

	tail := startCLI(t, "tail", link, "--token", tok)
	tail.expectLine(`^-- joined ` + room)

	// The sends are another identity's: a connection of ada's would take
	// the tail's over, which would end it (TestReplacedEndsFollow).
	other := staffToken(t, "bob", time.Now().Add(time.Hour))
	out, errOut, code = roomchat(t, "", "send", room, "from the flag", "--token", other, "--server", srv.URL)
	if code != 0 || strings.TrimSpace(out) != "1" {
		t.Fatalf("send --token: exit %d, stdout %q, stderr %q; want seq 1", code, out, errOut)
	}
	tail.expectLine(`: from the flag$`)
	out, errOut, code = roomchatEnv(t, []string{"ROOMCHAT_TOKEN=" + other}, "", "send", link, "from the environment")
	if code != 0 || strings.TrimSpace(out) != "2" {
		t.Fatalf("send with $ROOMCHAT_TOKEN: exit %d, stdout %q, stderr %q; want seq 2", code, out, errOut)
	}
	tail.expectLine(`: from the environment$`)

	for _, args := range [][]string{
		{"send", room, "no token"},
		{"tail", room},
		{"join", room},
	} {
		_, errOut, code := roomchat(t, "", append(args, "--server", srv.URL)...)
		if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "(forbidden)") || !strings.Contains(errOut, "staff") {
			t.Errorf("%v without a token: exit %d, stderr %q; want 1 and one line naming the namespace's rule", args, code, errOut)
		}
	}
	bad := staffToken(t, "ada", time.Now().Add(-time.Minute))
	for _, args := range [][]string{
		{"create"},
		{"send", room, "expired"},
		{"tail", room},
	} {
		_, errOut, code := roomchatEnv(t, []string{"ROOMCHAT_TOKEN=" + bad}, "", append(args, "--server", srv.URL)...)
		if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "refused the connection (401)") {
			t.Errorf("%v with an expired token: exit %d, stderr %q; want 1 and one line saying 401", args, code, errOut)
		}
	}
	_, errOut, code = roomchat(t, "", "create", "--namespace", "x", "--server", srv.URL)
	if code != 2 {
		t.Errorf("create --namespace x: exit %d, stderr %q; want a usage error", code, errOut)
	}
}

// TestTailStopsOnTokenExpiry: when the server closes the connection with
// 4001, tail does not reconnect with the dead token: it says why in one
// line and exits 1. (In process, for a short grace period.)
func TestTailStopsOnTokenExpiry(t *testing.T) {
	srv := chattest.StartInProcess(t, chattest.WithConfig(t, authConfig, map[string]string{"ROOMCHAT_JWT_SECRET": identitytest.Secret}, 300*time.Millisecond))

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	tok := staffToken(t, "ada", time.Now().Add(1500*time.Millisecond))
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"tail", "staff:ops", "--server", srv.URL, "--token", tok}, strings.NewReader(""), &out, &errOut)
	if ctx.Err() != nil {
		t.Fatal("tail did not end after the 4001 close")
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	last := lines[len(lines)-1]
	if code != exitFailure || !strings.Contains(last, "4001") || strings.Contains(errOut.String(), "reconnecting") {
		t.Fatalf("tail after the token expired: exit %d, stderr %q; want 1, a last line about 4001 and no reconnect", code, errOut.String())
	}
}

// TestReplacedEndsFollow: tail and join with a token end when another
// connection of the same identity takes over (SPEC §10: one connection
// per identity), with one line naming the user and exit 1, instead of
// reconnecting and taking it back, for ever. The one that took over keeps
// its connection.
func TestReplacedEndsFollow(t *testing.T) {
	srv := chattest.StartInProcess(t, chattest.WithConfig(t, authConfig, map[string]string{"ROOMCHAT_JWT_SECRET": identitytest.Secret}, time.Second))
	tok := staffToken(t, "ada", time.Now().Add(time.Hour))
	bob := staffToken(t, "bob", time.Now().Add(time.Hour))
	for _, cmd := range []string{"tail", "join"} {
		t.Run(cmd, func(t *testing.T) {
			room := "staff:" + cmd
			first := startCLI(t, cmd, room, "--server", srv.URL, "--token", tok)
			first.expectLine(`^-- joined ` + room)
			second := startCLI(t, "tail", room, "--server", srv.URL, "--token", tok)
			second.expectLine(`^-- joined ` + room)

			code, _ := first.wait()
			errOut := first.Stderr()
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if code != exitFailure || len(lines) != 1 || lines[0] != "roomchat: another connection of ada took over this session" {
				t.Fatalf("%s after another connection of its identity: exit %d, stderr %q; want 1 and one line saying so", cmd, code, errOut)
			}
			out, errOut, code := roomchat(t, "", "send", room, "still there?", "--server", srv.URL, "--token", bob)
			if code != 0 {
				t.Fatalf("send as bob: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			second.expectLine(`: still there\?$`)
			if s := second.Stderr(); s != "" {
				t.Errorf("the tail that took over wrote %q on stderr; want nothing (no drop, no reconnect)", s)
			}
		})
	}
}
