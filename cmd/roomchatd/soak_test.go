package main

// The soak campaign (make soak, docs/reliability.md; SPEC §4's bounds): one
// roomchatd (SQLite file, default flags, so -rate 20) under a steady mix of
// what real and hostile clients do, while its resident memory, goroutines
// and open files are sampled; at the end they must be flat.
//
// The mix, all at once, all bounded and ending with the load:
//   - members: a few per room, each sending a message every ~2 s (with
//     typing and custom events), re-joining with since after any drop;
//   - churners: connect (half of them resuming), join a random room (half
//     with since), send, ask for history, then leave, close, or drop the
//     TCP connection without a close frame;
//   - flooders: bursts of large messages well past the rate limit, so
//     they get rate_limited and, when they keep on, 1008;
//   - slow readers: in the flooded room, with a 4 KiB socket receive
//     buffer, reading one frame per 100 ms and now and then not at all for
//     20 s, so the server closes them with 1013; they come back with
//     their resume token and since;
//   - HTTP: page reads, room info, posts and /readyz.
//
// ROOMCHAT_SOAK=<duration> sets the load time (make soak: 30m); without
// it a smoke version of about 2 minutes runs, except under -short.
// ROOMCHAT_SOAK_OUT=<dir> writes the samples (CSV) and the chart (SVG);
// ROOMCHAT_SOAK_ARGS adds flags to the server's.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/chart"
	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/proc"
	"github.com/roomchat/roomchat/internal/protocol"
)

// Environment variables of the full campaign.
const (
	soakEnv    = "ROOMCHAT_SOAK"
	soakOutEnv = "ROOMCHAT_SOAK_OUT"
	// soakArgsEnv adds flags to the server's, for an investigation
	// (e.g. "-debug-addr 127.0.0.1:6060" for pprof).
	soakArgsEnv = "ROOMCHAT_SOAK_ARGS"
	// soakRedrawEnv names a CSV of an earlier soak for TestSoakRedraw.
	soakRedrawEnv = "ROOMCHAT_SOAK_REDRAW"
)

// soakConfig shapes one soak and states its tolerances.
type soakConfig struct {
	// load is how long the mix runs. The first warmup of it is not
	// judged (the Go heap, the SQLite page caches and the SQLite
	// allocator's pages fill up); the window after the warm-up (A) is
	// compared with the last window of the load (B).
	load, warmup, window time.Duration
	// interval is the time between samples.
	interval time.Duration
	// tol is the largest relative change of a mean from A to B, with
	// slack goroutines and slackFDs added for counts that are small and
	// move with the instantaneous number of connections.
	tol              float64
	slackGoroutines  float64
	slackFDs         float64
	rssSlackKiB      float64
	heapSlackKiB     float64
	settle           time.Duration // longest wait after the load for the baseline
	settleGoroutines int           // baseline ± this
	settleFDs        int           // baseline ± this, the store's files aside
	// storeFDs is how many more files the store may hold after the load
	// than at the idle baseline: its read pool opens up to 4 connections
	// on demand and keeps them (internal/store/sqlite ReadConns), each
	// holding the database file and its WAL, and the idle server has
	// used at most one of them.
	storeFDs            int
	members, churners   int
	flooders, slowReads int
}

// The tolerances, argued in docs/reliability.md: ±10 % of the mean from
// window A to window B, plus a little slack (2 MiB of memory; one
// connection more or less is 2 goroutines and 1 file); after the load,
// back to the idle baseline within 60 s (the 15 s presence grace period of
// dropped members, plus the 25 s keepalive of a half-open connection).
// The warm-up is half the load: SQLite's caches take that long to fill
// (six connections of 2 MiB each, on pages of its own allocator that are
// touched a few at a time), which the first 30-minute run showed.
func soakDefaults() soakConfig {
	return soakConfig{
		load: 30 * time.Minute, warmup: 15 * time.Minute, window: 5 * time.Minute, interval: 10 * time.Second,
		tol: 0.10, slackGoroutines: 10, slackFDs: 5, rssSlackKiB: 2048, heapSlackKiB: 2048,
		settle: 60 * time.Second, settleGoroutines: 3, settleFDs: 2, storeFDs: 6,
		members: 18, churners: 3, flooders: 2, slowReads: 2,
	}
}

