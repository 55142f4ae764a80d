package sqlite

import (
	"log/slog"
	"time"
)

// faultLog logs a background step that keeps failing (a checkpoint, a trim
// step) once when it starts failing and once when it works again, with how
// many attempts failed in between, instead of a line per attempt: while a
// disk is full the checkpointer retries every 500 ms, and its log may be on
// the same disk. Each faultLog is owned by the goroutine that runs the step.
type faultLog struct {
	log        *slog.Logger
	what, path string
	fails      int       // consecutive failed attempts
	since      time.Time // when the first of them failed
}

// observe records the outcome of one attempt.
func (f *faultLog) observe(err error) {
	switch {
	case err != nil && f.fails == 0:
		f.since = time.Now()
		f.log.Warn("store: "+f.what+" failed; retrying quietly until it works", "path", f.path, "err", err)
	case err == nil && f.fails > 0:
		f.log.Info("store: "+f.what+" works again", "path", f.path, "failed_attempts", f.fails, "after", time.Since(f.since).Round(time.Millisecond))
	}
	if err != nil {
		f.fails++
	} else {
		f.fails = 0
	}
}
