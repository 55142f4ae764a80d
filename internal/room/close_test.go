package room_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/room"
)

// Once Close has returned, nothing of the registry's runs any more: a
// reset the broker reports afterwards starts no history read (rejoin),
// and a drop afterwards arms no grace period or resume window, whose
// timers would announce a leave and remove the user later.
func TestNothingRunsAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newHeldStore()
		lb := broker.NewLocal(st)
		reg := newRegistry(t, st, room.Options{Broker: lb})
		h := reg.Handler()
		lb.Start(h)
		a, b := connect(t, reg), connect(t, reg)
		a.join("r")
		b.join("r")
		sleep(time.Second)
		b.conn.take()
		if err := reg.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}

		st.mu.Lock()
		before := st.pages
		st.mu.Unlock()
		h.Reset("r", "new-epoch")
		a.drop(false)
		synctest.Wait()
		st.mu.Lock()
		after := st.pages
		st.mu.Unlock()
		if after != before {
			t.Errorf("%d history reads after Close, want none", after-before)
		}
		sleep(time.Hour) // past every grace period and resume window
		for _, f := range b.conn.take() {
			t.Errorf("b got %s after Close, want nothing", f.env.Type)
		}
		if err := reg.Close(); err != nil {
			t.Fatalf("Close again: %v", err)
		}
	})
}