func TestSoak(t *testing.T) {
	cfg := soakDefaults()
	if v := os.Getenv(soakEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 3*time.Minute {
			t.Fatalf("%s=%q: want a duration of at least 3m", soakEnv, v)
		}
		cfg = soakConfigFor(d)
	} else if testing.Short() {
		t.Skip("the soak; " + soakEnv + "=<duration> runs it in full")
	} else {
		// The smoke inside make test: 90 s of load, then at most 30 s
		// to settle. A shorter run judges shorter windows, so the
		// Go heap's step from one GC target to the next weighs more:
		// the memory tolerance is wider.
		cfg.load, cfg.warmup, cfg.window, cfg.interval = 90*time.Second, 30*time.Second, 30*time.Second, 5*time.Second
		cfg.tol, cfg.settle = 0.25, 30*time.Second
	}
	runSoak(t, cfg)
}

// soakConfigFor is the configuration of a full soak of load d.
func soakConfigFor(d time.Duration) soakConfig {
	cfg := soakDefaults()
	// A warm-up of half the load and windows of a sixth: 15 and 5
	// minutes for 30.
	cfg.load, cfg.warmup, cfg.window = d, d/2, d/6
	return cfg
}

// TestSoakRedraw draws the chart of an earlier full soak again from its
// CSV: ROOMCHAT_SOAK_REDRAW=<file.csv> with ROOMCHAT_SOAK=<its duration>
// writes <file>.svg.
func TestSoakRedraw(t *testing.T) {
	in := os.Getenv(soakRedrawEnv)
	if in == "" {
		t.Skip(soakRedrawEnv + "=<soak CSV> redraws its chart")
	}
	d, err := time.ParseDuration(os.Getenv(soakEnv))
	if err != nil {
		t.Fatalf("%s: want the soak's duration: %v", soakEnv, err)
	}
	b, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var samples []soakSample
	var loadEnd time.Duration
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n")[1:] {
		var sec float64
		var s soakSample
		if _, err := fmt.Sscanf(line, "%g,%d,%d,%d,%d,%d,%d,%d,%d,%d", &sec, &s.rssKiB, &s.anonKiB, &s.fileKiB, &s.goHeldKiB, &s.heapKiB, &s.goroutines, &s.fds, &s.storeFDs, &s.conns); err != nil {
			t.Fatalf("%s line %d: %v", in, i+2, err)
		}
		s.at = time.Duration(sec * float64(time.Second))
		if s.conns > 0 {
			loadEnd = s.at // the last sample under load: the load ended just after
		}
		samples = append(samples, s)
	}
	cfg := soakConfigFor(d)
	title := fmt.Sprintf("roomchatd soak: %v of mixed load, sampled every %v", d, cfg.interval)
	out := strings.TrimSuffix(in, ".csv") + ".svg"
	if err := os.WriteFile(out, soakChart(title, samples, cfg, loadEnd), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}

// soakSample is one measurement of the server.
type soakSample struct {
	at         time.Duration // since the start
	rssKiB     int64         // /proc/PID/status VmRSS
	anonKiB    int64         // of it, RssAnon (heaps and stacks)
	fileKiB    int64         // of it, RssFile (mostly the binary's pages)
	goHeldKiB  int64         // go_memstats_sys_bytes − go_memstats_heap_released_bytes: what the Go runtime holds
	fds        int           // entries of /proc/PID/fd
	storeFDs   int           // of them, the SQLite files (the path starts with -db's)
	goroutines int           // go_goroutines from /metrics
	heapKiB    int64         // go_memstats_heap_inuse_bytes / 1024
	conns      int64         // connections the load holds open
}

// soakLoad counts what the load did; every field is updated atomically.
type soakLoad struct {
	conns                                  atomic.Int64 // open now
	dials, churns, drops, leaves, msgsSent atomic.Int64
	rateLimited, abuse, slow, resumed      atomic.Int64
	httpReqs, httpErrors, typings, events  atomic.Int64
}

