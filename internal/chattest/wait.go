package chattest

import (
	"fmt"
	"testing"
	"time"
)

// PollInterval is how often Poll and Eventually ask their condition again.
const PollInterval = 20 * time.Millisecond

// Poll calls cond until it returns true, every PollInterval, and reports
// whether it did within timeout. cond is always called at least once, and
// once more after the timeout has passed, so a condition that holds by
// then is not missed. It is for a test that builds its own failure
// message from the last state it saw; Eventually fails the test itself.
//
// It waits in real time, for a real server or process. A test of timing
// logic alone uses testing/synctest instead.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(PollInterval)
	}
}

// Eventually polls cond (see Poll) until it returns true, and fails t at
// once unless it does within timeout, with the message format and args
// say what was waited for, and for how long:
//
//	chattest.Eventually(t, 10*time.Second, func() bool { return n.Load() == 2 },
//		"both members in the roster")
//
// fails with "waited 10s for: both members in the roster".
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("waited %v for: %s", timeout, fmt.Sprintf(format, args...))
	}
}
