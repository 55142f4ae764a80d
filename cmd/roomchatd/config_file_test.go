package main

// The configuration file (SPEC §9) with the built binary: a typo stops
// start-up, -check-config prints the effective policy, SIGHUP reloads a
// good file and refuses a bad one, and two nodes of a cluster loading the
// same file decide the same.

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// writeConfig writes text to path.
func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

var policyHash = regexp.MustCompile(`(?m)^roomchat_policy_info\{hash="([0-9a-f]+)"\} 1$`)

// metricsHash is the hash of roomchat_policy_info on node's /metrics.
func metricsHash(t *testing.T, base string) string {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := policyHash.FindSubmatch(b)
	if m == nil {
		t.Fatalf("/metrics has no roomchat_policy_info line:\n%s", b)
	}
	return string(m[1])
}

// logHashes are the hashes of the "policy" and "config reloaded" log
// lines, in order.
func logHashes(logs string) []string {
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, "msg=policy ") && !strings.Contains(line, `msg="config reloaded"`) {
			continue
		}
		if m := regexp.MustCompile(`\bhash=([0-9a-f]+)`).FindStringSubmatch(line); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// A typo stops start-up with exit 1 and one stderr line naming the file,
// the line and the key.
func TestConfigTypoStopsStart(t *testing.T) {
	for _, tc := range []struct{ name, text, line, key string }{
		{"unknown key", "[defaults]\npost = \"members\"\n\n[namespace.news]\npots = \"moderators\"\n", ":5", "namespace.news.pots"},
		{"bad value", "[namespace.news]\njoin_leave = false\npost = \"admins\"\n", ":3", "namespace.news.post"},
		{"bad type", "[defaults]\ncapacity = \"many\"\n", ":2", "defaults.capacity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "roomchat.toml")
			writeConfig(t, file, tc.text)
			cmd := chattest.Command(t, "-addr", "127.0.0.1:0", "-db", ":memory:", "-config", file)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Fatalf("exit %d (%v), want 1; stderr:\n%s", code, err, stderr.String())
			}
			out := strings.TrimRight(stderr.String(), "\n")
			if strings.Contains(out, "\n") {
				t.Fatalf("stderr has more than one line:\n%s", out)
			}
			for _, want := range []string{file + tc.line, tc.key} {
				if !strings.Contains(out, want) {
					t.Fatalf("stderr %q does not name %q", out, want)
				}
			}
		})
	}
}

// -check-config prints every namespace with every field, inherited ones
// included, and exits 0.
func TestCheckConfigPrints(t *testing.T) {
	file := filepath.Join(t.TempDir(), "roomchat.toml")
	writeConfig(t, file, "[defaults]\ntyping = false\ncapacity = 50\n\n[namespace.news]\npost = \"moderators\"\n\n[namespace.staff]\njoin = \"token\"\ncapacity = 7\n")
	cmd := chattest.Command(t, "-config", file, "-check-config")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("-check-config: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	section := func(name string) string {
		i := strings.Index(out, "["+name+"]\n")
		if i < 0 {
			t.Fatalf("no [%s] in:\n%s", name, out)
		}
		s := out[i+len(name)+3:]
		if j := strings.Index(s, "\n["); j >= 0 {
			s = s[:j]
		}
		return s
	}
	for name, want := range map[string][]string{
		"defaults":        {`post = "members"`, "typing = false", "capacity = 50"},
		"namespace.news":  {`post = "moderators"`, "typing = false", "capacity = 50", `join = "open"`},
		"namespace.staff": {`join = "token"`, "typing = false", "capacity = 7", `post = "members"`},
	} {
		s := section(name)
		for _, w := range want {
			if !strings.Contains(s, w+"\n") {
				t.Errorf("[%s] lacks %q:\n%s", name, w, s)
			}
		}
	}
	if !regexp.MustCompile(`hash [0-9a-f]+`).MatchString(out) {
		t.Errorf("no hash in:\n%s", out)
	}
}