func runSoak(t *testing.T, cfg soakConfig) {
	start := time.Now()
	db := filepath.Join(t.TempDir(), "soak.db")
	srv := chattest.StartEnv(t, nil, append([]string{"-addr", "127.0.0.1:0", "-db", db}, strings.Fields(os.Getenv(soakArgsEnv))...)...)
	pid := srv.PID()
	probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

	sample := func() (soakSample, error) {
		s := soakSample{at: time.Since(start)}
		var err error
		if s.rssKiB, s.anonKiB, s.fileKiB, err = procRSS(pid); err != nil {
			return s, err
		}
		m, err := scrapeMetrics(probe, srv.URL, metricGoroutines, metricHeap, metricSys, metricReleased)
		if err != nil {
			return s, err
		}
		s.goroutines, s.heapKiB = int(m[metricGoroutines]), int64(m[metricHeap])/1024
		s.goHeldKiB = int64(m[metricSys]-m[metricReleased]) / 1024
		// After the scrape, whose connection is closed by then (no
		// keep-alive), so that it is not counted.
		files, err := proc.Files(pid)
		for name, n := range files {
			s.fds += n
			if strings.HasPrefix(name, db) {
				s.storeFDs += n
			}
		}
		return s, err
	}
	var (
		mu      sync.Mutex
		samples []soakSample
	)
	record := func(s soakSample) {
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}

	// The idle baseline: the last of three samples a second apart.
	var base soakSample
	for range 3 {
		s, err := sample()
		if err != nil {
			t.Fatalf("sampling the idle server: %v", err)
		}
		base = s
		time.Sleep(time.Second)
	}
	record(base)
	baseFiles, _ := proc.Files(pid)
	t.Logf("soak: idle baseline: RSS %d KiB, %d goroutines, %d open files (%d of the store)", base.rssKiB, base.goroutines, base.fds, base.storeFDs)

	ld := &soakLoad{}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.load)
	defer cancel()
	var wg sync.WaitGroup
	rooms := []string{"r0", "r1", "r2", "r3", "r4", "r5"}
	for i := range cfg.members {
		wg.Go(func() { soakMember(ctx, srv.URL, rooms[i%len(rooms)], ld) })
	}
	for range cfg.churners {
		wg.Go(func() { soakChurner(ctx, srv.URL, rooms, ld) })
	}
	for range cfg.flooders {
		wg.Go(func() { soakFlooder(ctx, srv.URL, ld) })
	}
	for range cfg.slowReads {
		wg.Go(func() { soakSlowReader(ctx, srv.URL, ld) })
	}
	wg.Go(func() { soakHTTP(ctx, srv.URL, ld) })

	// Sample until the load ends.
	tick := time.NewTicker(cfg.interval)
	var sampleErr error
	for ctx.Err() == nil {
		select {
		case <-tick.C:
			s, err := sample()
			if err != nil {
				sampleErr = err
				cancel()
				break
			}
			s.conns = ld.conns.Load()
			record(s)
			if n := len(samples); n%max(1, int(time.Minute/cfg.interval)) == 0 {
				t.Logf("soak: %v: RSS %d KiB, %d goroutines, %d open files, %d client connections", s.at.Round(time.Second), s.rssKiB, s.goroutines, s.fds, s.conns)
			}
		case <-ctx.Done():
		}
	}
	loadEnd := time.Since(start)
	wg.Wait()
	if sampleErr != nil {
		t.Fatalf("sampling the server under load: %v (is it still running?)\n%s", sampleErr, lastLines(srv.Logs(), 20))
	}

	// After the load: back to the baseline.
	var settled soakSample
	settledIn := time.Duration(-1)
	for deadline := time.Now().Add(cfg.settle); ; {
		<-tick.C
		s, err := sample()
		if err != nil {
			t.Fatalf("sampling the server after the load: %v", err)
		}
		record(s)
		settled = s
		if abs(s.goroutines-base.goroutines) <= cfg.settleGoroutines && abs(s.fds-s.storeFDs-(base.fds-base.storeFDs)) <= cfg.settleFDs && s.storeFDs <= base.storeFDs+cfg.storeFDs {
			settledIn = s.at - loadEnd
			break
		}
		if time.Now().After(deadline) {
			break
		}
	}
	tick.Stop()

	// Judge: window A (after the warm-up) against window B (the end of
	// the load).
	mean := func(from, to time.Duration, f func(soakSample) float64) (float64, int) {
		sum, n := 0.0, 0
		for _, s := range samples {
			if s.at >= from && s.at < to {
				sum += f(s)
				n++
			}
		}
		return sum / float64(max(n, 1)), n
	}
	aFrom, aTo := cfg.warmup, cfg.warmup+cfg.window
	bFrom, bTo := loadEnd-cfg.window, loadEnd
	type metric struct {
		name  string
		get   func(soakSample) float64
		slack float64
	}
	var verdicts []string
	for _, m := range []metric{
		{"RSS KiB", func(s soakSample) float64 { return float64(s.rssKiB) }, cfg.rssSlackKiB},
		{"Go heap in use KiB", func(s soakSample) float64 { return float64(s.heapKiB) }, cfg.heapSlackKiB},
		{"goroutines", func(s soakSample) float64 { return float64(s.goroutines) }, cfg.slackGoroutines},
		{"open files", func(s soakSample) float64 { return float64(s.fds) }, cfg.slackFDs},
	} {
		a, na := mean(aFrom, aTo, m.get)
		b, nb := mean(bFrom, bTo, m.get)
		limit := cfg.tol*a + m.slack
		ok := math.Abs(b-a) <= limit
		v := fmt.Sprintf("%s: window A mean %.0f (%d samples), window B mean %.0f (%d samples), change %+.1f%%, allowed ±%.0f: %s",
			m.name, a, na, b, nb, 100*(b-a)/a, limit, map[bool]string{true: "flat", false: "NOT FLAT"}[ok])
		verdicts = append(verdicts, v)
		t.Log("soak: " + v)
		if na == 0 || nb == 0 {
			t.Errorf("soak: %s: no samples in a window", m.name)
		} else if !ok {
			t.Errorf("soak: %s grew or shrank beyond the tolerance", m.name)
		}
	}
	if files, _ := proc.Files(pid); filesDiff(baseFiles, files) != "" {
		d := filesDiff(baseFiles, files)
		t.Logf("soak: open files after the load, against the baseline: %s", d)
	}
	if settledIn < 0 {
		t.Errorf("soak: %v after the load: %d goroutines, %d open files (%d of the store); want the baseline %d ± %d, %d ± %d besides the store's, and at most %d more of the store's",
			cfg.settle, settled.goroutines, settled.fds, settled.storeFDs, base.goroutines, cfg.settleGoroutines, base.fds-base.storeFDs, cfg.settleFDs, cfg.storeFDs)
	} else {
		t.Logf("soak: back to the baseline %v after the load: %d goroutines (idle %d), %d open files (idle %d), %d of them the store's (idle %d), RSS %d KiB (idle %d)",
			settledIn.Round(time.Second), settled.goroutines, base.goroutines, settled.fds, base.fds, settled.storeFDs, base.storeFDs, settled.rssKiB, base.rssKiB)
	}
	// What the server counted: closes for slowness (the slow readers,
	// which do not read far enough to see their close frame) and
	// rate_limited answers (including the frames that led to 1008).
	counted, err := scrapeMetrics(probe, srv.URL, metricSlow, metricRateLimited)
	if err != nil {
		t.Fatalf("reading the server's counters: %v", err)
	}
	ld.slow.Store(int64(counted[metricSlow]))
	ld.rateLimited.Store(int64(counted[metricRateLimited]))
	logs := srv.Logs()
	errLines := strings.Count(logs, "level=ERROR")
	keepalives := strings.Count(logs, `msg="keepalive timeout"`)
	t.Logf("soak: load %v: %d dials (%d resumed), %d churn cycles (%d dropped without close, %d left), %d msgs sent, %d rate_limited, %d closed for abuse (1008), %d closed as slow (1013), %d keepalive timeouts, %d typing, %d events, %d HTTP requests (%d failed); %d ERROR lines in the server log",
		cfg.load, ld.dials.Load(), ld.resumed.Load(), ld.churns.Load(), ld.drops.Load(), ld.leaves.Load(), ld.msgsSent.Load(),
		ld.rateLimited.Load(), ld.abuse.Load(), ld.slow.Load(), keepalives, ld.typings.Load(), ld.events.Load(), ld.httpReqs.Load(), ld.httpErrors.Load(), errLines)
	if ld.rateLimited.Load() == 0 || ld.drops.Load() == 0 {
		t.Errorf("soak: the mix did not happen: %d rate_limited, %d abrupt drops; want each > 0", ld.rateLimited.Load(), ld.drops.Load())
	}
	// A slow reader's first stall ends 70–80 s into the load; whether the
	// server's queue bound or the keepalive closes it first depends on how
	// fast the flooders get through on a busy machine. The smoke only
	// reports it; the full campaign, with dozens of stalls, requires 1013s.
	if cfg.load >= 10*time.Minute && ld.slow.Load() == 0 {
		t.Errorf("soak: no slow reader was closed with 1013 in %v", cfg.load)
	}
	if errLines > 0 {
		t.Errorf("soak: the server logged %d errors:\n%s", errLines, grepLines(logs, "level=ERROR", 10))
	}

	if dir := os.Getenv(soakOutEnv); dir != "" {
		stamp := start.UTC().Format("20060102T150405Z")
		csv := filepath.Join(dir, "soak-"+stamp+".csv")
		svg := filepath.Join(dir, "soak-"+stamp+".svg")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(csv, soakCSV(samples), 0o644); err != nil {
			t.Fatal(err)
		}
		title := fmt.Sprintf("roomchatd soak: %v of mixed load, sampled every %v", cfg.load, cfg.interval)
		if err := os.WriteFile(svg, soakChart(title, samples, cfg, loadEnd), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("soak: wrote %s and %s", csv, svg)
	}
}

