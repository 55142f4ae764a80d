package room

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Conn is a connection as the registry sees it: a place to queue encoded
// frames. Queue must not block, must not call back into the registry, and
// may take a lock of its own (lock order: a room's or user's lock, then
// the connection's). A connection too slow to keep up drops the frame and
// closes itself (1013), then calls Registry.Disconnect.
type Conn interface {
	Queue(frame []byte)
}

// Room is one chat room's live state: who is in it, and who is still
// catching up with a join. It lives in Registry.rooms while it has members
// and is dropped (dead) when the last one goes.
type Room struct {
	id  string                  // read-only
	pol roomPolicyRef           // the room's policy, looked up once per Config (policyOf)
	mod atomic.Pointer[roomMod] // its mutes and post rule, cached (Registry.roomMod)
	// modReading is set while a goroutine reads mod again (currentMod).
	modReading atomic.Bool
	closed     *atomic.Bool // the registry's Registry.closed: no flush timer is armed once set

	// mu guards the fields below and every member of the room. Lock order:
	// mu, then Registry.mu (dropIfEmpty), then a Conn's own lock (Queue).
	// Never held with a User's mu, and never across a store call,
	// encoding or logging.
	mu      sync.Mutex
	members []*member // delivery walks this slice
	index   map[*User]int
	away    int  // members without a connection (grace period): not counted against capacity
	dead    bool // removed from the registry; a joiner must look again

	// info caches the store's RoomInfo while the room is live, so that a
	// join without since into an empty room needs no store read: lastSeq
	// follows every delivered message, and the epoch does not change
	// while the store is open. FirstSeq is not kept up to date (retention
	// moves it), so joins with since always ask the store.
	info    store.RoomInfo
	infoOK  bool
	lastSeq int64 // the highest seq delivered to the room
	// resets counts Registry.reset calls: a join that read history before
	// one reads again.
	resets uint64

	// Presence events are coalesced: one goes out presenceDelay after it
	// happened, with any others of that moment; during a burst (more than
	// presenceBurst events within presenceInterval, and every window that
	// follows a burst's window without a pause) the room's events go out
	// together at most once per presenceInterval, so a wave of joins costs
	// each member one write a second, not one per join. A user's events
	// that go out together collapse to the change they make (see
	// flushPresence), so a join/leave loop costs each member at most one
	// event per flush. Pending events always go out before the room's
	// next msg or typing event, which keeps every member's view in order.
	announced uint64         // presence events so far; numbers them
	pending   []announcement // presence events not yet queued
	flush     *time.Timer    // queues pending; nil when none is due
	flushed   time.Time      // when pending events last went out
	window    time.Time      // start of the current burst window
	inWindow  int            // presence events since window

	// listing is usersJSON's encoding of the first listed members; nil
	// when one of them left or was renamed since.
	listing []byte
	listed  int

	budget roomBudget // what its members may still send (Budgets)
}

const (
	// presenceDelay is how long a presence event in a quiet room waits for
	// others to go out with it: well under what a person notices.
	presenceDelay = 50 * time.Millisecond
	// presenceInterval is the least time between two flushes of a room's
	// presence events during a burst of joins or leaves, and
	// presenceBurst the number of events within it that make a burst.
	presenceInterval = time.Second
	presenceBurst    = 4
)

// announcement is one presence event waiting to be queued.
type announcement struct {
	n     uint64            // its number: members that came after it don't get it
	p     protocol.Presence // the event; p.User is the member it is about, who does not get it
	frame []byte            // p encoded
	// prev and next are the indexes in pending of the events before and
	// after it about the same user, -1 for none; set by flushPresence.
	prev, next int
	// again is frame with the count again (when collapsing changed it).
	again      []byte
	againCount int
}

