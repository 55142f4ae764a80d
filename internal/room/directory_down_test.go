package room_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomchat/roomchat/internal/room"
)

// downDirectory is a cluster's room.Directory while Redis cannot be
// asked (away, or a failover under way): every Resume fails.
type downDirectory struct{}

func (downDirectory) Online(string, time.Time)                 {}
func (downDirectory) Offline(string)                           {}
func (downDirectory) Disconnect(context.Context, string) error { return errors.New("redis down") }
func (downDirectory) WatchDisconnect(func(string))             {}
func (downDirectory) Watch(func(string, time.Time)) {
}

func (downDirectory) Resume(context.Context, string, time.Time, time.Time, time.Duration) (bool, bool, error) {
	return false, false, errors.New("redis: connection refused")
}

// A client bounced between two nodes of a cluster while the Directory
// cannot be asked keeps its userID (SPEC §8: resume on any path, and
// de-duplication is per user): a node that does not hold the user takes
// a token issued within the resume window, and a node that holds it
// takes a token newer than the one it gave, issued by the other node. A
// token older than the window, or one the node knows was superseded,
// still gives a new user.
func TestResumeElsewhereWhileDirectoryDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memStore() // one store: the nodes sign with one key
		nodes := []*room.Registry{
			newRegistry(t, st, room.Options{Directory: downDirectory{}}),
			newRegistry(t, st, room.Options{Directory: downDirectory{}}),
		}
		sleep(time.Second) // tokens issued from now on come from after both started

		a := connect(t, nodes[0])
		id, first := a.user.ID(), a.user.Token()
		a.drop(false)
		sleep(5 * time.Second)
		b, resumed := resume(t, nodes[1], first)
		if !resumed || b.user.ID() != id {
			t.Fatalf("node 1, not holding the user: resumed %v as %q, want %q", resumed, b.user.ID(), id)
		}
		b.drop(false)
		sleep(5 * time.Second)
		c, resumed := resume(t, nodes[0], b.user.Token())
		if !resumed || c.user.ID() != id {
			t.Fatalf("back on node 0 with node 1's token: resumed %v as %q, want %q", resumed, c.user.ID(), id)
		}
		sleep(time.Minute) // past every overlap
		if d, resumed := resume(t, nodes[0], first); resumed || d.user.ID() == id {
			t.Fatal("node 0 resumed the user with a token it had seen replaced")
		}

		old := connect(t, nodes[0])
		oldToken := old.user.Token()
		old.drop(false)
		sleep(2*time.Minute + time.Second)
		if e, resumed := resume(t, nodes[1], oldToken); resumed || e.user.ID() == old.user.ID() {
			t.Fatal("node 1 resumed a user with a token older than the resume window")
		}
	})
}
