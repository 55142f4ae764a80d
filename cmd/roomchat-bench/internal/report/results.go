package report

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"github.com/go-json-experiment/json"
)

// Fanout is one measured window of the fanout command (kind "fanout") or
// a find-max summary (kind "fanout-max"). Rates are per second of the
// measured window. Latencies are in milliseconds, from each message's
// scheduled send time to its receipt by each member.
type Fanout struct {
	Kind     string `json:"kind"`
	Target   string `json:"target"`
	Scenario string `json:"scenario"`
	Step     int    `json:"step,omitzero"`

	Rooms   int     `json:"rooms"`
	Members int     `json:"members"`
	Senders int     `json:"senders"`
	Rate    float64 `json:"ratePerSender"`
	Seconds float64 `json:"seconds"`

	OfferedMsgs       float64 `json:"offeredMsgsPerSec"`
	OfferedDeliveries float64 `json:"offeredDeliveriesPerSec"`
	SentMsgs          float64 `json:"sentMsgsPerSec"`
	Delivered         float64 `json:"deliveredPerSec"`

	Sent     int64   `json:"sentMsgs"`
	Expected int64   `json:"expectedDeliveries"`
	Received int64   `json:"receivedDeliveries"`
	Loss     int64   `json:"loss"`
	LossPct  float64 `json:"lossPct"`

	P50  float64 `json:"p50ms"`
	P90  float64 `json:"p90ms"`
	P99  float64 `json:"p99ms"`
	P999 float64 `json:"p999ms"`
	Max  float64 `json:"maxms"`

	Nodes        int     `json:"nodes,omitzero"` // servers the clients were spread over, when more than one
	Disconnects  int64   `json:"disconnects"`
	ServerErrors int64   `json:"serverErrors"`
	GenCPU       float64 `json:"generatorCPU"`                // cores used by this process in the window
	ServerCPU    float64 `json:"serverCPU,omitzero"`          // cores used by -pid in the window
	OtherCPU     float64 `json:"otherCPU"`                    // cores used by everything else (the server too without -pid)
	Pass         bool    `json:"pass"`                        // p99 within limit, no loss, rate offered, no disconnects
	Why          string  `json:"why,omitzero"`                // why it did not pass
	Note         string  `json:"note,omitzero"`               // e.g. generator saturated
	MaxDelivered float64 `json:"maxDeliveredPerSec,omitzero"` // fanout-max: highest passing step
}

// Ratio is kind "ratio": one target's figure over another's (the
// baseline relay, or roomchat with the in-memory store), measured in the
// same run.
type Ratio struct {
	Kind     string  `json:"kind"`
	Scenario string  `json:"scenario"`
	Target   string  `json:"target"`
	Versus   string  `json:"versus"`
	Metric   string  `json:"metric"`
	Roomchat float64 `json:"value"`
	Baseline float64 `json:"versusValue"`
	Ratio    float64 `json:"ratio"`
	P99      float64 `json:"p99ms,omitzero"`
	BaseP99  float64 `json:"versusP99ms,omitzero"`
	P999     float64 `json:"p999ms,omitzero"`
	BaseP999 float64 `json:"versusP999ms,omitzero"`
	Max      float64 `json:"maxms,omitzero"`
	BaseMax  float64 `json:"versusMaxms,omitzero"`
	// Noisy is set when other processes took over 0.25 cores during
	// either figure's window: rerun before believing the ratio.
	Noisy bool `json:"noisy,omitzero"`
}

// Idle is kind "idle": the server's memory per idle joined connection
// and the connect+join rate.
type Idle struct {
	Kind      string  `json:"kind"`
	Target    string  `json:"target"`
	Requested int     `json:"requestedConns"`
	Conns     int     `json:"conns"`
	Rooms     int     `json:"rooms"`
	Capped    string  `json:"capped,omitzero"` // why Conns < Requested
	SrcAddrs  int     `json:"sourceAddrs"`
	Source    string  `json:"memorySource"` // "VmRSS" or "/metrics"
	Before    int64   `json:"rssBeforeBytes"`
	After     int64   `json:"rssAfterBytes"`
	PerConn   float64 `json:"bytesPerConn"`
	Rate      float64 `json:"connectJoinPerSec"`
	ConnectS  float64 `json:"connectSeconds"`
	GoBefore  float64 `json:"goroutinesBefore,omitzero"`
	GoAfter   float64 `json:"goroutinesAfter,omitzero"`
	HeapAfter float64 `json:"heapInuseAfterBytes,omitzero"`
	Dropped   int64   `json:"droppedDuringHold"`  // closed by the server after joining, while connecting the rest or holding
	FirstDrop string  `json:"firstDrop,omitzero"` // when (from the start of connecting) and why the first one dropped
	GenCPU    float64 `json:"generatorCPUSecondsConnect"`
	SrvCPU    float64 `json:"serverCPUSecondsConnect,omitzero"`
	// Nodes, for a target of several servers, holds each one's share;
	// the fields above are then totals over them (PerConn: the sum of
	// the memory deltas over every connection).
	Nodes []IdleNode `json:"nodes,omitzero"`
}

