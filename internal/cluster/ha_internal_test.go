package cluster

import (
	"slices"
	"strings"
	"testing"
)

// The URL forms of -redis: one Redis, or Sentinels and a master set
// (SPEC §8), with every credential kept out of what is shown.
func TestClientOption(t *testing.T) {
	copt, err := clientOption("redis+sentinel://u:pw@10.0.0.1:26379,10.0.0.2,10.0.0.3:26380/mymaster/2?sentinel_password=spw&sentinel_user=su")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26380"}; !slices.Equal(copt.InitAddress, want) {
		t.Errorf("sentinels %v, want %v", copt.InitAddress, want)
	}
	if copt.Sentinel.MasterSet != "mymaster" || copt.SelectDB != 2 {
		t.Errorf("master set %q db %d", copt.Sentinel.MasterSet, copt.SelectDB)
	}
	if copt.Username != "u" || copt.Password != "pw" || copt.Sentinel.Username != "su" || copt.Sentinel.Password != "spw" {
		t.Errorf("credentials: redis %q/%q, sentinel %q/%q", copt.Username, copt.Password, copt.Sentinel.Username, copt.Sentinel.Password)
	}
	if copt.Sentinel.TopologyRefreshInterval <= 0 {
		t.Error("the primary is not re-read from the sentinels periodically")
	}

	copt, err = clientOption("redis://:pw@127.0.0.1:6379/1")
	if err != nil || copt.Sentinel.MasterSet != "" || copt.Password != "pw" || copt.SelectDB != 1 {
		t.Errorf("redis URL: %+v, %v", copt, err)
	}

	for _, bad := range []string{
		"redis+sentinel://h:26379",          // no master set
		"redis+sentinel:///mymaster",        // no sentinel
		"redis+sentinel://h/mymaster/x",     // a db that is no number
		"redis+sentinel://h/mymaster/1/2",   // too much path
		"redis+sentinel://:secret@h:26379/", // no master set, a password
	} {
		if _, err := clientOption(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", bad, err)
		}
	}

	raw := "redis+sentinel://u:pw-1@h:26379/m?sentinel_password=spw-2"
	shown := RedactURL(raw) + " " + Redact("dial failed: "+raw, raw)
	for _, secret := range []string{"pw-1", "spw-2"} {
		if strings.Contains(shown, secret) {
			t.Errorf("%q shows %q", shown, secret)
		}
	}
}
