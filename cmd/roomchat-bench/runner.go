package main

import (
	"cmp"
	"context"
	"flag"
	"os"
	"runtime/pprof"

	"github.com/roomchat/roomchat/cmd/roomchat-bench/internal/report"
)

// A scenario is one measuring command (fanout, idle, storm, churn): its own
// flags, a check of their values, and the measurement. Every scenario runs
// through scenarioCmd, the one runner: it adds the result flags (-json, -o,
// -cpuprofile), checks the flags before any result file is opened, then
// measures with the results going to the table, the JSON lines and the file.
// The shared machinery a measurement is built from is in fleet.go (connect
// and read), pace.go (send on schedule) and window.go (CPU clocks, quiet
// machine, rounding).
type scenario interface {
	// flags defines the scenario's flags on fs, bound to its fields.
	flags(fs *flag.FlagSet)
	// check validates the parsed flags; an error is reported before
	// anything is measured or written.
	check() error
	// measure runs the scenario and hands each result to emit as it is
	// ready (a result that says how far a failed run got included).
	measure(ctx context.Context, e *env, emit func(any)) error
}

// scenarioCmd is the setup of a command-table row that runs a scenario.
func scenarioCmd(newScenario func() scenario) func(fs *flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		s := newScenario()
		s.flags(fs)
		out := resultFlags(fs)
		return func(ctx context.Context, e *env) error {
			if err := s.check(); err != nil {
				return err
			}
			return out.run(e, func(w *report.Writer) error { return s.measure(ctx, e, w.Emit) })
		}
	}
}

// results holds the flags of the commands that measure: where their results
// go, and the generator's own CPU profile.
type results struct {
	json       bool
	file       string
	cpuprofile string
}

func resultFlags(fs *flag.FlagSet) *results {
	r := new(results)
	fs.BoolVar(&r.json, "json", false, "print one JSON object per result instead of a table")
	fs.StringVar(&r.file, "o", "", "also append one JSON object per result to this file")
	fs.StringVar(&r.cpuprofile, "cpuprofile", "", "write the generator's own CPU profile to this file")
	return r
}

// run opens the results file and starts the CPU profile, calls measure with
// the writer its results go to, then stops the profile and closes the file.
// It returns the first error of all that.
func (r *results) run(e *env, measure func(w *report.Writer) error) (err error) {
	w := &report.Writer{W: e.stdout, JSON: r.json}
	if err := w.Open(r.file); err != nil {
		return err
	}
	defer func() { err = cmp.Or(err, w.Close()) }()
	if r.cpuprofile != "" {
		f, err := os.Create(r.cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			err = cmp.Or(err, f.Close())
		}()
	}
	return measure(w)
}
