package chattest

import (
	"runtime"
	"strings"
	"time"
)

// LeakWait is how long Main gives the goroutines it checks to end after
// the tests: a Close that returned may have left a goroutine on its last
// lines.
const LeakWait = 5 * time.Second

// LeakedGoroutines returns the stacks of the running goroutines that
// mention any of marks (a function's qualified name or its start, such as
// "github.com/roomchat/roomchat/internal/room." — a goroutine's stack
// names the functions it runs and the one that started it), waiting up
// to wait for them to end first; "" when none is left.
func LeakedGoroutines(wait time.Duration, marks ...string) string {
	var leaked []string
	Poll(wait, func() bool {
		buf := make([]byte, 1<<20)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) {
				buf = buf[:n]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		leaked = leaked[:0]
		// The first is this goroutine, which may run a TestMain of the
		// package it checks.
		for _, g := range strings.Split(string(buf), "\n\n")[1:] {
			for _, m := range marks {
				if strings.Contains(g, m) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		return len(leaked) == 0
	})
	return strings.Join(leaked, "\n\n")
}