// SIGHUP with a good file changes the next decision, on connections
// already open too; with a bad file it is refused with a log line and
// the old policy stays. The log and /metrics show the hash in force.
func TestConfigReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "roomchat.toml")
	writeConfig(t, file, "[namespace.news]\n")
	d := chattest.Start(t, "-config", file)
	hash0 := metricsHash(t, d.URL)
	if h := logHashes(d.Logs()); len(h) != 1 || h[0] != hash0 {
		t.Fatalf("start logged hashes %v, want [%s] as /metrics shows", h, hash0)
	}

	c := chattest.Dial(t, d.URL, "")
	c.Join(t, "news:r")
	c.SendAck(t, "before", "members may post")
	c.Send(t, `{"type":"join","payload":{"roomID":"extra:r"}}`)
	c.ExpectError(t, protocol.CodeUnknownNamespace)

	writeConfig(t, file, "[namespace.news]\npost = \"moderators\"\n\n[namespace.extra]\n")
	d.Signal(syscall.SIGHUP)
	if !chattest.Poll(10*time.Second, func() bool { return len(logHashes(d.Logs())) == 2 }) {
		t.Fatalf("no reload logged:\n%s", d.Logs())
	}
	hash1 := logHashes(d.Logs())[1]
	if hash1 == hash0 || metricsHash(t, d.URL) != hash1 {
		t.Fatalf("after the reload: logged %s (before %s), /metrics %s", hash1, hash0, metricsHash(t, d.URL))
	}
	c.Send(t, `{"type":"msg","id":"after","payload":{"roomID":"news:r","message":"now forbidden"}}`)
	e := c.ExpectError(t, protocol.CodeForbidden)
	if !strings.Contains(e.Message, `namespace "news"`) || !strings.Contains(e.Message, `post = "moderators"`) {
		t.Fatalf("forbidden %q does not name the namespace and the rule", e.Message)
	}
	c.Join(t, "extra:r")

	// A bad file: refused, logged, the policy in force stays.
	writeConfig(t, file, "[namespace.news]\npost = \"moderators\"\n\n[namespace.extra]\ntypo = 1\n")
	d.Signal(syscall.SIGHUP)
	if !chattest.Poll(10*time.Second, func() bool { return strings.Contains(d.Logs(), "config reload refused") }) {
		t.Fatalf("no refusal logged:\n%s", d.Logs())
	}
	refusal := d.Logs()[strings.Index(d.Logs(), "config reload refused"):]
	refusal = refusal[:strings.IndexByte(refusal, '\n')]
	if !strings.Contains(refusal, file) || !strings.Contains(refusal, "namespace.extra.typo") {
		t.Fatalf("refusal %q does not name the file and the key", refusal)
	}
	if h := metricsHash(t, d.URL); h != hash1 {
		t.Fatalf("/metrics hash %s after a refused reload, want %s", h, hash1)
	}
	c.Send(t, `{"type":"msg","payload":{"roomID":"news:r","message":"still forbidden"}}`)
	c.ExpectError(t, protocol.CodeForbidden)
	chattest.Dial(t, d.URL, "").Join(t, "extra:r")
}

// Two nodes on one Redis loading the same file decide the same: the same
// refusal on each node, the same hash in each /metrics.
func TestClusterSamePolicy(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	file := filepath.Join(t.TempDir(), "roomchat.toml")
	writeConfig(t, file, "[namespace.news]\npost = \"moderators\"\njoin_leave = false\n\n[namespace.staff]\njoin = \"token\"\n")
	nodes := startNodes(t, srv, 2, "-config", file)

	var refusals []string
	for _, n := range nodes {
		c, _ := member(t, n, "news:r")
		c.Send(t, `{"type":"msg","payload":{"roomID":"news:r","message":"hi"}}`)
		refusals = append(refusals, c.ExpectError(t, protocol.CodeForbidden).Message)
		c.Send(t, `{"type":"join","payload":{"roomID":"staff:r"}}`)
		refusals = append(refusals, c.ExpectError(t, protocol.CodeForbidden).Message)
		c.Send(t, `{"type":"join","payload":{"roomID":"nope:r"}}`)
		refusals = append(refusals, c.ExpectError(t, protocol.CodeUnknownNamespace).Message)
	}
	for i := range 3 {
		if refusals[i] != refusals[i+3] {
			t.Errorf("node 1 said %q, node 2 %q", refusals[i], refusals[i+3])
		}
	}
	h0, h1 := metricsHash(t, nodes[0].URL), metricsHash(t, nodes[1].URL)
	if h0 != h1 {
		t.Fatalf("/metrics hashes differ: %s and %s", h0, h1)
	}
	for i, n := range nodes {
		if h := logHashes(n.Logs()); len(h) != 1 || h[0] != h0 {
			t.Fatalf("node %d logged hashes %v, want [%s]", i+1, h, h0)
		}
	}
}
