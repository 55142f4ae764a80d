package report

import (
	"cmp"
	"fmt"
	"html"
	"maps"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/roomchat/roomchat/internal/chart"
)

// chartPoint is the part of a fanout result the chart plots.
type chartPoint struct {
	Kind     string  `json:"kind"`
	Target   string  `json:"target"`
	Scenario string  `json:"scenario"`
	Offered  float64 `json:"offeredDeliveriesPerSec"`
	P99      float64 `json:"p99ms"`
	P999     float64 `json:"p999ms"`
	Max      float64 `json:"maxms"`
	Pass     bool    `json:"pass"`
}

// WriteChart reads JSON-lines results and writes an SVG with one panel per
// fan-out scenario: p99 latency (log scale) against offered deliveries/s,
// one line per target (roomchat, roomchat+batch, baseline), failed steps
// drawn hollow, and the find-max limit of 250 ms dashed.
func WriteChart(in, out string) error {
	if in == "" {
		return fmt.Errorf("chart needs -in")
	}
	points, err := readJSONLines[chartPoint](in)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	series := map[string]map[string][]chartPoint{} // scenario → target → points
	for _, p := range points {
		if p.Kind != "fanout" || p.Offered <= 0 {
			continue
		}
		// "100x100@20k" (a fixed-rate run) belongs in the 100x100 panel.
		scn, _, _ := strings.Cut(p.Scenario, "@")
		if series[scn] == nil {
			series[scn] = map[string][]chartPoint{}
		}
		series[scn][p.Target] = append(series[scn][p.Target], p)
	}
	if len(series) == 0 {
		return fmt.Errorf("chart: %s has no fanout results", in)
	}
	svg := renderChart(series)
	if err := os.WriteFile(out, []byte(svg), 0o644); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	return nil
}

var chartColors = map[string]string{
	"baseline":       "#6b7280",
	"roomchat":       "#2563eb",
	"roomchat+batch": "#dc2626",
}

// The chart's geometry: each scenario's panel is chartW × chartPanelH,
// its plot inside the margins; the y axis is log scale from chartYMin to
// chartYMax ms.
const (
	chartW, chartPanelH = 720, 300 // width, panel height
	chartML, chartMR    = 70, 150  // margins: left (axis labels), right (legend)
	chartMT, chartMB    = 40, 50
	chartPlotW          = chartW - chartML - chartMR
	chartPlotH          = chartPanelH - chartMT - chartMB
	chartYMin           = 0.1 // ms
	chartYMax           = 10000.0
	chartLimitMillis    = 250.0
)

// renderChart is the SVG of WriteChart: one panel per scenario, in order.
func renderChart(series map[string]map[string][]chartPoint) string {
	scenarios := slices.Sorted(maps.Keys(series))
	h := chartPanelH * len(scenarios)
	var b strings.Builder
	chart.Begin(&b, chartW, h)
	for i, scn := range scenarios {
		chartPanel(&b, i, scn, series[scn])
	}
	chart.End(&b)
	return b.String()
}

// chartY is the y of v ms in a panel's plot (log scale, clamped to the
// axis).
func chartY(v float64) float64 {
	v = math.Min(math.Max(v, chartYMin), chartYMax)
	return float64(chartPlotH) * (1 - (math.Log10(v)-math.Log10(chartYMin))/(math.Log10(chartYMax)-math.Log10(chartYMin)))
}

