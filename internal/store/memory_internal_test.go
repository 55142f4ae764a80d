package store

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// TestMemoryDedupShrinks: the de-duplication map forgets expired keys and
// is rebuilt small once they are gone, rather than keeping the buckets of a
// burst of keyed messages.
func TestMemoryDedupShrinks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewMemory(Retention{})
		defer s.Close()
		send := func(i int) {
			m := protocol.Message{ID: fmt.Sprint(i), RoomID: "r", Message: "x", TS: time.Now()}
			s.Append(m, DedupKey("u", "r", fmt.Sprint(i)), func(_ protocol.Message, _ bool, err error) {
				if err != nil {
					t.Fatal(err)
				}
			})
		}
		for i := range 5000 {
			send(i)
		}
		if len(s.dedup) != 5000 {
			t.Fatalf("%d keys after 5000 keyed messages", len(s.dedup))
		}
		time.Sleep(DedupWindow + time.Minute)
		send(-1)
		if len(s.dedup) != 1 || s.dedupPeak != 1 {
			t.Fatalf("after the window: %d keys, peak %d; want 1 and a map rebuilt to 1", len(s.dedup), s.dedupPeak)
		}
	})
}