// IdleNode is one server's share of an idle run against several.
type IdleNode struct {
	Server  string  `json:"server"` // host:port
	PID     int     `json:"pid,omitzero"`
	Conns   int     `json:"conns"`
	Before  int64   `json:"rssBeforeBytes"`
	After   int64   `json:"rssAfterBytes"`
	PerConn float64 `json:"bytesPerConn"`
}

// Churn is kind "churn": connect/join/leave/close cycles, and whether the
// server's goroutines and heap came back to where they started.
type Churn struct {
	Kind       string  `json:"kind"`
	Target     string  `json:"target"`
	Cycles     int64   `json:"cycles"`
	Failed     int64   `json:"failed"`
	FirstError string  `json:"firstError,omitzero"`
	Seconds    float64 `json:"seconds"`
	Rate       float64 `json:"cyclesPerSec"`
	GoBefore   float64 `json:"goroutinesBefore"`
	GoAfter    float64 `json:"goroutinesAfter"`
	GoPeak     float64 `json:"goroutinesPeak"`
	HeapBefore float64 `json:"heapInuseBeforeBytes"`
	HeapAfter  float64 `json:"heapInuseAfterBytes"`
	HeapPeak   float64 `json:"heapInusePeakBytes"`
	SettleS    float64 `json:"settleSeconds"`
	// GCs counts the server's garbage collections while settling: a heap
	// that stays up across several is retained, not merely uncollected.
	GCs      float64            `json:"gcsWhileSettling"`
	Gauges   map[string]float64 `json:"serverGaugesAfter,omitzero"`
	Returned bool               `json:"returnedToBaseline"`
	Why      string             `json:"why,omitzero"`
}

// Writer prints results to W, as a table or with JSON as one JSON object
// per line, and appends each as a JSON line to the file given to Open.
// Its methods are for one goroutine at a time.
type Writer struct {
	W    io.Writer
	JSON bool

	f      *os.File // the results file, nil without one
	err    error    // the first error
	header string   // the table header printed last
}

// Open makes w append every result to the file at path as a JSON line,
// creating the file if need be. An empty path keeps no file.
func (o *Writer) Open(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open results file: %w", err)
	}
	o.f = f
	return nil
}

// Close closes the results file and returns the first error of any Emit
// or of closing.
func (o *Writer) Close() error {
	if o.f != nil {
		if err := o.f.Close(); err != nil && o.err == nil {
			o.err = err
		}
		o.f = nil
	}
	return o.err
}

// Emit prints v (a Fanout, Ratio, Idle or Churn; anything else is printed
// with %+v) and appends it to the results file. An error is kept for Close.
func (o *Writer) Emit(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		o.err = cmp.Or(o.err, err)
		return
	}
	if o.f != nil {
		if _, err := o.f.Write(append(line, '\n')); err != nil {
			o.err = cmp.Or(o.err, err)
		}
	}
	if o.JSON {
		o.W.Write(append(line, '\n'))
		return
	}
	o.table(v)
}

// table prints v as the table shows it: a Fanout window as a row under
// its header (printed again when another header came in between), every
// other result as its own lines.
func (o *Writer) table(v any) {
	switch r := v.(type) {
	case Fanout:
		o.tableFanout(r)
	case Ratio:
		o.header = ""
		noisy := ""
		if r.Noisy {
			noisy = " NOISY: other processes were busy, rerun"
		}
		fmt.Fprintf(o.W, "=> %s %s: %s %.0f vs %s %.0f = %.3fx (p99 %.2f vs %.2f ms, p99.9 %.2f vs %.2f ms, max %.1f vs %.1f ms)%s\n",
			r.Target, r.Scenario, r.Metric, r.Roomchat, r.Versus, r.Baseline, r.Ratio, r.P99, r.BaseP99, r.P999, r.BaseP999, r.Max, r.BaseMax, noisy)
	case Idle:
		o.header = ""
		o.tableIdle(r)
	case Churn:
		o.header = ""
		o.tableChurn(r)
	default:
		fmt.Fprintf(o.W, "%+v\n", v)
	}
}

