package room_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
)

// view is what one member knows of a room's members, rebuilt from the
// frames queued to it, as a client does: joined sets it, presence events
// change it.
type view struct {
	members map[string]string // userID → name
	count   int
}

// replay applies frames to v, failing t on any frame a client could not
// make sense of: a leave of a user it does not know, a join of one it
// knows under the same name, a count that is not the number of members it
// knows (the room is small enough that joined lists every member).
func (v *view) replay(t *testing.T, who string, frames []frame) {
	t.Helper()
	for _, f := range frames {
		switch f.env.Type {
		case protocol.TypeJoined:
			var j protocol.Joined
			decode(t, f.env, &j)
			v.members = map[string]string{}
			for _, u := range j.Members {
				v.members[u.UserID] = u.Name
			}
			v.count = j.Count
		case protocol.TypePresence:
			var p protocol.Presence
			decode(t, f.env, &p)
			name, known := v.members[p.User.UserID]
			switch p.Event {
			case protocol.PresenceJoin:
				if known && name == p.User.Name {
					t.Fatalf("%s: a join of %s (%s), who it already had", who, p.User.UserID, name)
				}
				v.members[p.User.UserID] = p.User.Name
			case protocol.PresenceLeave:
				if !known {
					t.Fatalf("%s: a leave of %s, whose join it never had", who, p.User.UserID)
				}
				delete(v.members, p.User.UserID)
			}
			v.count = p.Count
		default:
			continue
		}
		if v.count != len(v.members) {
			t.Fatalf("%s: after a %s its count is %d, but it knows %d members", who, f.env.Type, v.count, len(v.members))
		}
	}
}

// knows fails unless v is the room's membership now (but for the member
// itself, which knows it is there).
func (v *view) knows(t *testing.T, who string, reg *room.Registry, roomID string) {
	t.Helper()
	users, count, err := reg.Members(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, u := range users {
		want[u.UserID] = u.Name
	}
	if !maps.Equal(v.members, want) || v.count != count {
		t.Fatalf("%s knows %d members %v (count %d), the room has %d: %v", who, len(v.members), v.members, v.count, count, want)
	}
}

func (p *peer) joinAs(roomID, name string) {
	p.t.Helper()
	if err := p.reg.Join(context.Background(), p.user, p.conn, roomID, name, nil, "j"); err != nil {
		p.t.Fatalf("join %s: %v", roomID, err)
	}
}

func (p *peer) leave(roomID string) {
	p.t.Helper()
	if err := p.reg.Leave(p.user, p.conn, roomID, ""); err != nil {
		p.t.Fatalf("leave %s: %v", roomID, err)
	}
}

// A user's join and leave that go out in the same flush cancel, and the
// other events' counts are told from the count now: join X, join Y,
// leave X costs the watcher one event, Y's join, with the count after
// all three.
func TestPresenceJoinLeaveCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		watcher := connect(t, reg)
		watcher.join("r")
		sleep(time.Second)
		watcher.conn.take()
		x, y := connect(t, reg), connect(t, reg)
		x.join("r")
		y.join("r")
		x.leave("r")
		sleep(time.Second)
		ps := presences(t, watcher.conn.take())
		if len(ps) != 1 || ps[0].Event != protocol.PresenceJoin || ps[0].User.UserID != y.user.ID() || ps[0].Count != 2 {
			t.Fatalf("watcher got %+v, want only y's join with count 2", ps)
		}
		// y was there before, and saw x come and go: nothing about x
		// goes to y either (its joined listed x; the leave then went out).
		var v view
		v.replay(t, "y", y.conn.take())
		v.knows(t, "y", reg, "r")
	})
}

// A leave and a join again under the same name cancel (the user never
// left, as far as anyone can see); under another name they are the join,
// which carries the new name.
func TestPresenceLeaveJoinCollapse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		watcher, x := connect(t, reg), connect(t, reg)
		watcher.join("r")
		x.joinAs("r", "xavier")
		sleep(time.Second)
		watcher.conn.take()

		x.leave("r")
		x.joinAs("r", "xavier")
		sleep(time.Second)
		if ps := presences(t, watcher.conn.take()); len(ps) != 0 {
			t.Fatalf("leave and join under the same name: watcher got %+v, want nothing", ps)
		}

		x.leave("r")
		x.joinAs("r", "xena")
		sleep(time.Second)
		ps := presences(t, watcher.conn.take())
		if len(ps) != 1 || ps[0].Event != protocol.PresenceJoin || ps[0].User.Name != "xena" || ps[0].Count != 2 {
			t.Fatalf("leave and join under a new name: watcher got %+v, want one join as xena, count 2", ps)
		}
	})
}

