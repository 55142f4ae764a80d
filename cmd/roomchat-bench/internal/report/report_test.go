package report

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/go-json-experiment/json"
)

func TestChart(t *testing.T) {
	dir := t.TempDir()
	in := dir + "/r.jsonl"
	lines := []Fanout{
		{Kind: "fanout", Target: "baseline", Scenario: "100x100", OfferedDeliveries: 10000, P99: 3, Pass: true},
		{Kind: "fanout", Target: "baseline", Scenario: "100x100", OfferedDeliveries: 20000, P99: 300},
		{Kind: "fanout", Target: "roomchat", Scenario: "100x100", OfferedDeliveries: 10000, P99: 5, Pass: true},
		{Kind: "fanout-max", Target: "roomchat", Scenario: "100x100"},
	}
	var b bytes.Buffer
	for _, l := range lines {
		j, _ := json.Marshal(l)
		b.Write(append(j, '\n'))
	}
	b.WriteString("not json\n")
	if err := os.WriteFile(in, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := dir + "/c.svg"
	if err := WriteChart(in, out); err != nil {
		t.Fatal(err)
	}
	svg, _ := os.ReadFile(out)
	for _, want := range []string{"<svg", "fan-out 100x100", "roomchat", "baseline", "</svg>"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("chart lacks %q", want)
		}
	}
	if n := bytes.Count(svg, []byte("<circle")); n != 3 {
		t.Errorf("chart has %d points, want 3", n)
	}
}

func TestSummary(t *testing.T) {
	in := t.TempDir() + "/r.jsonl"
	var b bytes.Buffer
	for _, v := range []any{
		Idle{Kind: "idle", Target: "roomchat", PerConn: 11000, Conns: 19500, Rate: 7000},
		Idle{Kind: "idle", Target: "baseline", PerConn: 33000, Conns: 19500, Rate: 6000},
		Ratio{Kind: "ratio", Scenario: "100x100", Target: "roomchat", Versus: "baseline", Metric: "maxDeliveredPerSec", Roomchat: 90, Baseline: 100, Ratio: 0.9},
		Ratio{Kind: "ratio", Scenario: "100x100@20k", Target: "roomchat", Versus: "baseline", Metric: "deliveredPerSec", P99: 8.1, BaseP99: 5, P999: 12.5, Max: 40.2},
		Churn{Kind: "churn", Target: "roomchat", Cycles: 100000, Why: "heap"},
	} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(j, '\n'))
	}
	if err := os.WriteFile(in, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteSummary(in, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"11000 B at 19500 conns",
		"0.900x (90/s)",
		"7000/s vs 6000/s",
		"8.10 ms (p99.9 12.50, max 40.2)",
		"no result",
		"MISSED",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// TestOutputLatency checks that the table and -json both carry p50, p99,
// p99.9 and max of a fan-out window, and of a comparison.
func TestOutputLatency(t *testing.T) {
	res := Fanout{Kind: "fanout", Target: "roomchat", Scenario: "2x3", P50: 1.25, P90: 2.5, P99: 3.75, P999: 12.5, Max: 40.25, Pass: true}
	cmp := Ratio{Kind: "ratio", Scenario: "2x3", Target: "roomchat", Versus: "baseline", Metric: "deliveredPerSec",
		P99: 3.75, BaseP99: 1, P999: 12.5, BaseP999: 2, Max: 40.25, BaseMax: 3}
	for _, tc := range []struct {
		json bool
		want []string
	}{
		{false, []string{"p50ms", "p99ms", "p99.9ms", "maxms", " 1.25 ", " 3.75 ", " 12.50 ", " 40.2 ", "p99.9 12.50 vs 2.00 ms, max 40.2 vs 3.0 ms"}},
		{true, []string{`"p50ms":1.25`, `"p99ms":3.75`, `"p999ms":12.5`, `"maxms":40.25`, `"versusP999ms":2`, `"versusMaxms":3`}},
	} {
		var b bytes.Buffer
		o := Writer{W: &b, JSON: tc.json}
		o.Emit(res)
		o.Emit(cmp)
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("json=%v: output lacks %q:\n%s", tc.json, w, b.String())
			}
		}
	}
}

func TestAB(t *testing.T) {
	dir := t.TempDir()
	in := dir + "/ab.jsonl"
	var b bytes.Buffer
	emit := func(v any) {
		j, _ := json.Marshal(v)
		b.Write(append(j, '\n'))
	}
	// Two alternations: head then base, then base then head.
	for i, order := range [][]string{{"head", "base"}, {"base", "head"}} {
		for _, tg := range order {
			max, p99, perConn, join := 100_000.0, 20.0, 10_000.0, 3_000.0
			if tg == "head" {
				max, p99, perConn, join = 300_000+float64(i)*100_000, 10, 10_000, 3_300-float64(i)*600
			}
			emit(Fanout{Kind: "fanout", Target: tg, Scenario: "1x1000", Step: 1, P99: 900})
			emit(Fanout{Kind: "fanout-max", Target: tg, Scenario: "1x1000", MaxDelivered: max})
			emit(Fanout{Kind: "fanout", Target: tg + "+batch", Scenario: "100x100@20k", P99: p99, P999: 2 * p99})
			emit(Idle{Kind: "idle", Target: "idle/" + tg, PerConn: perConn})
			emit(Idle{Kind: "idle", Target: "join/" + tg, Rate: join})
		}
	}
	if err := os.WriteFile(in, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteAB(in, []string{"base", "nobase"}, "head", &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		// 3x and 4x: the median 3.5x, the range from both alternations.
		"1x1000         max deliveries/s  base               100000.0     350000.0    3.50x 3.00-4.00x (2)    better",
		"100x100@20k    p99 ms            base                   20.0         10.0    0.50x 0.50-0.50x (2)    better",
		"100x100@20k    p99.9 ms          base                   40.0         20.0    0.50x",
		"idle           bytes/conn        base                10000.0      10000.0    1.00x 1.00-1.00x (2)    same",
		// 1.1x in one round, 0.9x in the other.
		"join           connect+join/s    base                 3000.0       3000.0    1.00x 0.90-1.10x (2)    mixed",
		"1x1000         max deliveries/s  nobase           missing (0 base, 2 head)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("A/B table lacks %q:\n%s", want, got)
		}
	}
	// A find-max's windows are not fixed-rate figures.
	if strings.Contains(got, "1x1000         p99") {
		t.Errorf("find-max windows counted as a fixed-rate p99:\n%s", got)
	}
	if err := WriteAB(dir+"/none", []string{"base"}, "head", &out); err == nil {
		t.Error("a missing results file is no error")
	}
}