func abs(n int) int { return max(n, -n) }

// filesDiff describes how the counts of after differ from before, e.g.
// "socket +2, /tmp/x/soak.db-wal +1"; "" if they do not.
func filesDiff(before, after map[string]int) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if d := after[k] - before[k]; d != 0 {
			out = append(out, fmt.Sprintf("%s %+d", k, d))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[k]; !ok {
			out = append(out, fmt.Sprintf("%s %+d", k, -before[k]))
		}
	}
	return strings.Join(out, ", ")
}

// procRSS reads VmRSS, RssAnon and RssFile of process pid, in KiB,
// through the bench's /proc reader.
func procRSS(pid int) (rss, anon, file int64, err error) {
	var kib [3]int64
	for i, field := range []string{"VmRSS", "RssAnon", "RssFile"} {
		n, err := proc.Status(pid, field)
		if err != nil {
			return 0, 0, 0, err
		}
		kib[i] = n >> 10
	}
	return kib[0], kib[1], kib[2], nil
}

// scrapeMetrics reads the values of the named series (name and labels as
// /metrics prints them, e.g. `roomchat_errors_total{code="rate_limited"}`)
// from the server's /metrics; a series not printed yet is 0.
func scrapeMetrics(c *http.Client, base string, names ...string) (map[string]float64, error) {
	res, err := c.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", res.Status)
	}
	vals := map[string]float64{}
	for _, n := range names {
		vals[n] = 0
	}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if _, want := vals[name]; ok && want {
			vals[name], _ = strconv.ParseFloat(v, 64)
		}
	}
	return vals, sc.Err()
}

