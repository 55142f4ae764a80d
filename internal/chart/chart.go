// Package chart draws the SVG charts of roomchat's measurements: the time
// series of the soak test (cmd/roomchatd) and the latency panels of
// roomchat-bench (its internal/report). It writes the SVG text itself;
// there is nothing to install to read it but a browser.
package chart

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// Begin starts an SVG of w×h pixels on a white background.
func Begin(b *strings.Builder, w, h int) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
}

// End closes what Begin started.
func End(b *strings.Builder) { b.WriteString("</svg>\n") }

// NiceCeil rounds v up to 1, 2 or 5 times a power of ten: the top of an
// axis.
func NiceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// Label prints a tick value without the float noise of a sum of steps.
func Label(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}

// TimeSeries is a chart of panels stacked one above the other, each of one
// or more lines of values against minutes, with the same shading on each:
// a lead-in (a warm-up, grey), windows (blue) and a vertical marker.
type TimeSeries struct {
	Title   string
	Minutes []float64 // the x of every sample, ascending; the last is the axis's end
	Panels  []Panel
	LeadIn  float64      // minutes shaded grey from 0
	Windows [][2]float64 // minutes shaded blue, from and to
	Marker  float64      // minutes: a black vertical line
	Caption string       // under the last panel's axis
}

// Panel is one panel of a TimeSeries.
type Panel struct {
	Name  string
	Color string
	// Lines are the values, one per sample: the first drawn solid, the
	// second dashed, the third dotted.
	Lines [][]float64
	// Band, when set, is a low and a high value drawn as dashed lines from
	// BandFrom (minutes) to the end; the axis reaches above the high one.
	Band     []float64
	BandFrom float64
}

// SVG draws the chart. It writes one document top to bottom, each panel's
// shading, band, axes and lines in paint order over the panel's shared
// scales, and reads best as that one sequence.
func (c *TimeSeries) SVG() []byte {
	const (
		w, ph  = 720, 220
		ml, mr = 70, 20
		mt, mb = 50, 40
		plotW  = w - ml - mr
		plotH  = ph - mt - mb
	)
	h := ph*len(c.Panels) + 20
	var b strings.Builder
	Begin(&b, w, h)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", ml, html.EscapeString(c.Title))
	end := c.Minutes[len(c.Minutes)-1]
	x := func(m float64) float64 { return ml + m/end*plotW }
	dashes := []string{"", ` stroke-dasharray="3 2"`, ` stroke-dasharray="1 2"`}
	for i, p := range c.Panels {
		top := float64(i*ph + mt)
		hi := 0.0
		for _, v := range p.Lines[0] {
			hi = max(hi, v)
		}
		for _, v := range p.Band {
			hi = max(hi, v)
		}
		hi = NiceCeil(hi * 1.05)
		y := func(v float64) float64 { return top + plotH - v/hi*plotH }
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-weight="bold">%s</text>`+"\n", ml, top-8, html.EscapeString(p.Name))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%d" fill="#e5e7eb"/>`+"\n", x(0), top, x(c.LeadIn)-x(0), plotH)
		for _, win := range c.Windows {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%d" fill="#dbeafe"/>`+"\n", x(win[0]), top, x(win[1])-x(win[0]), plotH)
		}
		for _, v := range p.Band {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#6b7280" stroke-dasharray="4 3"/>`+"\n", x(p.BandFrom), y(v), x(end), y(v))
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#111827" stroke-width="1.5"/>`+"\n", x(c.Marker), top, x(c.Marker), top+plotH)
		// Axes and ticks.
		fmt.Fprintf(&b, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="black"/>`+"\n", ml, top+plotH, ml+plotW, top+plotH)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="black"/>`+"\n", ml, top, ml, top+plotH)
		for k := 0; k <= 4; k++ {
			v := hi * float64(k) / 4
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", ml-6, y(v)+4, Label(v))
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#f3f4f6"/>`+"\n", ml+1, y(v), ml+plotW, y(v))
		}
		step := NiceCeil(end / 8)
		for m := 0.0; m <= end+1e-9; m += step {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x(m), top+plotH+16, Label(m))
		}
		if i == len(c.Panels)-1 && c.Caption != "" {
			fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="middle">%s</text>`+"\n", ml+plotW/2, top+plotH+34, html.EscapeString(c.Caption))
		}
		for j, vals := range p.Lines {
			pts := make([]string, len(vals))
			for k, v := range vals {
				pts[k] = fmt.Sprintf("%.1f,%.1f", x(c.Minutes[k]), y(v))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", p.Color, dashes[min(j, len(dashes)-1)], strings.Join(pts, " "))
		}
	}
	End(&b)
	return []byte(b.String())
}