// member is one user's place in a room. Guarded by its Room's mu.
//
// deliver reads conn, seqSeen and joining of every member for every
// message: they come first, within the struct's first 32 bytes, which
// never straddle a cache line (members are 160 bytes, a multiple of 32),
// so a message to a room of a thousand costs one line per member.
type member struct {
	// conn is where the room's events go: nil while the user's connection
	// is gone and the grace period runs.
	conn Conn
	// seqSeen is the joined reply's lastSeq: the member has, or has been
	// told about, every seq up to it. A store commits a batch before it
	// calls back for each message, so a history read can see messages
	// whose delivery is still on its way; delivery skips them for this
	// member.
	seqSeen int64
	joining bool
	// pending, while the member joins, holds messages delivered between
	// registering and reading history; nil once the member is live.
	pending []delivery

	user *User
	name string
	// role is the member's standing in the room that no token gives
	// (SPEC §11: a room's key), set at each join: RoleMember at least. A
	// token's grants are read at each action (User.grantedRole), so a
	// refreshed token's rooms claim applies at once.
	role policy.Role
	// nsRate is the member's bucket for a namespace's own rate (mayPost).
	nsRate bucket
	// subscribed is set once the member's broker subscription is in
	// place; removing the member gives it back.
	subscribed bool
	// rejoin is set by Registry.reset for a member that must get a new
	// joined (the room started over); a join of its own clears it.
	rejoin bool
	// listed is set, in a cluster, once the roster lists the member:
	// removing it then takes it out of the roster.
	listed bool
	// relist is set, in a cluster, for a member that joins again after
	// its grace period began: the roster lists it again (another node
	// may have listed it meanwhile), silently.
	relist bool
	// typed is when the member's last typing event went out.
	typed time.Time
	// lane tells a quiet member from a flooder (Room.spend).
	lane bucket
	// presenceSeen is the number of the last presence event the member's
	// joined reply already reflects: flushPresence sends it later ones.
	presenceSeen uint64
}

// delivery is one encoded msg event and its seq, or a notice about the
// room (Room.notify) with seq math.MaxInt64, which goLive always queues.
type delivery struct {
	seq   int64
	frame []byte
}

// goLive ends the member's join: it queues the buffered messages after
// seen, which the member's joined did not cover, and from now on the room
// delivers to it directly, skipping seqs up to seen. Guarded by its Room's
// mu.
func (m *member) goLive(seen int64) {
	if m.conn != nil {
		for _, d := range m.pending {
			if d.seq > seen {
				m.conn.Queue(d.frame)
			}
		}
	}
	clear(m.pending)
	m.seqSeen, m.pending, m.joining = seen, nil, false
}

func newRoom(id string, closed *atomic.Bool) *Room {
	return &Room{id: id, index: make(map[*User]int), closed: closed}
}

// live returns how many members have a connection: the ones capacity
// counts. Guarded by r.mu.
func (r *Room) live() int { return len(r.members) - r.away }

// setConn sets m's connection, keeping count of the members without one.
// Guarded by r.mu.
func (r *Room) setConn(m *member, c Conn) {
	switch {
	case m.conn == nil && c != nil:
		r.away--
	case m.conn != nil && c == nil:
		r.away++
	}
	m.conn = c
}

// add appends m, which has no connection yet. Guarded by r.mu.
func (r *Room) add(m *member) {
	r.away++
	r.index[m.user] = len(r.members)
	r.members = append(r.members, m)
}

// remove drops u's member and reports whether it was there. Guarded by r.mu.
func (r *Room) remove(u *User) (*member, bool) {
	i, ok := r.index[u]
	if !ok {
		return nil, false
	}
	m := r.members[i]
	if m.conn == nil {
		r.away--
	}
	r.listing = nil
	last := len(r.members) - 1
	r.members[i] = r.members[last]
	r.index[r.members[i].user] = i
	r.members[last] = nil
	r.members = r.members[:last]
	delete(r.index, u)
	return m, true
}

// member returns u's member, or nil. Guarded by r.mu.
func (r *Room) member(u *User) *member {
	if i, ok := r.index[u]; ok {
		return r.members[i]
	}
	return nil
}

// rename gives m, a member of r, the display name name. Guarded by r.mu.
func (r *Room) rename(m *member, name string) {
	if m.name != name {
		m.name = name
		r.listing = nil
	}
}

