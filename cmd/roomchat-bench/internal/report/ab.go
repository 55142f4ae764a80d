package report

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// abRecord is the union of the fields an A/B comparison reads from the
// fanout, fanout-max and idle results.
type abRecord struct {
	Kind         string  `json:"kind"`
	Target       string  `json:"target"`
	Scenario     string  `json:"scenario"`
	MaxDelivered float64 `json:"maxDeliveredPerSec"`
	P99          float64 `json:"p99ms"`
	P999         float64 `json:"p999ms"`
	PerConn      float64 `json:"bytesPerConn"`
	Rate         float64 `json:"connectJoinPerSec"`
	OtherCPU     float64 `json:"otherCPU"`
}

// abFigure is one figure of an A/B run: what it measures and which way
// is better.
type abFigure struct {
	scenario, metric string
	higherBetter     bool
}

// abSample is one build's value of a figure in one alternation.
type abSample struct {
	fig    abFigure
	target string
	value  float64
}

// abSamples turns results into samples. Fanout targets and Idle targets
// name the build: "NAME" or, for idle records, "SCENARIO/NAME" (the idle
// command has no scenario of its own); a "+batch" suffix is dropped, the
// batched scenarios having labels of their own. A find-max gives its
// maximum; a fixed-rate window (a scenario with no find-max) its p99 and
// p99.9; an idle run its bytes per connection or its connect+join rate,
// by scenario ("idle" or "join").
func abSamples(recs []abRecord) []abSample {
	findMax := map[string]bool{}
	for _, r := range recs {
		if r.Kind == "fanout-max" {
			findMax[r.Scenario] = true
		}
	}
	var out []abSample
	for _, r := range recs {
		target := strings.TrimSuffix(r.Target, "+batch")
		switch {
		case r.Kind == "fanout-max":
			out = append(out, abSample{abFigure{r.Scenario, "max deliveries/s", true}, target, r.MaxDelivered})
		case r.Kind == "fanout" && !findMax[r.Scenario]:
			out = append(out,
				abSample{abFigure{r.Scenario, "p99 ms", false}, target, r.P99},
				abSample{abFigure{r.Scenario, "p99.9 ms", false}, target, r.P999})
		case r.Kind == "idle":
			scn, name, ok := strings.Cut(r.Target, "/")
			if !ok {
				continue
			}
			if scn == "join" {
				out = append(out, abSample{abFigure{scn, "connect+join/s", true}, name, r.Rate})
			} else {
				out = append(out, abSample{abFigure{scn, "bytes/conn", false}, name, r.PerConn})
			}
		}
	}
	return out
}

// WriteAB compares the builds named base with the one named head in the
// results in file in, as make bench-ab records them: the same scenarios
// run alternately on every build, several times. The k-th value of a
// figure for head is divided by the k-th for each base (the same
// alternation), and each figure gets the median of those ratios, their
// range, and each build's median value. A ratio above 1 is head's figure
// over base's whichever way is better; the verdict column (abVerdict)
// says which way that is, and whether every round agrees.
func WriteAB(in string, base []string, head string, w io.Writer) error {
	recs, err := readJSONLines[abRecord](in)
	if err != nil {
		return fmt.Errorf("ab: %w", err)
	}
	samples := abSamples(recs)
	var figs []abFigure
	vals := map[abFigure]map[string][]float64{}
	for _, s := range samples {
		if vals[s.fig] == nil {
			vals[s.fig] = map[string][]float64{}
			figs = append(figs, s.fig)
		}
		vals[s.fig][s.target] = append(vals[s.fig][s.target], s.value)
	}
	if len(figs) == 0 {
		return fmt.Errorf("ab: no fanout or idle results in %s", in)
	}
	fmt.Fprintf(w, "%-14s %-17s %-14s %12s %12s %8s %-17s %s\n",
		"scenario", "figure", "base", "base med", head+" med", "ratio", "range (n)", "")
	for _, b := range base {
		for _, f := range figs {
			bv, hv := vals[f][b], vals[f][head]
			n := min(len(bv), len(hv))
			if n == 0 {
				fmt.Fprintf(w, "%-14s %-17s %-14s   missing (%d base, %d head)\n", f.scenario, f.metric, b, len(bv), len(hv))
				continue
			}
			ratios := make([]float64, 0, n)
			for i := range n {
				if bv[i] > 0 {
					ratios = append(ratios, hv[i]/bv[i])
				}
			}
			if len(ratios) == 0 {
				fmt.Fprintf(w, "%-14s %-17s %-14s   base is 0 in every run\n", f.scenario, f.metric, b)
				continue
			}
			med := median(ratios)
			verdict := abVerdict(ratios, f.higherBetter)
			fmt.Fprintf(w, "%-14s %-17s %-14s %12.1f %12.1f %7.2fx %-17s %s\n",
				f.scenario, f.metric, b, median(bv[:n]), median(hv[:n]), med,
				fmt.Sprintf("%.2f-%.2fx (%d)", slices.Min(ratios), slices.Max(ratios), len(ratios)), verdict)
		}
	}
	return nil
}

// abVerdict reads ratios (head over base, one per round) for a figure
// where higher is better or not: "better" or "WORSE" only when every
// round says so by more than 3 %, "same" when every round is within 3 %,
// and "mixed" when the rounds disagree, which on this shared machine
// means noise until more rounds say otherwise.
func abVerdict(ratios []float64, higherBetter bool) string {
	up, down, same := 0, 0, 0
	for _, r := range ratios {
		switch {
		case r > 1.03:
			up++
		case r < 1/1.03:
			down++
		default:
			same++
		}
	}
	better, worse := up, down
	if !higherBetter {
		better, worse = down, up
	}
	switch len(ratios) {
	case better:
		return "better"
	case worse:
		return "WORSE"
	case same:
		return "same"
	}
	return "mixed"
}

// median returns the median of v, the mean of the middle two for an even
// count. v must not be empty; it is not changed.
func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}
