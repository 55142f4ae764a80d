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

// Files counts this process's open files by path: one more opened is one
// more counted.
func TestFiles(t *testing.T) {
	name := t.TempDir() + "/f"
	before, err := Files(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	after, err := Files(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before[name] != 0 || after[name] != 1 {
		t.Errorf("%s counted %d before and %d after it was opened, want 0 and 1", name, before[name], after[name])
	}
}
