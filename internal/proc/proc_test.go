package proc

import (
	"os"
	"testing"
	"time"
)

// TestSelf reads this process: on Linux every reading is known.
func TestSelf(t *testing.T) {
	pid := os.Getpid()
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	if got := SelfCPU(); got <= 0 {
		t.Errorf("SelfCPU() = %v after 50 ms of spinning, want > 0", got)
	}
	if got := CPU(pid); got < 0 {
		t.Errorf("CPU(self) = %v, want ≥ 0", got)
	}
	if got := CPU(0); got != -1 {
		t.Errorf("CPU(0) = %v, want -1 (unknown)", got)
	}
	if got, one := CPUOf([]int{pid, pid}), CPU(pid); got < 2*one {
		t.Errorf("CPUOf(self, self) = %v, want at least twice CPU(self) = %v", got, one)
	}
	if got := CPUOf(nil); got != -1 {
		t.Errorf("CPUOf(nil) = %v, want -1 (unknown)", got)
	}
	if got := CPUOf([]int{pid, 0}); got != -1 {
		t.Errorf("CPUOf(self, 0) = %v, want -1 (unknown)", got)
	}
	if got := MachineBusy(); got <= 0 {
		t.Errorf("MachineBusy() = %v, want > 0", got)
	}
	if rss, err := Status(pid, "VmRSS"); err != nil || rss < 1<<20 {
		t.Errorf("Status(self, VmRSS) = %d, %v, want at least 1 MiB", rss, err)
	}
	if _, err := Status(pid, "NoSuchField"); err == nil {
		t.Error("Status(self, NoSuchField): no error")
	}
	lim := RaiseFDLimit()
	if got := FDLimit(pid); got != lim || lim < 1 {
		t.Errorf("FDLimit(self) = %d, RaiseFDLimit() = %d, want the same positive number", got, lim)
	}
}
