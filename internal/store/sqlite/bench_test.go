package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/proc"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// BenchmarkAppend measures sustained stored messages per second under
// group commit, and the ack latency (Append to done) that goes with it.
// appenders Appends are outstanding at any time, like that many clients
// each sending its next message as soon as the last is acked, spread
// over 100 rooms. "keyed" gives every message a de-duplication key, as
// clients that send an id do.
func BenchmarkAppend(b *testing.B) {
	for _, keyed := range []bool{true, false} {
		for _, appenders := range []int{1, 64, 1024} {
			b.Run(fmt.Sprintf("keyed=%v/appenders=%d", keyed, appenders), func(b *testing.B) {
				benchAppend(b, keyed, appenders)
			})
		}
	}
}

func benchAppend(b *testing.B, keyed bool, appenders int) {
	s := mustOpen(b, filepath.Join(b.TempDir(), "roomchat.db"), Options{})
	defer s.Close()
	m := storetest.Msg("r", "hello there, this is a chat message of typical length")
	sem := make(chan struct{}, appenders)
	var wg sync.WaitGroup
	var lat []time.Duration // appended by done, which only the committer calls
	var failed int
	i := 0
	start := time.Now()
	cpu0 := proc.SelfCPU()
	for b.Loop() {
		sem <- struct{}{}
		m.RoomID = fmt.Sprintf("room-%d", i%100)
		m.ID = fmt.Sprintf("msg-%012d", i)
		key := ""
		if keyed {
			key = store.DedupKey("user-0123456789", m.RoomID, m.ID)
		}
		i++
		wg.Add(1)
		t0 := time.Now()
		s.Append(m, key, func(_ protocol.Message, _ bool, err error) {
			lat = append(lat, time.Since(t0))
			if err != nil {
				failed++
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := proc.SelfCPU() - cpu0
	b.StopTimer()
	if failed > 0 {
		b.Fatalf("%d Appends failed", failed)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	// The process's CPU time per message: the clock time of the waits
	// for fsync left out, what a message costs the core it shares with
	// the server's other work (the checkpointer's included).
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(lat)), "cpu-µs/msg")
}

// BenchmarkHistory50 measures reading the newest 50 messages of a room
// (joined.history) out of 10,000 stored in 10 rooms.
func BenchmarkHistory50(b *testing.B) {
	s := mustOpen(b, filepath.Join(b.TempDir(), "roomchat.db"), Options{})
	defer s.Close()
	var wg sync.WaitGroup
	for i := range 10000 {
		m := storetest.Msg(fmt.Sprintf("room-%d", i%10), fmt.Sprint("message number ", i))
		wg.Add(1)
		s.Append(m, "", func(protocol.Message, bool, error) { wg.Done() })
	}
	wg.Wait()
	ctx := context.Background()
	for b.Loop() {
		ms, err := s.Messages(ctx, "room-3", store.Query{Limit: 50, Newest: true})
		if err != nil || len(ms) != 50 {
			b.Fatalf("Messages: %d messages, %v", len(ms), err)
		}
	}
}

// BenchmarkMarkOpen measures what Open's record of the start costs
// (boot.go): one transaction committed with synchronous=FULL, one fsync
// of the WAL. With rotate, the file looks as if the machine had stopped
// during its last run, and every one of rooms rooms gets a new epoch in
// that transaction.
func BenchmarkMarkOpen(b *testing.B) {
	for _, rooms := range []int{100, 100_000} {
		for _, rotate := range []bool{false, true} {
			b.Run(fmt.Sprintf("rooms=%d/rotate=%v", rooms, rotate), func(b *testing.B) {
				path := filepath.Join(b.TempDir(), "roomchat.db")
				s := mustOpen(b, path, Options{Synchronous: "NORMAL"})
				for i := 0; i < rooms; {
					var batch []func()
					for ; i < rooms && len(batch) < 4096; i++ {
						var wg sync.WaitGroup
						wg.Add(1)
						s.Append(storetest.Msg(fmt.Sprintf("room-%d", i), "hello"), "", func(protocol.Message, bool, error) { wg.Done() })
						batch = append(batch, wg.Wait)
					}
					for _, w := range batch {
						w()
					}
				}
				s.Close()
				boot := "this-boot"
				if rotate {
					boot = "a-later-boot"
				}
				for b.Loop() {
					b.StopTimer()
					editMeta(b, path, "DELETE FROM meta WHERE key = 'clean_stop'", "UPDATE meta SET value = 'this-boot' WHERE key = 'boot_id'")
					db, err := sql.Open("sqlite", dsn(path, time.Second, "_txlock=immediate&_pragma=synchronous(NORMAL)"))
					if err != nil {
						b.Fatal(err)
					}
					db.SetMaxOpenConns(1)
					b.StartTimer()
					_, n, err := markOpen(context.Background(), db, boot, "NORMAL", rand.Reader)
					b.StopTimer()
					db.Close()
					if err != nil || rotate != (n == int64(rooms)) {
						b.Fatalf("markOpen: %d rooms rotated, %v", n, err)
					}
					b.StartTimer()
				}
			})
		}
	}
}