// usersJSON is users(max) encoded. joined lists the members, and a wave
// of joins would encode up to max of them for each, so the room keeps the
// encoding: a join appends its member to it, and only a leave or a rename
// (remove, rename) has it encoded anew. The slice returned is never
// changed afterwards: it may be read outside r.mu. Guarded by r.mu.
func (r *Room) usersJSON(max int) []byte {
	n := min(max, len(r.members))
	switch {
	case r.listing == nil || r.listed > n:
		r.listing, r.listed = protocol.EncodeUsers(r.users(max)), n
	case r.listed < n:
		// A new slice: the old one may be in use.
		b := make([]byte, 0, len(r.listing)+(n-r.listed)*64)
		b = append(b, r.listing[:len(r.listing)-1]...) // without its ']'
		for _, m := range r.members[r.listed:n] {
			if len(b) > 1 {
				b = append(b, ',')
			}
			b = protocol.AppendUser(b, protocol.User{UserID: m.user.id, Name: m.name})
		}
		r.listing, r.listed = append(b, ']'), n
	}
	return r.listing
}

// users lists at most max members. Guarded by r.mu.
func (r *Room) users(max int) []protocol.User {
	out := make([]protocol.User, min(max, len(r.members)))
	for i := range out {
		m := r.members[i]
		out[i] = protocol.User{UserID: m.user.id, Name: m.name}
	}
	return out
}

// announce schedules presence event p, encoded as frame, for the other
// members. Guarded by r.mu.
func (r *Room) announce(p protocol.Presence, frame []byte) {
	if r.quiet() {
		return // join_leave = false (SPEC §9)
	}
	r.announced++
	r.pending = append(r.pending, announcement{n: r.announced, p: p, frame: frame})
	now := time.Now()
	if now.Sub(r.window) > presenceInterval {
		// A burst goes on into the next window: a steady wave of joins
		// keeps the room at one flush per presenceInterval, where starting
		// each window afresh let its first presenceBurst events out one
		// flush each (docs/benchmarks.md, "Connect + join").
		burst := r.inWindow > presenceBurst && now.Sub(r.window) < 2*presenceInterval
		r.window, r.inWindow = now, 0
		if burst {
			r.inWindow = presenceBurst
		}
	}
	r.inWindow++
	if r.flush == nil && !r.closed.Load() {
		delay := presenceDelay
		if next := r.flushed.Add(presenceInterval).Sub(now); r.inWindow > presenceBurst && next > delay {
			delay = next
		}
		r.flush = time.AfterFunc(delay, func() {
			r.mu.Lock()
			r.flushPresence()
			r.mu.Unlock()
		})
	}
}

// flushPresence queues the pending presence events to the live members,
// other than the one each is about. A member gets, for each user the
// events are about, only the change they make to what the member knew:
// the events after the last one its joined reflected (presenceSeen), or
// all pending ones for a member that was there at the last flush. A join
// and a leave of the same user cancel (the member never knew of them); a
// leave and a join of the same name cancel (the user is still there); any
// other run of events is its last one (the user's state and name now),
// at the place of that last one. Counts are told again from the last
// event's, the count now, back through the changes that go out, so each
// event's count follows from the one before, and the last is right.
// Guarded by r.mu.
func (r *Room) flushPresence() {
	if r.flush != nil {
		r.flush.Stop()
		r.flush = nil
	}
	if len(r.pending) == 0 {
		return
	}
	r.flushed = time.Now()
	pending := r.pending
	linkPresence(pending)
	// Events are numbered one after the other since the last flush:
	// pending[i].n is first+i.
	first := pending[0].n
	var common []announced // for members that were here at the last flush
	r.netPresence(0, func(about string, frame []byte) {
		common = append(common, announced{about, frame})
	})
	for _, m := range r.members {
		if m.conn == nil || m.joining {
			continue
		}
		if m.presenceSeen < first {
			for _, a := range common {
				if a.about != m.user.id {
					m.conn.Queue(a.frame)
				}
			}
			continue
		}
		// Joined since the last flush: its joined already counted the
		// events up to presenceSeen.
		if b := int(m.presenceSeen - first + 1); b < len(pending) {
			r.netPresence(b, func(about string, frame []byte) {
				if about != m.user.id {
					m.conn.Queue(frame)
				}
			})
		}
	}
	clear(r.pending)
	r.pending = r.pending[:0]
}

