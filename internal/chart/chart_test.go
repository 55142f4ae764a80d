package chart

import (
	"encoding/xml"
	"strings"
	"testing"
)

func TestNiceCeil(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{
		{0, 1}, {-3, 1}, {0.7, 1}, {1, 1}, {1.1, 2}, {2, 2}, {3, 5}, {7, 10}, {10, 10}, {4200, 5000},
	} {
		if got := NiceCeil(c.in); got != c.want {
			t.Errorf("NiceCeil(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// A time series is well-formed SVG with a line per series of each panel,
// its text escaped, and the axis of a panel with a band reaching above
// the band.
func TestTimeSeries(t *testing.T) {
	c := &TimeSeries{
		Title:   "a <b> & c",
		Minutes: []float64{0, 1, 2, 3},
		LeadIn:  1,
		Windows: [][2]float64{{1, 2}, {2, 3}},
		Marker:  2.5,
		Caption: "minutes",
		Panels: []Panel{
			{Name: "two lines", Color: "#000", Lines: [][]float64{{1, 2, 3, 4}, {0, 1, 0, 1}}},
			{Name: "band", Color: "#111", Lines: [][]float64{{5, 5, 5, 5}}, Band: []float64{4, 60}, BandFrom: 1},
		},
	}
	svg := string(c.SVG())
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		if _, err := d.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("not well-formed: %v\n%s", err, svg)
			}
			break
		}
	}
	if n := strings.Count(svg, "<polyline"); n != 3 {
		t.Errorf("%d polylines, want 3", n)
	}
	if !strings.Contains(svg, "a &lt;b&gt; &amp; c") {
		t.Error("the title is not escaped")
	}
	if !strings.Contains(svg, `text-anchor="end">100</text>`) {
		t.Errorf("the band panel's axis does not reach 100 (above the band's 60):\n%s", svg)
	}
}
