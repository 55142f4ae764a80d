package cluster

// The Redis client library was chosen by measuring the publish step
// (publish.lua, the one Redis call per message) under concurrency (SPEC
// §8: one publish per message): rueidis, whose Do auto-pipelines the calls of concurrent
// goroutines on one connection, against go-redis, which gives each call a
// connection of its pool (and, since v9.20, an experimental
// auto-pipeliner), and the store's own path, Store.Append, where one
// writer goroutine sends whatever is queued as one ExecMulti pipeline.
// go-redis is a test-only requirement: it is imported here and nowhere
// else. The figures and the reasoning are in docs/benchmarks.md and
// docs/architecture.md ("Dependencies and why").
//
// Every benchmark runs the same script text (the embedded publishLua) with
// the same keys and arguments (publishExec, as the store builds them: a
// de-duplication key per message, 100 rooms) from 64 goroutines, each
// waiting for its answer before it sends its next message, against a real
// redis-server of its own. ns/op is wall time per message over all 64;
// allocs/op counts the whole process (client goroutines included) per
// message; redis-µs/msg is the redis-server's CPU time per message.
//
//	go test -run '^$' -bench Publish -benchmem -count 3 ./internal/cluster/

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/proc"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
)

// publishers is how many goroutines publish at once.
const publishers = 64

// benchRooms is how many rooms the messages go to, round robin.
const benchRooms = 100

// benchMsgs numbers messages across every run of a benchmark binary, so
// that no message is a retry of an earlier one (each has its own
// de-duplication key) and the script does its whole work every time.
var benchMsgs atomic.Int64

// nextPublish returns the next message and its de-duplication key.
func nextPublish() (protocol.Message, string) {
	n := benchMsgs.Add(1)
	room := "bench-" + strconv.FormatInt(n%benchRooms, 10)
	id := "m" + strconv.FormatInt(n, 10)
	m := protocol.Message{
		ID: id, RoomID: room,
		From:    protocol.User{UserID: "u" + strconv.FormatInt(n%publishers, 10), Name: "bench"},
		Message: "a 64-byte chat message, about what a person types in one line.",
		TS:      time.Unix(1_800_000_000, 0).UTC(),
	}
	return m, store.DedupKey(m.From.UserID, room, id)
}

// startBenchRedis starts a redis-server for one benchmark. It fsyncs its
// append-only file once a second (appendfsync everysec, the usual
// production setting): with "always", every event-loop turn waits for the
// disk, and on this shared machine the disk, not the client library,
// would be what the benchmark measures.
func startBenchRedis(b *testing.B) *redistest.Server {
	b.Helper()
	return redistest.Start(b, redistest.Options{Args: []string{"--appendfsync", "everysec"}})
}

// benchStore opens a Store on srv for its key layout and arguments (and,
// for BenchmarkPublishStore, its writer).
func benchStore(b *testing.B, srv *redistest.Server) *Store {
	b.Helper()
	st, err := Open(context.Background(), Options{URL: srv.URL(), Prefix: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// runPublishers runs b.N publishes from publishers goroutines, each
// calling publish until the shared count runs out, and reports the
// figures described at the top of the file. A failed publish fails the
// benchmark.
func runPublishers(b *testing.B, srv *redistest.Server, publish func(ctx context.Context) error) {
	b.Helper()
	ctx := b.Context()
	// Warm the connections and the script cache outside the timed part.
	for range publishers {
		if err := publish(ctx); err != nil {
			b.Fatalf("publish: %v", err)
		}
	}
	b.ReportAllocs()
	admin := srv.Client()
	cpu0, script0 := proc.CPU(srv.PID()), scriptTime(b, srv, admin)
	var (
		left     atomic.Int64
		wg       sync.WaitGroup
		failures atomic.Int64
		firstErr atomic.Pointer[error]
	)
	left.Store(int64(b.N))
	b.ResetTimer()
	start := time.Now()
	for range publishers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := publish(ctx); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d of %d publishes failed, the first: %v", n, b.N, *firstErr.Load())
	}
	b.ReportMetric(float64(elapsed.Microseconds())/float64(b.N), "µs/msg")
	if cpu1 := proc.CPU(srv.PID()); cpu0 >= 0 && cpu1 >= 0 {
		b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "redis-µs/msg")
	}
	b.ReportMetric(float64((scriptTime(b, srv, admin)-script0).Microseconds())/float64(b.N), "script-µs/msg")
}

// scriptTime returns how long Redis has spent running scripts (EVALSHA
// and EVAL), from INFO commandstats: the part of its CPU time per message
// that does not depend on the client library (reading, parsing and
// answering the calls does).
func scriptTime(b *testing.B, srv *redistest.Server, admin rueidis.Client) time.Duration {
	b.Helper()
	reply := srv.Do(admin, "INFO", "commandstats")
	info, err := reply.ToString()
	if err != nil {
		b.Fatalf("INFO commandstats: %v", err)
	}
	var usec int64
	for line := range strings.Lines(info) {
		name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (name != "cmdstat_evalsha" && name != "cmdstat_eval") {
			continue
		}
		for f := range strings.SplitSeq(stats, ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				usec += n
			}
		}
	}
	return time.Duration(usec) * time.Microsecond
}

