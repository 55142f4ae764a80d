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
	s := summary{recs: recs, w: w}
	// The header is kept as docs/benchmarks.md and earlier results show it.
	fmt.Fprintf(w, "%-52s %-36s %-14s %s\n", "budget item (issue 6)", "measured", "budget", "verdict")

	rcIdle := s.last(func(r summaryRecord) bool { return r.Kind == "idle" && r.Target == "roomchat" })
	blIdle := s.last(func(r summaryRecord) bool { return r.Kind == "idle" && r.Target == "baseline" })
	s.item("1. idle memory per joined connection", "<= 12,000 B", rcIdle, func(r *summaryRecord) (string, bool) {
		return fmt.Sprintf("%.0f B at %d conns", r.PerConn, r.Conns), r.PerConn <= 12000
	})
	s.item("2. fan-out 100x100 max, vs baseline", ">= 0.95x", s.ratio("100x100", "roomchat", "baseline"), func(r *summaryRecord) (string, bool) {
		return fmt.Sprintf("%.3fx (%.0f/s)%s", r.Ratio, r.Value, noisyMark(r)), r.Ratio >= 0.95
	})
	s.item("2. p99 at 20,000 deliveries/s, 100x100", "<= 15 ms", s.ratio("100x100@20k", "roomchat", "baseline"), func(r *summaryRecord) (string, bool) {
		return fmt.Sprintf("%.2f ms (p99.9 %.2f, max %.1f)%s", r.P99, r.P999, r.Max, noisyMark(r)), r.P99 <= 15
	})
	s.item("3. fan-out 1x1000 max, vs baseline", ">= 0.9x", s.ratio("1x1000", "roomchat", "baseline"), func(r *summaryRecord) (string, bool) {
		return fmt.Sprintf("%.3fx (%.0f/s)%s", r.Ratio, r.Value, noisyMark(r)), r.Ratio >= 0.9
	})
	batch := s.last(func(r summaryRecord) bool {
		return r.Kind == "ratio" && r.Target == "roomchat+batch" && r.Versus == "baseline" && strings.HasPrefix(r.Scenario, "1x1000")
	})
	s.item("3. fan-out 1x1000 with ?batch=1, vs baseline", ">= 6x", batch, func(r *summaryRecord) (string, bool) {
		return fmt.Sprintf("%.3fx (%.0f/s)%s", r.Ratio, r.Value, noisyMark(r)), r.Ratio >= 6
	})
	if rcIdle != nil && blIdle != nil {
		s.line("4. connect+join rate, vs baseline", fmt.Sprintf("%.0f/s vs %.0f/s", rcIdle.Rate, blIdle.Rate), ">= baseline", rcIdle.Rate >= blIdle.Rate, true)
	} else {
		s.line("4. connect+join rate, vs baseline", "", ">= baseline", false, false)
	}
	s.item("5. SQLite fan-out max, vs in-memory store", ">= 0.8x", s.ratio("100x100", "roomchat", "roomchat-mem"), func(r *summaryRecord) (string, bool) {
		return fmt.Sprintf("%.3fx%s", r.Ratio, noisyMark(r)), r.Ratio >= 0.8
	})
	churn := s.last(func(r summaryRecord) bool { return r.Kind == "churn" && r.Target == "roomchat" })
	s.item("6. churn: goroutines and heap back to start", "returned", churn, func(r *summaryRecord) (string, bool) {
		return fmt.Sprintf("%d cycles", r.Cycles), r.Returned
	})
	if r := churn; r != nil && !r.Returned && r.Why != "" {
		fmt.Fprintf(w, "   %s\n", r.Why)
	}
	for _, r := range []*summaryRecord{rcIdle, blIdle} {
		if r != nil && r.Capped != "" {
			fmt.Fprintf(w, "note: idle %s: %s\n", r.Target, r.Capped)
		}
	}
	return nil
}

// summary prints the budget items of WriteSummary from its results.
type summary struct {
	recs []summaryRecord
	w    io.Writer
}

// last is the last result that match accepts, nil if none does.
func (s summary) last(match func(r summaryRecord) bool) *summaryRecord {
	for i := len(s.recs) - 1; i >= 0; i-- {
		if match(s.recs[i]) {
			return &s.recs[i]
		}
	}
	return nil
}

// ratio is the last ratio of target over versus in scenario scn.
func (s summary) ratio(scn, target, versus string) *summaryRecord {
	return s.last(func(r summaryRecord) bool {
		return r.Kind == "ratio" && r.Scenario == scn && r.Target == target && r.Versus == versus
	})
}

// item prints the line of one budget item measured by result r: judge
// says what r measured and whether that is within budget; a nil r is an
// item with no result.
func (s summary) item(item, budget string, r *summaryRecord, judge func(r *summaryRecord) (got string, ok bool)) {
	if r == nil {
		s.line(item, "", budget, false, false)
		return
	}
	got, ok := judge(r)
	s.line(item, got, budget, ok, true)
}

// line prints one budget item: what was measured, the budget and the
// verdict (ok, MISSED, or no result when none was found).
func (s summary) line(item, got, budget string, ok bool, found bool) {
	v := "ok"
	switch {
	case !found:
		v, got = "no result", "-"
	case !ok:
		v = "MISSED"
	}
	fmt.Fprintf(s.w, "%-52s %-36s %-14s %s\n", item, got, budget, v)
}

// noisyMark is the mark of a result whose window was noisy.
func noisyMark(r *summaryRecord) string {
	if r.Noisy {
		return " (noisy)"
	}
	return ""
}
