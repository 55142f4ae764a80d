package redistest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// SaveLogs keeps what the servers and Sentinels logged (their directories
// go with the test), and RoleLine tells who replicates whom.
func TestHASaveLogsAndRoles(t *testing.T) {
	h := StartHA(t, HAOptions{Replicas: 1})
	primary, replica := h.Servers[0], h.Servers[1]
	_, pport, _ := strings.Cut(primary.Addr, ":")
	_, rport, _ := strings.Cut(replica.Addr, ":")

	if got := primary.RoleLine(); !strings.HasPrefix(got, "master offset=") || !strings.Contains(got, "replicas="+rport+"@") {
		t.Errorf("primary's RoleLine = %q, want master with replica %s", got, rport)
	}
	if got, want := replica.RoleLine(), "slave of "+pport+" connected offset="; !strings.HasPrefix(got, want) {
		t.Errorf("replica's RoleLine = %q, want %q…", got, want)
	}
	if got := h.Sentinels[0].RoleLine(); got != "sentinel" {
		t.Errorf("sentinel's RoleLine = %q", got)
	}

	dir := t.TempDir()
	if err := h.SaveLogs(dir); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"redis0-" + pport + ".log": "Synchronization with replica 127.0.0.1:" + rport + " succeeded",
		"redis1-" + rport + ".log": "MASTER <-> REPLICA sync: Finished with success",
	}
	for i, s := range h.Sentinels {
		_, port, _ := strings.Cut(s.Addr, ":")
		want["sentinel"+string(rune('0'+i))+"-"+port+".log"] = "+monitor master roomchat"
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(want) {
		t.Errorf("%d files saved, want %d", len(entries), len(want))
	}
	for name, line := range want {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !strings.Contains(string(b), line) {
			t.Errorf("%s does not say %q:\n%s", name, line, b)
		}
	}
	h.Servers[1].Kill()
	if got := replica.RoleLine(); got != "" {
		t.Errorf("a killed server's RoleLine = %q, want empty", got)
	}
}