// BenchmarkPublishRueidis: publish.lua through rueidis's Lua.Exec
// (EVALSHA, EVAL on NOSCRIPT) from 64 goroutines on one client, which
// pipelines concurrent calls on its shared connection (auto-pipelining).
func BenchmarkPublishRueidis(b *testing.B) {
	srv := startBenchRedis(b)
	st := benchStore(b, srv)
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(client.Close)
	b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
		runPublishers(b, srv, func(ctx context.Context) error {
			m, key := nextPublish()
			now := time.Now()
			e := st.publishExec(m, key, now.Add(time.Minute), now)
			_, _, err := parsePublish(m, publishScript.Exec(ctx, client, e.Keys, e.Args))
			return err
		})
	})
}

// BenchmarkPublishGoRedis: publish.lua through go-redis's Script.Run
// (EVALSHA, EVAL on NOSCRIPT) from 64 goroutines: with the default pool
// (10 connections per GOMAXPROCS), with a pool of one connection per
// publisher, and through the experimental blocking auto-pipeliner.
func BenchmarkPublishGoRedis(b *testing.B) {
	srv := startBenchRedis(b)
	st := benchStore(b, srv)
	script := goredis.NewScript(commonLua + publishLua)
	for _, tc := range []struct {
		name     string
		poolSize int // 0: go-redis's default
		auto     bool
	}{
		{name: "pool=default"},
		{name: fmt.Sprintf("pool=%d", publishers), poolSize: publishers},
		{name: "autopipeline", auto: true},
	} {
		client := goredis.NewClient(&goredis.Options{Addr: srv.Addr, PoolSize: tc.poolSize})
		b.Cleanup(func() { client.Close() })
		var scripter goredis.Scripter = client
		if tc.auto {
			ap, err := client.AutoPipeline()
			if err != nil {
				b.Fatal(err)
			}
			scripter = ap
		}
		b.Run(fmt.Sprintf("publishers=%d/%s", publishers, tc.name), func(b *testing.B) {
			runPublishers(b, srv, func(ctx context.Context) error {
				m, key := nextPublish()
				now := time.Now()
				e := st.publishExec(m, key, now.Add(time.Minute), now)
				args := make([]any, len(e.Args))
				for i, a := range e.Args {
					args[i] = a
				}
				res, err := script.Run(ctx, scripter, e.Keys, args...).Slice()
				if err != nil {
					return err
				}
				if len(res) < 2 {
					return fmt.Errorf("publish: %d values", len(res))
				}
				if isNew, _ := res[0].(int64); isNew != 1 {
					return fmt.Errorf("publish: message %s taken for a retry", m.ID)
				}
				return nil
			})
		})
	}
}

// BenchmarkPublishStore: the project's path, Store.Append from 64
// goroutines, each waiting for its done callback (the ack). The store's
// writer sends what is queued as one ExecMulti pipeline (up to maxBatch)
// and calls back in order.
func BenchmarkPublishStore(b *testing.B) {
	srv := startBenchRedis(b)
	st := benchStore(b, srv)
	b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
		runPublishers(b, srv, func(ctx context.Context) error {
			m, key := nextPublish()
			done := make(chan error, 1)
			st.Append(m, key, func(_ protocol.Message, dup bool, err error) {
				if err == nil && dup {
					err = fmt.Errorf("message %s taken for a retry", m.ID)
				}
				done <- err
			})
			select {
			case err := <-done:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
}
