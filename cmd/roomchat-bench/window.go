package main

import (
	"context"
	"math"
	"time"

	"github.com/roomchat/roomchat/internal/proc"
)

// cpuMark is one reading of the clocks a measured window is judged by.
type cpuMark struct {
	at   time.Time
	self time.Duration // this process's CPU time
	srv  time.Duration // the servers' (-pid), summed; -1: unknown
	all  time.Duration // the machine's busy time; -1: unknown
}

// markStart reads the CPU clocks, then the wall clock: the start of a
// window.
func markStart(pids []int) cpuMark {
	m := cpuMark{self: proc.SelfCPU(), srv: proc.CPUOf(pids), all: proc.MachineBusy()}
	m.at = time.Now()
	return m
}

// markEnd reads the wall clock, then the CPU clocks: the end of a window.
func markEnd(pids []int) cpuMark {
	at := time.Now()
	return cpuMark{at: at, self: proc.SelfCPU(), srv: proc.CPUOf(pids), all: proc.MachineBusy()}
}

// cpuUse is what the clocks moved over a window.
type cpuUse struct {
	wall  time.Duration
	self  time.Duration // this process (the generator)
	srv   time.Duration // the servers; -1: unknown
	other time.Duration // every other process, at least 0; -1: unknown
}

// to is the window from m to end.
func (m cpuMark) to(end cpuMark) cpuUse {
	u := cpuUse{wall: end.at.Sub(m.at), self: end.self - m.self, srv: -1, other: -1}
	other := end.all - m.all - u.self
	if m.srv >= 0 && end.srv >= 0 {
		u.srv = end.srv - m.srv
		other -= u.srv
	}
	if m.all >= 0 && end.all >= 0 {
		u.other = max(0, other)
	}
	return u
}

// noisyCores is how much CPU other processes may take during a window
// before its figures are called noisy.
const noisyCores = 0.25

// quietCores is how much CPU other processes may use for a step to start.
const quietCores = 0.3

// waitQuiet waits, at most maxWait, until processes other than this one and
// pids used under quietCores over half a second. It reports whether they did.
func waitQuiet(ctx context.Context, pids []int, maxWait time.Duration) bool {
	if maxWait <= 0 {
		return true
	}
	deadline := time.Now().Add(maxWait)
	for ctx.Err() == nil {
		m := markStart(pids)
		sleepUntil(ctx, m.at.Add(500*time.Millisecond))
		u := m.to(markEnd(pids))
		if u.other < 0 {
			return true // no /proc/stat: cannot tell
		}
		if u.other.Seconds()/u.wall.Seconds() < quietCores {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
	return false
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }
func round1(f float64) float64   { return math.Round(f*10) / 10 }
func round3(f float64) float64   { return math.Round(f*1000) / 1000 }