// Series of /metrics the soak reads.
const (
	metricGoroutines  = "go_goroutines"
	metricHeap        = "go_memstats_heap_inuse_bytes"
	metricSys         = "go_memstats_sys_bytes"
	metricReleased    = "go_memstats_heap_released_bytes"
	metricSlow        = "roomchat_slow_consumers_total"
	metricRateLimited = `roomchat_errors_total{code="rate_limited"}`
)

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func grepLines(s, sub string, n int) string {
	var out []string
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) && len(out) < n {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "\n")
}

// sleepCtx sleeps d or until ctx ends, and reports whether ctx is still on.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func jitter(lo, hi time.Duration) time.Duration { return lo + rand.N(hi-lo+1) }

// soakDial connects (resuming with token if not "") and counts the
// connection open until the returned func is called.
func soakDial(ctx context.Context, url, token string, ld *soakLoad) (*client.Conn, func(), error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, url, client.Options{Resume: token})
	if err != nil {
		return nil, nil, err
	}
	ld.dials.Add(1)
	ld.conns.Add(1)
	var once sync.Once
	return c, func() { once.Do(func() { ld.conns.Add(-1) }) }, nil
}

// drain reads c's events for d (or until the connection or ctx ends) and
// returns the last seq seen of room (or last) and the connection's error.
func drain(ctx context.Context, c *client.Conn, d time.Duration, room string, last int64) (int64, error) {
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		env, _, err := c.Next(dctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return last, nil
			}
			return last, err
		}
		var m protocol.Message
		if env.Type == protocol.TypeMsg && protocol.DecodePayload(env, &m) == nil && m.RoomID == room {
			last = max(last, m.Seq)
		}
	}
}

