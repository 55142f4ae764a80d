package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
)

// unitFile is the systemd unit that docs/operations.md points operators to.
const unitFile = "../../docs/deploy/roomchatd.service"

// TestDeployUnit runs roomchatd as docs/deploy/roomchatd.service does: with
// the unit's Environment= lines and ExecStart flags (the address moved to
// loopback and the database to a temporary directory). The server must
// serve.
func TestDeployUnit(t *testing.T) {
	env, args := readUnit(t)
	env["ROOMCHAT_ADDR"] = "127.0.0.1:0"
	for i, a := range args {
		if a == "-db" && i+1 < len(args) {
			args[i+1] = filepath.Join(t.TempDir(), filepath.Base(args[i+1]))
		}
	}
	url := runWithEnv(t, env, args)
	res, err := http.Get(url + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /healthz: %v %v", res, err)
	}
	res.Body.Close()
}

// readUnit returns the Environment= variables and the ExecStart flags of
// the unit file.
func readUnit(t *testing.T) (env map[string]string, args []string) {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	env = map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Environment="); ok {
			k, val, _ := strings.Cut(v, "=")
			env[k] = val
		}
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			f := strings.Fields(v)
			if len(f) == 0 || filepath.Base(f[0]) != "roomchatd" {
				t.Fatalf("ExecStart=%s does not run roomchatd", v)
			}
			args = f[1:]
		}
	}
	if args == nil {
		t.Fatal("the unit has no ExecStart")
	}
	return env, args
}

// runWithEnv starts roomchatd with args and, of GODEBUG and the ROOMCHAT_*
// variables, only those in env; it waits until the server listens and
// returns its URL. The process is killed at the end of the test.
func runWithEnv(t *testing.T, env map[string]string, args []string) (url string) {
	t.Helper()
	kept := []string{}
	for _, kv := range chattest.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			kept = append(kept, kv)
		}
	}
	for k, v := range env {
		kept = append(kept, k+"="+v)
	}
	s := chattest.StartEnv(t, kept, args...)
	return s.URL
}
