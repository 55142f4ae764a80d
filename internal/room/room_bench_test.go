package room_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/store"
)

// sink is a connection that accepts every frame and keeps a count: the
// benchmark measures the registry alone, without sockets.
type sink struct{ frames, bytes atomic.Int64 }

func (s *sink) Queue(b []byte) {
	s.frames.Add(1)
	s.bytes.Add(int64(len(b)))
}

// BenchmarkBroadcast sends one message to a room of n members: the cost of
// Registry.Send through the memory store to every member's queue. allocs/op
// stays the same whatever n is: the event is encoded once and the same
// bytes are queued to every member.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			st := store.NewMemory(store.Retention{MaxMessages: 100})
			defer st.Close()
			reg := room.New(st, room.Options{})
			defer reg.Close()
			sinks := make([]*sink, n)
			var sender *room.User
			for i := range n {
				sinks[i] = new(sink)
				u, _, _ := reg.Connect(sinks[i], "")
				if err := reg.Join(context.Background(), u, sinks[i], "bench", "", nil, ""); err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					sender = u
				}
			}
			before := sinks[n-1].frames.Load()
			b.ReportAllocs()
			for b.Loop() {
				if err := reg.Send(sender, "bench", "a message of some sixty-four bytes, like the benchmark's ones.", ""); err != nil {
					b.Fatal(err)
				}
			}
			if got := sinks[n-1].frames.Load() - before; got < int64(b.N) {
				b.Fatalf("last member got %d frames for %d messages", got, b.N)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}