// announced is a presence frame going out, and whom it is about.
type announced struct {
	about string
	frame []byte
}

// linkPresence sets the prev and next of every event in pending: the
// events about the same user before and after it. Events that are not a
// join or a leave, or about nobody, are linked to none.
func linkPresence(pending []announcement) {
	last := make(map[string]int, len(pending))
	for i := range pending {
		a := &pending[i]
		a.prev, a.next = -1, -1
		if id := a.p.User.UserID; id != "" && (a.p.Event == protocol.PresenceJoin || a.p.Event == protocol.PresenceLeave) {
			if j, ok := last[id]; ok {
				a.prev = j
				pending[j].next = i
			}
			last[id] = i
		}
	}
}

// netPresence calls yield, in order, with the frames that tell a member
// who knew the room as it was before pending[b] what changed since (see
// flushPresence). linkPresence must have run. Guarded by r.mu.
func (r *Room) netPresence(b int, yield func(about string, frame []byte)) {
	pending := r.pending[b:]
	// The count before pending[b]: the last event's count less every
	// change since.
	count := pending[len(pending)-1].p.Count
	for i := range pending {
		count -= presenceDelta(pending[i].p.Event)
	}
	// Until an event is left out, each goes out as announced (its count
	// is the one computed here, except in a cluster, where the roster's
	// may differ and is kept).
	left := false
	for i := range pending {
		a := &r.pending[b+i]
		if a.next != -1 {
			left = true
			continue // not the user's last event: that one goes out
		}
		f := b + i // the user's first event since pending[b]
		for r.pending[f].prev >= b {
			f = r.pending[f].prev
		}
		if f != b+i {
			firstJoin, lastJoin := r.pending[f].p.Event == protocol.PresenceJoin, a.p.Event == protocol.PresenceJoin
			if firstJoin && !lastJoin || !firstJoin && lastJoin && r.pending[f].p.User.Name == a.p.User.Name {
				left = true
				continue // no change the member can see
			}
			// A change of name shows as the join (the user was there);
			// otherwise the user's state flipped once.
			if firstJoin == lastJoin {
				count += presenceDelta(a.p.Event)
			}
		} else {
			count += presenceDelta(a.p.Event)
		}
		if !left {
			yield(a.p.User.UserID, a.frame)
			continue
		}
		yield(a.p.User.UserID, a.frameWith(count))
	}
}

// presenceDelta is what event does to a room's count.
func presenceDelta(event string) int {
	switch event {
	case protocol.PresenceJoin:
		return 1
	case protocol.PresenceLeave:
		return -1
	}
	return 0
}

// frameWith returns a's frame with count as its count, encoding it again
// if it was announced with another.
func (a *announcement) frameWith(count int) []byte {
	if count == a.p.Count || a.p.Event != protocol.PresenceJoin && a.p.Event != protocol.PresenceLeave {
		return a.frame
	}
	if a.again == nil || a.againCount != count {
		p := a.p
		p.Count = count
		a.again, a.againCount = protocol.Encode(protocol.TypePresence, "", p), count
	}
	return a.again
}

// relay is broadcast for an event that takes no place in the room's
// order of messages (typing, custom events): it locks r itself.
func (r *Room) relay(frame []byte, skip *User) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.broadcast(frame, skip)
}

// notify queues frame, a notice about the room's state (configured), to
// every live member, and keeps it for each member still joining, to go
// out after its joined (goLive): a joined answered from state read before
// the change is followed by the change.
func (r *Room) notify(frame []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushPresence()
	for _, m := range r.members {
		switch {
		case m.joining:
			m.pending = append(m.pending, delivery{seq: math.MaxInt64, frame: frame})
		case m.conn != nil:
			m.conn.Queue(frame)
		}
	}
}

// broadcast queues frame to every live member except skip, after any
// pending presence events, and returns how many it was queued to.
// Guarded by r.mu.
func (r *Room) broadcast(frame []byte, skip *User) int {
	r.flushPresence()
	n := 0
	for _, m := range r.members {
		if m.user == skip || m.conn == nil || m.joining {
			continue
		}
		m.conn.Queue(frame)
		n++
	}
	return n
}
