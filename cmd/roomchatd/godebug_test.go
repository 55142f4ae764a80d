package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSmallStacksGODEBUG: roomchatd re-executes itself with
// adaptivestackstart=0 in GODEBUG, whatever GODEBUG held (unset, empty, other
// settings), keeps an operator's own adaptivestackstart, and serves either
// way with exactly one GODEBUG entry in its environment.
func TestSmallStacksGODEBUG(t *testing.T) {
	cases := []struct {
		name, env, want string
	}{
		{"unset", "", "adaptivestackstart=0"},
		{"empty", "GODEBUG=", "adaptivestackstart=0"},
		{"other settings", "GODEBUG=http2client=0", "http2client=0,adaptivestackstart=0"},
		{"operator's choice", "GODEBUG=adaptivestackstart=1", "adaptivestackstart=1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := daemonCmd(t, "-addr", "127.0.0.1:0", "-db", ":memory:")
			env := cmd.Env[:0:0]
			for _, kv := range cmd.Env {
				if !strings.HasPrefix(kv, "GODEBUG=") {
					env = append(env, kv)
				}
			}
			if tc.env != "" {
				env = append(env, tc.env)
			}
			cmd.Env = env
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cmd.Process.Kill()
				cmd.Wait()
			})
			listening := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					if strings.Contains(sc.Text(), "msg=listening") {
						listening <- true
					}
				}
				listening <- false
			}()
			select {
			case ok := <-listening:
				if !ok {
					t.Fatal("roomchatd exited without listening")
				}
			case <-time.After(20 * time.Second):
				t.Fatal("roomchatd did not listen within 20s")
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
			if err != nil {
				t.Skipf("cannot read the process environment: %v", err)
			}
			var got []string
			for _, kv := range strings.Split(string(b), "\x00") {
				if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
					got = append(got, v)
				}
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("GODEBUG entries of the running server = %q, want exactly [%q]", got, tc.want)
			}
		})
	}
}