// A member that joins between a user's join and leave has that user in
// its joined, so it gets the leave, while the members that were there
// before get nothing about that user.
func TestPresenceCollapseForLateJoiner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		watcher := connect(t, reg)
		watcher.join("r")
		sleep(time.Second)
		watcher.conn.take()
		x, late := connect(t, reg), connect(t, reg)
		x.join("r")
		late.join("r") // its joined lists x
		x.leave("r")
		sleep(time.Second)

		wf := watcher.conn.take()
		if ps := presences(t, wf); len(ps) != 1 || ps[0].User.UserID != late.user.ID() || ps[0].Count != 2 {
			t.Fatalf("watcher got %+v, want only late's join, count 2", ps)
		}
		lf := late.conn.take()
		if ps := presences(t, lf); len(ps) != 1 || ps[0].Event != protocol.PresenceLeave || ps[0].User.UserID != x.user.ID() || ps[0].Count != 2 {
			t.Fatalf("late got %+v, want x's leave, count 2", ps)
		}
		var v view
		v.replay(t, "late", lf)
		v.knows(t, "late", reg, "r")
	})
}

// A join/leave loop costs each member at most one presence event per
// flush, whatever its speed: 250 cycles in 5 s (a join and a leave every
// 20 ms, as fast as the default rate limit of 20 frames a second lets
// five such loops go) reach a watcher as a handful of events, and the
// watcher's view stays right throughout.
func TestPresenceLoopCostsOneEventPerFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t, memStore(), room.Options{})
		watcher := connect(t, reg)
		watcher.join("r")
		var v view
		v.replay(t, "watcher", watcher.conn.take())
		loopers := []*peer{connect(t, reg), connect(t, reg)}
		for range 250 {
			for _, l := range loopers {
				l.join("r")
			}
			sleep(10 * time.Millisecond)
			for _, l := range loopers {
				l.leave("r")
			}
			sleep(10 * time.Millisecond)
		}
		loopers[0].join("r") // ends in the room
		sleep(2 * time.Second)
		frames := watcher.conn.take()
		v.replay(t, "watcher", frames)
		v.knows(t, "watcher", reg, "r")
		var flushes []time.Time
		perFlush := map[time.Time]map[string]int{}
		for _, f := range ofType(frames, protocol.TypePresence) {
			var p protocol.Presence
			decode(t, f.env, &p)
			if perFlush[f.at] == nil {
				perFlush[f.at] = map[string]int{}
				flushes = append(flushes, f.at)
			}
			perFlush[f.at][p.User.UserID]++
		}
		for _, at := range flushes {
			for u, n := range perFlush[at] {
				if n > 1 {
					t.Fatalf("one flush at %v carried %d events about %s, want at most 1", at, n, u)
				}
			}
		}
		events := len(ofType(frames, protocol.TypePresence))
		t.Logf("500 joins and 500 leaves of 2 loopers over 5 s: %d presence events to the watcher in %d flushes", events, len(flushes))
		// 5 s of loop and the end: a flush a second once it is a burst,
		// and the few single flushes before it is one.
		if events > 2*(5+3) {
			t.Fatalf("the watcher got %d presence events, want at most %d", events, 2*(5+3))
		}
	})
}

// Random joins, leaves, renames, drops and messages in one room, with
// members joining all along: every member's view, rebuilt from what was
// queued to it, is consistent at every frame (no leave without its join,
// each count the number of members it knows) and, at the end, is the
// room's membership.
func TestPresenceViewsConsistent(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rnd := rand.New(rand.NewPCG(seed, 42))
				// Every member listed in joined, so that a view can be whole.
				reg := newRegistry(t, memStore(), room.Options{Limits: limits(func(l *protocol.Limits) { l.MaxMembers = 10000 })})
				var users []*peer // connected, in the room or not
				in := map[*peer]bool{}
				var watchers []*peer
				for range 600 {
					switch op := rnd.IntN(10); {
					case op < 3 || len(users) == 0:
						p := connect(t, reg)
						users = append(users, p)
						p.joinAs("r", fmt.Sprint("u", len(users)))
						in[p] = true
					case op < 5:
						p := users[rnd.IntN(len(users))]
						if in[p] {
							p.leave("r")
						} else {
							p.joinAs("r", fmt.Sprint("n", rnd.IntN(3)))
						}
						in[p] = !in[p]
					case op < 6:
						// A clean close (leave at once) or a drop (leave
						// after the grace period), then a new user.
						i := rnd.IntN(len(users))
						users[i].drop(rnd.IntN(2) == 0)
						delete(in, users[i])
						users = slices.Delete(users, i, i+1)
					case op < 7:
						w := connect(t, reg)
						w.join("r")
						watchers = append(watchers, w)
					case op < 8:
						for p := range in {
							if in[p] {
								p.send("r", "hi")
								break
							}
						}
					default:
						sleep(time.Duration(rnd.IntN(300)) * time.Millisecond)
					}
				}
				sleep(20 * time.Second) // past every grace period
				for i, w := range watchers {
					var v view
					who := fmt.Sprint("watcher ", i)
					v.replay(t, who, w.conn.take())
					v.knows(t, who, reg, "r")
				}
			})
		})
	}
}