// chartPanel writes panel i, scenario scn: its frame, grid, axes and the
// dashed p99 limit, then each target's line (chartSeries).
func chartPanel(b *strings.Builder, i int, scn string, targets map[string][]chartPoint) {
	const plotW, plotH = chartPlotW, chartPlotH
	xMax := 0.0
	for _, pts := range targets {
		for _, p := range pts {
			xMax = math.Max(xMax, p.Offered)
		}
	}
	xMax = chart.NiceCeil(xMax * 1.05)
	lx := func(v float64) float64 { return float64(plotW) * v / xMax }
	fmt.Fprintf(b, `<g transform="translate(%d,%d)">`+"\n", chartML, i*chartPanelH+chartMT)
	fmt.Fprintf(b, `<text x="0" y="-14" font-size="14" font-weight="bold">fan-out %s: p99 latency vs offered load</text>`+"\n", html.EscapeString(scn))
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="none" stroke="#9ca3af"/>`+"\n", plotW, plotH)
	for _, v := range []float64{0.1, 1, 10, 100, 1000, 10000} {
		y := chartY(v)
		fmt.Fprintf(b, `<line x1="0" x2="%d" y1="%.1f" y2="%.1f" stroke="#e5e7eb"/>`, plotW, y, y)
		fmt.Fprintf(b, `<text x="-6" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", y, trimNum(v))
	}
	for k := 0; k <= 5; k++ {
		v := xMax * float64(k) / 5
		x := lx(v)
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="0" y2="%d" stroke="#e5e7eb"/>`, x, x, plotH)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotH+16, humanNum(v))
	}
	yl := chartY(chartLimitMillis)
	fmt.Fprintf(b, `<line x1="0" x2="%d" y1="%.1f" y2="%.1f" stroke="#f59e0b" stroke-dasharray="6 4"/>`, plotW, yl, yl)
	fmt.Fprintf(b, `<text x="4" y="%.1f" fill="#b45309">p99 limit 250 ms</text>`+"\n", yl-4)
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">offered deliveries/s</text>`+"\n", plotW/2, plotH+36)
	fmt.Fprintf(b, `<text transform="translate(-52,%d) rotate(-90)" text-anchor="middle">p99 latency (ms, log)</text>`+"\n", plotH/2)

	names := slices.Sorted(maps.Keys(targets))
	for j, t := range names {
		chartSeries(b, j, t, targets[t], lx)
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" fill="#6b7280" font-size="10">hollow: step failed</text>`+"\n", plotW+12, 10+len(names)*18+4)
	b.WriteString("</g>\n")
}

// chartSeries writes target t's line, the j-th of its panel: a path
// through its points by offered load (lx is the panel's x scale), a
// circle per point (hollow: the step failed) and its legend entry.
func chartSeries(b *strings.Builder, j int, t string, points []chartPoint, lx func(float64) float64) {
	const plotW = chartPlotW
	pts := slices.Clone(points)
	slices.SortFunc(pts, func(a, b chartPoint) int { return cmp.Compare(a.Offered, b.Offered) })
	col := chartColors[t]
	if col == "" {
		col = "#16a34a"
	}
	var path strings.Builder
	for k, p := range pts {
		cmd := "L"
		if k == 0 {
			cmd = "M"
		}
		fmt.Fprintf(&path, "%s%.1f %.1f ", cmd, lx(p.Offered), chartY(p.P99))
	}
	fmt.Fprintf(b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.TrimSpace(path.String()), col)
	for _, p := range pts {
		fill := col
		if !p.Pass {
			fill = "white"
		}
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s" stroke="%s"><title>%s: %.0f offered/s, p99 %.2f ms, p99.9 %.2f ms, max %.1f ms</title></circle>`+"\n",
			lx(p.Offered), chartY(p.P99), fill, col, html.EscapeString(t), p.Offered, p.P99, p.P999, p.Max)
	}
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n",
		plotW+12, plotW+32, 10+j*18, 10+j*18, col, plotW+38, 10+j*18, html.EscapeString(t))
}

func humanNum(v float64) string {
	switch {
	case v >= 1e6:
		return trimNum(v/1e6) + "M"
	case v >= 1e3:
		return trimNum(v/1e3) + "k"
	}
	return trimNum(v)
}

func trimNum(v float64) string {
	s := fmt.Sprintf("%.1f", v)
	return strings.TrimSuffix(s, ".0")
}
