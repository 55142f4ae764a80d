// Package proc reads what roomchat-bench needs to know about processes on
// Linux: CPU time (its own from getrusage, another's from /proc/PID/stat,
// the whole machine's from /proc/stat), a field of /proc/PID/status such as
// VmRSS, and open-files limits. With them the bench reports the server's
// CPU and memory and tells a noisy window (other processes busy) from a
// slow server. Each reading reports "unknown" (-1, 0 or an error) where
// /proc is missing rather than failing the run.
package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SelfCPU is this process's user+system CPU time so far (getrusage).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's CPU times; it is 100
// on every Linux architecture Go supports.
const clockTick = 100

// CPU is process pid's user+system CPU time from /proc/<pid>/stat, or -1
// when pid is 0 or unreadable.
func CPU(pid int) time.Duration {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the ")" that ends the command name: state is field 3,
	// utime 14 and stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(ut+st) * time.Second / clockTick
}

// CPUOf is the sum of CPU over pids (the nodes of a cluster and their
// Redis), or -1 when pids is empty or any of them is unreadable.
func CPUOf(pids []int) time.Duration {
	if len(pids) == 0 {
		return -1
	}
	var sum time.Duration
	for _, p := range pids {
		c := CPU(p)
		if c < 0 {
			return -1
		}
		sum += c
	}
	return sum
}

// MachineBusy is the CPU time all CPUs spent not idle, from /proc/stat, or
// -1 if unreadable. With SelfCPU and CPU it tells how much of the machine
// other processes took during a window: on a shared machine that is the
// first suspect for a noisy figure.
func MachineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return -1
	}
	var busy int64
	for i, s := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return -1
		}
		busy += v
	}
	return time.Duration(busy) * time.Second / clockTick
}

// Status returns a field of /proc/<pid>/status in bytes (VmRSS is in kB).
func Status(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			fs := strings.Fields(v)
			if len(fs) == 0 {
				break
			}
			n, err := strconv.ParseInt(fs[0], 10, 64)
			if err != nil {
				return 0, err
			}
			if len(fs) > 1 && fs[1] == "kB" {
				n <<= 10
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// Files counts what the open files of process pid are (/proc/PID/fd):
// paths, with every socket counted as "socket" and every pipe as "pipe".
func Files(pid int) (map[string]int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := map[string]int{}
	for _, e := range ents {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed since ReadDir
		}
		if kind, _, ok := strings.Cut(target, ":["); ok {
			target = kind
		}
		files[target]++
	}
	return files, nil
}

// FDLimit is the soft "Max open files" of process pid, or 0 if unknown.
func FDLimit(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}

// RaiseFDLimit raises this process's RLIMIT_NOFILE soft limit to the hard
// limit and returns the result: a load generator or a server under test
// holds one descriptor per connection.
func RaiseFDLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	if rl.Cur < rl.Max {
		want := rl
		want.Cur = rl.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
			rl = want
		}
	}
	if rl.Cur > 1<<30 {
		return 1 << 30
	}
	return int(rl.Cur)
}