// tableFanout prints a fanout window as a table row, or a find-max
// summary as one line.
func (o *Writer) tableFanout(r Fanout) {
	if r.Kind == "fanout-max" {
		o.header = ""
		if r.MaxDelivered == 0 {
			fmt.Fprintf(o.W, "=> %s %s: no step passed\n", r.Target, r.Scenario)
			return
		}
		fmt.Fprintf(o.W, "=> %s %s: max sustained %.0f deliveries/s (p99 %.1f ms, p99.9 %.1f ms, max %.1f ms, %.0f msgs/s in)\n",
			r.Target, r.Scenario, r.MaxDelivered, r.P99, r.P999, r.Max, r.SentMsgs)
		return
	}
	hdr := fmt.Sprintf("%-15s %-9s %4s %9s %11s %11s %8s %8s %8s %8s %8s %7s %5s %5s %5s %s",
		"target", "scenario", "step", "rate/snd", "offered/s", "delivered/s", "p50ms", "p90ms", "p99ms", "p99.9ms", "maxms", "loss", "gen", "srv", "oth", "result")
	if o.header != hdr {
		fmt.Fprintln(o.W, hdr)
		o.header = hdr
	}
	res := "ok"
	if !r.Pass {
		res = "FAIL " + r.Why
	}
	if r.Note != "" {
		res += " (" + r.Note + ")"
	}
	srv := "-"
	if r.ServerCPU > 0 {
		srv = fmt.Sprintf("%.2f", r.ServerCPU)
	}
	fmt.Fprintf(o.W, "%-15s %-9s %4d %9.2f %11.0f %11.0f %8.2f %8.2f %8.2f %8.2f %8.1f %7d %5.2f %5s %5.2f %s\n",
		r.Target, r.Scenario, r.Step, r.Rate, r.OfferedDeliveries, r.Delivered, r.P50, r.P90, r.P99, r.P999, r.Max, r.Loss, r.GenCPU, srv, r.OtherCPU, res)
}

// tableIdle prints an idle result: connections, memory (per node when
// several), the connect+join rate, drops and goroutines.
func (o *Writer) tableIdle(r Idle) {
	fmt.Fprintf(o.W, "idle %s: %d conns in %d rooms (requested %d, %d source addr)\n", r.Target, r.Conns, r.Rooms, r.Requested, r.SrcAddrs)
	if r.Capped != "" {
		fmt.Fprintf(o.W, "  NOTE: %s\n", r.Capped)
	}
	fmt.Fprintf(o.W, "  server memory (%s): %.1f MiB -> %.1f MiB = %.0f bytes (%.1f KiB) per connection\n",
		r.Source, float64(r.Before)/(1<<20), float64(r.After)/(1<<20), r.PerConn, r.PerConn/1024)
	for _, n := range r.Nodes {
		fmt.Fprintf(o.W, "  node %s: %d conns, %.1f MiB -> %.1f MiB = %.0f bytes (%.1f KiB) per connection\n",
			n.Server, n.Conns, float64(n.Before)/(1<<20), float64(n.After)/(1<<20), n.PerConn, n.PerConn/1024)
	}
	fmt.Fprintf(o.W, "  connect+join: %.0f/s (%.2f s; CPU: generator %.2f s, server %.2f s); dropped after joining: %d\n", r.Rate, r.ConnectS, r.GenCPU, r.SrvCPU, r.Dropped)
	if r.FirstDrop != "" {
		fmt.Fprintf(o.W, "  first drop %s\n", r.FirstDrop)
	}
	if r.GoAfter > 0 {
		fmt.Fprintf(o.W, "  server goroutines %.0f -> %.0f (%.2f per conn), heap in use %.1f MiB\n",
			r.GoBefore, r.GoAfter, (r.GoAfter-r.GoBefore)/float64(r.Conns), r.HeapAfter/(1<<20))
	}
}

// tableChurn prints a churn result: cycles, the first error, goroutines
// and heap before, at the peak and after, and the verdict.
func (o *Writer) tableChurn(r Churn) {
	fmt.Fprintf(o.W, "churn %s: %d cycles (%d failed) in %.1f s = %.0f cycles/s\n", r.Target, r.Cycles, r.Failed, r.Seconds, r.Rate)
	if r.FirstError != "" {
		fmt.Fprintf(o.W, "  first error: %s\n", r.FirstError)
	}
	verdict := "returned to baseline"
	if !r.Returned {
		verdict = "NOT back to baseline: " + r.Why
	}
	fmt.Fprintf(o.W, "  goroutines %.0f -> peak %.0f -> %.0f; heap in use %.1f -> peak %.1f -> %.1f MiB\n",
		r.GoBefore, r.GoPeak, r.GoAfter, r.HeapBefore/(1<<20), r.HeapPeak/(1<<20), r.HeapAfter/(1<<20))
	fmt.Fprintf(o.W, "  %s (waited %.1f s, %.0f server GCs meanwhile)", verdict, r.SettleS, r.GCs)
	for _, k := range slices.Sorted(maps.Keys(r.Gauges)) {
		fmt.Fprintf(o.W, "; %s %.0f", k, r.Gauges[k])
	}
	fmt.Fprintln(o.W)
}

// readJSONLines decodes every line of the file at path that is a JSON
// object into a T, in order, skipping lines that are not objects or do not
// decode. It reads at most 1,000,000 lines of at most 1 MiB each.
func readJSONLines[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 0; sc.Scan() && n < 1_000_000; n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var v T
		if json.Unmarshal(line, &v) == nil {
			out = append(out, v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}
