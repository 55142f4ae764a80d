package room

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// User is one person's identity on the server: a userID that survives
// reconnects through a resume token, and the rooms it is in. It lives in
// Registry.users while it has a connection or its resume window runs.
//
// Its two timers run graceOver and expire on timer goroutines; a timer
// that fires late (after Stop lost the race, or after a later drop started
// another) finds graceGen or conn changed and does nothing.
type User struct {
	reg *Registry // read-only
	id  string    // read-only
	// grants is the verified identity's roles (SPEC §10); nil: anonymous.
	// Set without mu (SetGrants), read without it on a message's path.
	grants atomic.Pointer[grantsRef]

	// mu guards the fields below. Lock order: Registry.mu, then mu (Connect
	// checks a token under both). Never held with a Room's mu: code that
	// needs both takes one, copies what it needs, and releases it.
	mu     sync.Mutex
	name   string
	conn   Conn      // the current connection; nil after a drop
	token  string    // the resume token of the last welcome or resume event
	issued time.Time // when token was issued, to the millisecond
	// prevToken, the token this connection resumed with or the one
	// Reissue replaced, keeps working until prevUntil, for a client that
	// did not get the new one.
	prevToken string
	prevUntil time.Time
	rooms     roomSet // rooms joined on the current connection
	// ghosts are rooms kept through the grace period after a drop, until
	// the user joins them again or the grace period ends.
	ghosts      roomSet
	graceTimer  *time.Timer // ends the grace period; nil when none runs
	graceGen    uint64      // counts startGrace calls; a stale timer's graceOver does nothing
	expireTimer *time.Timer // ends the resume window
	// returned is when the user came back with a token of a user this
	// node did not know (a restart, or another node of a cluster): its
	// joins within the resume window after that would have been silent
	// but for the move, and take nothing from a room's join budget.
	returned time.Time
	budget   userBudget // its frames over all its connections (Budgets)
	// fixedName is set when the token's name claim fixes the name.
	fixedName bool
}

// ID returns the userID.
func (u *User) ID() string { return u.id }

// Name returns the name the user joined with last (guest-xxxx at first).
func (u *User) Name() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.name
}

// Token returns the current resume token.
func (u *User) Token() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.token
}

// attach makes c the user's connection and returns the one it replaces, if
// that one was still attached.
func (u *User) attach(c Conn) (replaced Conn) {
	u.mu.Lock()
	replaced = u.conn
	rooms := u.rooms
	u.conn = c
	u.rooms = nil
	for _, r := range rooms {
		u.ghosts.add(r)
	}
	if len(rooms) > 0 {
		u.startGrace()
	}
	if u.expireTimer != nil {
		u.expireTimer.Stop()
		u.expireTimer = nil
	}
	u.mu.Unlock()
	// The replaced connection's memberships stop receiving; the new one
	// joins again to receive.
	for _, r := range rooms {
		r.mu.Lock()
		if m := r.member(u); m != nil && m.conn == replaced {
			r.setConn(m, nil)
		}
		r.mu.Unlock()
	}
	return replaced
}

// startGrace starts the grace period for the user's ghost rooms, or starts
// it again if one runs: a room dropped now gets a whole grace period even
// when an earlier drop's period is about to end. Guarded by u.mu.
func (u *User) startGrace() {
	if u.graceTimer != nil {
		u.graceTimer.Stop()
		u.graceTimer = nil
	}
	u.graceGen++
	if u.reg.closed.Load() {
		return // Close has begun: no timer
	}
	gen := u.graceGen
	u.graceTimer = time.AfterFunc(u.reg.grace, func() { u.graceOver(gen) })
}

// graceOver ends the grace period: rooms not joined again are left, with a
// presence leave to their members.
func (u *User) graceOver(gen uint64) {
	u.mu.Lock()
	if gen != u.graceGen {
		// A later drop started the period again; its timer ends it.
		u.mu.Unlock()
		return
	}
	ghosts := u.ghosts
	u.ghosts = nil
	u.graceTimer = nil
	u.mu.Unlock()
	for _, r := range ghosts {
		r.mu.Lock()
		left := -1
		// A member joined again since (conn set) stays.
		if m := r.member(u); m != nil && m.conn == nil {
			left = u.reg.removeMember(r, u)
		}
		r.mu.Unlock()
		u.reg.logLeave(r, u, left)
	}
}

// expire ends the resume window: the token stops working.
func (u *User) expire() {
	u.mu.Lock()
	if u.conn != nil {
		u.mu.Unlock()
		return
	}
	u.mu.Unlock()
	u.reg.mu.Lock()
	if u.reg.users[u.id] == u {
		delete(u.reg.users, u.id)
		u.reg.users = compact(u.reg.users, &u.reg.usersPeak)
	}
	u.reg.mu.Unlock()
}

// queue sends frame to the user's current connection, if any.
func (u *User) queue(frame []byte) {
	u.mu.Lock()
	c := u.conn
	u.mu.Unlock()
	if c != nil {
		c.Queue(frame)
	}
}

// resolve finds the room a frame means: roomID, or, when it is empty, the
// only room the user is in on this connection.
func (u *User) resolve(roomID string) (*Room, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.find(roomID)
}

// leaving is resolve for a leave: it also takes the room out of the
// user's rooms, so that a frame sent after the leave cannot resolve to it.
func (u *User) leaving(roomID string) (*Room, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, err := u.find(roomID)
	if err == nil {
		u.rooms.remove(r.id)
	}
	return r, err
}

// find is resolve's rule. Guarded by u.mu.
func (u *User) find(roomID string) (*Room, error) {
	if roomID == "" {
		switch len(u.rooms) {
		case 0:
			return nil, protocol.Errorf(protocol.CodeNotInRoom, "you are not in any room; join one first")
		case 1:
			return u.rooms[0], nil
		default:
			return nil, protocol.FieldErrorf(protocol.CodeRoomRequired, "roomID", "you are in %d rooms; say which with \"roomID\"", len(u.rooms))
		}
	}
	if r := u.rooms.get(roomID); r != nil {
		return r, nil
	}
	return nil, protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s", roomID)
}

// roomSet is a user's rooms: a short slice, since a user is in a few rooms
// and a map costs a few hundred bytes even for one. Guarded by its user's mu.
type roomSet []*Room

func (rs roomSet) get(id string) *Room {
	for _, r := range rs {
		if r.id == id {
			return r
		}
	}
	return nil
}

func (rs *roomSet) add(r *Room) {
	if rs.get(r.id) == nil {
		*rs = append(*rs, r)
	}
}

func (rs *roomSet) remove(id string) {
	for i, r := range *rs {
		if r.id == id {
			*rs = slices.Delete(*rs, i, i+1)
			return
		}
	}
}
