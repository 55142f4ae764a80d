package report

import (
	"fmt"
	"io"
	"strings"
)

// summaryRecord is the union of the fields the budget needs from any
// result kind.
type summaryRecord struct {
	Kind     string  `json:"kind"`
	Target   string  `json:"target"`
	Versus   string  `json:"versus"`
	Scenario string  `json:"scenario"`
	Ratio    float64 `json:"ratio"`
	Value    float64 `json:"value"`
	VersusV  float64 `json:"versusValue"`
	P99      float64 `json:"p99ms"`
	P999     float64 `json:"p999ms"`
	Max      float64 `json:"maxms"`
	PerConn  float64 `json:"bytesPerConn"`
	Conns    int     `json:"conns"`
	Capped   string  `json:"capped"`
	Rate     float64 `json:"connectJoinPerSec"`
	Returned bool    `json:"returnedToBaseline"`
	Cycles   int64   `json:"cycles"`
	Why      string  `json:"why"`
	Noisy    bool    `json:"noisy"`
}

// WriteSummary checks the results in file in against the performance budget
// (docs/benchmarks.md, Results) and prints one line per item; the last result of each kind wins. Items with no
// result say so. It reports, it does not fail: these are benchmark numbers.
func WriteSummary(in string, w io.Writer) error {
	recs, err := readJSONLines[summaryRecord](in)
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	last := func(match func(r summaryRecord) bool) *summaryRecord {
		for i := len(recs) - 1; i >= 0; i-- {
			if match(recs[i]) {
				return &recs[i]
			}
		}
		return nil
	}
	ratio := func(scn, target, versus string) *summaryRecord {
		return last(func(r summaryRecord) bool {
			return r.Kind == "ratio" && r.Scenario == scn && r.Target == target && r.Versus == versus
		})
	}
	noisy := func(r *summaryRecord) string {
		if r.Noisy {
			return " (noisy)"
		}
		return ""
	}
	line := func(item, got, budget string, ok bool, found bool) {
		v := "ok"
		switch {
		case !found:
			v, got = "no result", "-"
		case !ok:
			v = "MISSED"
		}
		fmt.Fprintf(w, "%-52s %-36s %-14s %s\n", item, got, budget, v)
	}
	// The header is kept as docs/benchmarks.md and earlier results show it.
	fmt.Fprintf(w, "%-52s %-36s %-14s %s\n", "budget item (issue 6)", "measured", "budget", "verdict")

	rcIdle := last(func(r summaryRecord) bool { return r.Kind == "idle" && r.Target == "roomchat" })
	blIdle := last(func(r summaryRecord) bool { return r.Kind == "idle" && r.Target == "baseline" })
	if rcIdle != nil {
		note := fmt.Sprintf("%.0f B at %d conns", rcIdle.PerConn, rcIdle.Conns)
		line("1. idle memory per joined connection", note, "<= 12,000 B", rcIdle.PerConn <= 12000, true)
	} else {
		line("1. idle memory per joined connection", "", "<= 12,000 B", false, false)
	}
	if r := ratio("100x100", "roomchat", "baseline"); r != nil {
		line("2. fan-out 100x100 max, vs baseline", fmt.Sprintf("%.3fx (%.0f/s)%s", r.Ratio, r.Value, noisy(r)), ">= 0.95x", r.Ratio >= 0.95, true)
	} else {
		line("2. fan-out 100x100 max, vs baseline", "", ">= 0.95x", false, false)
	}
	if r := ratio("100x100@20k", "roomchat", "baseline"); r != nil {
		line("2. p99 at 20,000 deliveries/s, 100x100", fmt.Sprintf("%.2f ms (p99.9 %.2f, max %.1f)%s", r.P99, r.P999, r.Max, noisy(r)), "<= 15 ms", r.P99 <= 15, true)
	} else {
		line("2. p99 at 20,000 deliveries/s, 100x100", "", "<= 15 ms", false, false)
	}
	if r := ratio("1x1000", "roomchat", "baseline"); r != nil {
		line("3. fan-out 1x1000 max, vs baseline", fmt.Sprintf("%.3fx (%.0f/s)%s", r.Ratio, r.Value, noisy(r)), ">= 0.9x", r.Ratio >= 0.9, true)
	} else {
		line("3. fan-out 1x1000 max, vs baseline", "", ">= 0.9x", false, false)
	}
	batch := last(func(r summaryRecord) bool {
		return r.Kind == "ratio" && r.Target == "roomchat+batch" && r.Versus == "baseline" && strings.HasPrefix(r.Scenario, "1x1000")
	})
	if r := batch; r != nil {
		line("3. fan-out 1x1000 with ?batch=1, vs baseline", fmt.Sprintf("%.3fx (%.0f/s)%s", r.Ratio, r.Value, noisy(r)), ">= 6x", r.Ratio >= 6, true)
	} else {
		line("3. fan-out 1x1000 with ?batch=1, vs baseline", "", ">= 6x", false, false)
	}
	if rcIdle != nil && blIdle != nil {
		line("4. connect+join rate, vs baseline", fmt.Sprintf("%.0f/s vs %.0f/s", rcIdle.Rate, blIdle.Rate), ">= baseline", rcIdle.Rate >= blIdle.Rate, true)
	} else {
		line("4. connect+join rate, vs baseline", "", ">= baseline", false, false)
	}
	if r := ratio("100x100", "roomchat", "roomchat-mem"); r != nil {
		line("5. SQLite fan-out max, vs in-memory store", fmt.Sprintf("%.3fx%s", r.Ratio, noisy(r)), ">= 0.8x", r.Ratio >= 0.8, true)
	} else {
		line("5. SQLite fan-out max, vs in-memory store", "", ">= 0.8x", false, false)
	}
	if r := last(func(r summaryRecord) bool { return r.Kind == "churn" && r.Target == "roomchat" }); r != nil {
		line("6. churn: goroutines and heap back to start", fmt.Sprintf("%d cycles", r.Cycles), "returned", r.Returned, true)
		if !r.Returned && r.Why != "" {
			fmt.Fprintf(w, "   %s\n", r.Why)
		}
	} else {
		line("6. churn: goroutines and heap back to start", "", "returned", false, false)
	}
	for _, r := range []*summaryRecord{rcIdle, blIdle} {
		if r != nil && r.Capped != "" {
			fmt.Fprintf(w, "note: idle %s: %s\n", r.Target, r.Capped)
		}
	}
	return nil
}