// closeCode counts the connections the server closed for rate abuse.
// (Closes for slowness are counted by the server: a slow reader does not
// read as far as its close frame.)
func closeCode(err error, ld *soakLoad) {
	if websocket.CloseStatus(err) == websocket.StatusPolicyViolation {
		ld.abuse.Add(1)
	}
}

// soakMember stays in room and chats: a message every 1–3 s, typing
// before some, a custom event now and then. After a drop it resumes and
// re-joins with since.
func soakMember(ctx context.Context, url, room string, ld *soakLoad) {
	token, last := "", int64(0)
	for ctx.Err() == nil {
		c, done, err := soakDial(ctx, url, token, ld)
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		if token != "" {
			ld.resumed.Add(1)
		}
		token = c.Welcome().Resume
		since := last
		if _, err := c.Join(ctx, room, "", &since); err == nil {
			for ctx.Err() == nil {
				if last, err = drain(ctx, c, jitter(time.Second, 3*time.Second), room, last); err != nil {
					closeCode(err, ld)
					break
				}
				if rand.N(3) == 0 {
					c.Typing(ctx, room)
					ld.typings.Add(1)
				}
				if rand.N(10) == 0 {
					c.Send(ctx, protocol.TypeEvent, "", protocol.SendEvent{Name: "reaction", RoomID: room, Data: []byte(`{"emoji":"👍"}`)})
					ld.events.Add(1)
				}
				if c.Send(ctx, protocol.TypeMsg, client.NewID(), protocol.Send{RoomID: room, Message: "soak member " + time.Now().Format(time.StampMilli)}) == nil {
					ld.msgsSent.Add(1)
				}
			}
		}
		c.Close()
		done()
	}
}

// soakChurner connects, joins, maybe sends and reads history, and ends
// the connection one of three ways, over and over.
func soakChurner(ctx context.Context, url string, rooms []string, ld *soakLoad) {
	token := ""
	for ctx.Err() == nil {
		if rand.N(2) == 0 {
			token = ""
		}
		c, done, err := soakDial(ctx, url, token, ld)
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		if token != "" {
			ld.resumed.Add(1)
		}
		token = c.Welcome().Resume
		room := rooms[rand.N(len(rooms))]
		var since *int64
		if rand.N(2) == 0 {
			s := int64(rand.N(200))
			since = &s
		}
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		j, err := c.Join(jctx, room, "", since)
		if err == nil && rand.N(2) == 0 {
			if c.Send(jctx, protocol.TypeMsg, client.NewID(), protocol.Send{RoomID: room, Message: "churn"}) == nil {
				ld.msgsSent.Add(1)
			}
		}
		if err == nil && rand.N(4) == 0 && j.LastSeq > 0 {
			c.History(jctx, room, max(0, j.LastSeq-100), 50)
		}
		cancel()
		drain(ctx, c, jitter(100*time.Millisecond, 600*time.Millisecond), room, 0)
		switch rand.N(3) {
		case 0:
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c.Leave(lctx, room)
			cancel()
			ld.leaves.Add(1)
			c.Close()
		case 1:
			c.Close()
		case 2:
			c.CloseNow() // no close frame: a drop, announced after the grace period
			ld.drops.Add(1)
		}
		done()
		ld.churns.Add(1)
		sleepCtx(ctx, jitter(0, 200*time.Millisecond))
	}
}

// floodText is a message of almost the largest size (3999 characters), so that
// the flooded room's traffic (about 40 of them per second, what the rate
// limit lets two flooders send) fills a stalled reader's queue and socket
// buffers, 1 MiB and a few MiB, within its 60 s stall.
var floodText = strings.Repeat("flood ", 666) + "end"

