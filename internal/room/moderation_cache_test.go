package room_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
)

// A room's cached moderation state that has aged past its lifetime is
// read again by a goroutine of the registry, not by the sender: a msg
// while the store's read is held is stored and delivered at once, and the
// read, once let go, fills the cache again (the next msg reads nothing).
// A state this node's own change dropped is read before use.
func TestStaleModerationStateHoldsNoSender(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newHeldStore()
		reg := newRegistry(t, st, room.Options{})
		a := connect(t, reg)
		a.join("r")
		synctest.Wait()
		a.conn.take()

		time.Sleep(6 * time.Second) // past the cache's lifetime
		gate := make(chan struct{})
		st.mu.Lock()
		st.holdRule, st.ruleReads = gate, 0
		st.mu.Unlock()
		sent := time.Now()
		a.send("r", "one")
		if waited := time.Since(sent); waited > 0 {
			t.Fatalf("the sender waited %v for the store's read of the room's moderation state", waited)
		}
		synctest.Wait() // the sender is done; the refresh waits on the gate
		if n := countType(a.conn.take(), protocol.TypeMsg); n != 1 {
			t.Fatalf("%d msg delivered while the refresh is held, want 1", n)
		}
		a.send("r", "two") // the stale state again; no second refresh
		synctest.Wait()
		st.mu.Lock()
		reads := st.ruleReads
		st.mu.Unlock()
		if reads != 1 {
			t.Fatalf("%d reads of the post rule for two stale sends, want 1 (in the background)", reads)
		}
		close(gate)
		synctest.Wait()
		a.send("r", "three")
		synctest.Wait()
		st.mu.Lock()
		reads = st.ruleReads
		st.holdRule = nil
		st.mu.Unlock()
		if reads != 1 {
			t.Fatalf("%d reads after the refresh, want none more: the cache was not filled", reads)
		}

		// This node's own change drops the cache: the next event is
		// checked against the store's new state, read first.
		if err := reg.Configure(context.Background(), room.Actor{User: protocol.User{UserID: "mod"}, Role: policy.RoleOwner}, "r", "moderators"); err != nil {
			t.Fatal(err)
		}
		if err := reg.Event(a.user, "r", "wave", nil); err == nil {
			t.Fatal("a member's event right after configure moderators was relayed")
		}
	})
}

func countType(fs []frame, typ string) int {
	n := 0
	for _, f := range fs {
		if f.env.Type == typ {
			n++
		}
	}
	return n
}