// soakFlooder sends bursts far past the rate limit into the room
// "flood": 60 messages at 50/s against 20/s with a burst of 40, then a
// 1 s pause. One burst in five is 400 frames as fast as it can write,
// which the server answers by closing the connection as abusive (1008);
// it then reconnects.
func soakFlooder(ctx context.Context, url string, ld *soakLoad) {
	token := ""
	for ctx.Err() == nil {
		c, done, err := soakDial(ctx, url, token, ld)
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		token = c.Welcome().Resume
		if _, err := c.Join(ctx, "flood", "", nil); err == nil {
			for ctx.Err() == nil {
				n, gap := 60, 20*time.Millisecond
				if rand.N(5) == 0 {
					n, gap = 400, 0
				}
				var err error
				for i := 0; i < n && err == nil && ctx.Err() == nil; i++ {
					// The Conn reads in its own goroutine, so the events
					// wait in its queue until drain below.
					if err = c.Send(ctx, protocol.TypeMsg, "", protocol.Send{Message: floodText}); err == nil {
						ld.msgsSent.Add(1)
					}
					if gap > 0 {
						sleepCtx(ctx, gap)
					}
				}
				if err == nil {
					_, err = drain(ctx, c, time.Second, "", 0)
				}
				if err != nil {
					closeCode(err, ld)
					break
				}
			}
		}
		c.CloseNow()
		done()
	}
}

// soakSlowReader joins "flood" over a socket with a 4 KiB receive
// buffer. It reads one frame per 100 ms for 10–20 s (slower than the room
// fills), then stops reading for 60 s: the server's queue for it fills
// and the server closes it with 1013 (counted by the server), unless its
// keepalive (a ping every 25 s, unanswered by a client that does not
// read) closes it first. Then it
// reads what is left as fast as it can, until the connection ends or 5 s
// have passed, and comes back with its resume token and since.
func soakSlowReader(ctx context.Context, url string, ld *soakLoad) {
	hc := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return errors.Join(err, serr)
		},
	}).DialContext}}
	defer hc.CloseIdleConnections()
	wsURL := "ws" + strings.TrimPrefix(url, "http") + "/ws"
	token, last := "", int64(0)
	for ctx.Err() == nil {
		u := wsURL
		if token != "" {
			u += "?resume=" + token
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ws, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: hc})
		cancel()
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		ld.dials.Add(1)
		ld.conns.Add(1)
		ws.SetReadLimit(-1)
		if token != "" {
			ld.resumed.Add(1)
		}
		slowRead(ctx, ws, &token, &last)
		ws.CloseNow()
		ld.conns.Add(-1)
	}
}

// slowRead reads ws as soakSlowReader says until it ends (or ctx does),
// keeping the resume token and the last seq of "flood".
func slowRead(ctx context.Context, ws *websocket.Conn, token *string, last *int64) {
	join := protocol.Encode(protocol.TypeJoin, "j", protocol.Join{RoomID: "flood", Since: last})
	if ws.Write(ctx, websocket.MessageText, join) != nil {
		return
	}
	read := func(rctx context.Context) error {
		_, b, err := ws.Read(rctx)
		if err != nil {
			return err
		}
		for _, raw := range protocol.SplitBatch(b) {
			env, perr := protocol.DecodeEnvelope(raw)
			if perr != nil {
				continue
			}
			switch env.Type {
			case protocol.TypeWelcome:
				var w protocol.Welcome
				if protocol.DecodePayload(env, &w) == nil {
					*token = w.Resume
				}
			case protocol.TypeMsg:
				var m protocol.Message
				if protocol.DecodePayload(env, &m) == nil {
					*last = max(*last, m.Seq)
				}
			}
		}
		return nil
	}
	for ctx.Err() == nil {
		for end := time.Now().Add(jitter(10*time.Second, 20*time.Second)); time.Now().Before(end); {
			if !sleepCtx(ctx, 100*time.Millisecond) || read(ctx) != nil {
				return
			}
		}
		if !sleepCtx(ctx, 60*time.Second) {
			return
		}
		// A Read whose context ends closes the connection
		// (coder/websocket), which is what the 5 s are for anyway.
		fast, cancel := context.WithTimeout(ctx, 5*time.Second)
		for fast.Err() == nil {
			if read(fast) != nil {
				cancel()
				return
			}
		}
		cancel()
	}
}

// soakHTTP reads pages and room info, posts a message and asks /readyz,
// once a second.
func soakHTTP(ctx context.Context, url string, ld *soakLoad) {
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	do := func(method, path, body string) {
		req, err := http.NewRequestWithContext(ctx, method, url+path, strings.NewReader(body))
		if err != nil {
			return
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		ld.httpReqs.Add(1)
		res, err := hc.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				ld.httpErrors.Add(1)
			}
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode >= 400 {
			ld.httpErrors.Add(1)
		}
	}
	for sleepCtx(ctx, time.Second) {
		do("GET", fmt.Sprintf("/api/rooms/r%d/messages?after=%d&limit=100", rand.N(6), rand.N(500)), "")
		do("GET", "/api/rooms/flood/messages?limit=50", "")
		do("GET", fmt.Sprintf("/api/rooms/r%d", rand.N(6)), "")
		do("POST", fmt.Sprintf("/api/rooms/r%d/messages", rand.N(6)), `{"name":"soak-bot","message":"posted"}`)
		do("GET", "/readyz", "")
	}
}

// soakCSV writes the samples as CSV.
func soakCSV(samples []soakSample) []byte {
	var b strings.Builder
	b.WriteString("seconds,rss_kib,rss_anon_kib,rss_file_kib,go_held_kib,heap_inuse_kib,goroutines,open_files,store_files,client_conns\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%.0f,%d,%d,%d,%d,%d,%d,%d,%d,%d\n", s.at.Seconds(), s.rssKiB, s.anonKiB, s.fileKiB, s.goHeldKiB, s.heapKiB, s.goroutines, s.fds, s.storeFDs, s.conns)
	}
	return []byte(b.String())
}

// soakChart draws one panel per metric (RSS and Go heap in MiB,
// goroutines, open files) against minutes: the warm-up shaded grey, the
// two judged windows shaded blue, the band of window A's mean ± the
// tolerance dashed, and the end of the load as a vertical line.
func soakChart(title string, samples []soakSample, cfg soakConfig, loadEnd time.Duration) []byte {
	winA := [2]float64{cfg.warmup.Minutes(), (cfg.warmup + cfg.window).Minutes()}
	c := &chart.TimeSeries{
		Title:   title,
		LeadIn:  winA[0],
		Windows: [][2]float64{winA, {(loadEnd - cfg.window).Minutes(), loadEnd.Minutes()}},
		Marker:  loadEnd.Minutes(),
		Caption: "minutes (grey: warm-up; blue: windows compared; dashed: A's mean ± tolerance; black: load ends)",
	}
	for _, s := range samples {
		c.Minutes = append(c.Minutes, s.at.Minutes())
	}
	// series is one line of a panel: a value of every sample.
	series := func(get func(soakSample) float64) []float64 {
		vals := make([]float64, len(samples))
		for i, s := range samples {
			vals[i] = get(s)
		}
		return vals
	}
	// panel is a metric's panel, its band window A's mean ± the tolerance
	// (relative, plus slack); more lines may follow the metric's.
	panel := func(name, color string, slack float64, lines ...[]float64) chart.Panel {
		sum, n := 0.0, 0
		for i, m := range c.Minutes {
			if m >= winA[0] && m < winA[1] {
				sum += lines[0][i]
				n++
			}
		}
		meanA := sum / float64(max(n, 1))
		band := cfg.tol*meanA + slack
		return chart.Panel{Name: name, Color: color, Lines: lines, Band: []float64{meanA - band, meanA + band}, BandFrom: winA[0]}
	}
	c.Panels = []chart.Panel{
		panel("RSS, MiB (dashed: Go heap in use; dotted: anonymous, outside Go)", "#2563eb", cfg.rssSlackKiB/1024,
			series(func(s soakSample) float64 { return float64(s.rssKiB) / 1024 }),
			series(func(s soakSample) float64 { return float64(s.heapKiB) / 1024 }),
			series(func(s soakSample) float64 { return max(0, float64(s.anonKiB-s.goHeldKiB)) / 1024 })),
		panel("goroutines", "#dc2626", cfg.slackGoroutines, series(func(s soakSample) float64 { return float64(s.goroutines) })),
		panel("open files", "#059669", cfg.slackFDs, series(func(s soakSample) float64 { return float64(s.fds) })),
	}
	return c.SVG()
}
