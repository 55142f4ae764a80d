package room

import (
	"context"
	"time"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Join puts u, on connection c, into room roomID under name ("" keeps the
// user's current name) and queues the joined reply (with id reqID) to c.
// Without since, joined.history holds the newest messages (Limits.History
// of them, within Limits.MaxPageBytes); with since, the oldest page after
// it, and joined.more tells whether the client must ask for more with
// History. Messages stored while Join reads follow joined as msg events,
// so c sees each seq at most once, in order, and joined before any later
// msg. A first join announces a presence join to the other members;
// joining again, or re-joining after a resume within the grace period, is
// silent. ctx bounds the store read.
//
// Join runs in steps, none of which holds a lock across I/O or encoding:
// enter registers the member, who buffers what is delivered meanwhile; a
// new member subscribes to the room's messages with the broker; the
// history is read from one snapshot of the store; answer queues joined and
// the buffered messages the snapshot did not hold.
func (reg *Registry) Join(ctx context.Context, u *User, c Conn, roomID, name string, since *int64, reqID string) error {
	return reg.JoinWithKey(ctx, u, c, roomID, name, "", since, reqID)
}

// JoinWithKey is Join with the room's owner key (SPEC §11: the member is
// the room's owner on this connection; a key of another room, or a
// forged one, is forbidden). An empty key is Join.
func (reg *Registry) JoinWithKey(ctx context.Context, u *User, c Conn, roomID, name, key string, since *int64, reqID string) error {
	p, keyed, err := reg.admit(ctx, u, roomID, key)
	if err != nil {
		return err
	}
	u.mu.Lock()
	if name != "" && !u.fixedName {
		u.name = name // a token's name claim is fixed (SPEC §10)
	}
	name = u.name
	u.mu.Unlock()
	r, m, fresh, gen, err := reg.enter(u, c, roomID, name, p.Capacity, max(keyed, policy.RoleMember))
	if err != nil {
		return err
	}
	if fresh {
		if err := reg.subscribe(ctx, r, m); err != nil {
			reg.abandon(u, r, m, fresh)
			return err
		}
	}
	roll, err := reg.list(ctx, r, m, fresh)
	if err != nil {
		reg.abandon(u, r, m, fresh)
		return err
	}
	// joined says the room's run-time post rule (SPEC §11): read after
	// the member is in, so that a configure after this read reaches it
	// as configured (Room.notify), even while it is still joining.
	post := reg.roomMod(r, time.Now()).postInForce(p)
	a := reply{u: u, c: c, r: r, m: m, since: since, reqID: reqID, gen: gen, roll: roll, post: post}
	for {
		var err error
		a.info, a.hist, err = reg.read(ctx, r, since)
		if err != nil {
			reg.abandon(u, r, m, fresh)
			return err
		}
		now, err := reg.answer(a)
		if err != nil {
			return err
		}
		if now == a.gen {
			break
		}
		a.gen = now // the room started over while we read: read again
	}
	if fresh {
		reg.log.Info("join", "room", roomID, "user", u.id)
	}
	return nil
}

// admit is JoinWithKey's admission: the room's policy, the role key
// grants, the join rule checked for the better of that role and the one
// u's token grants, and, below owner, the room's bans. It returns the
// policy and the key's role.
func (reg *Registry) admit(ctx context.Context, u *User, roomID, key string) (*policy.Policy, policy.Role, error) {
	p, perr := reg.PolicyFor(roomID)
	if perr != nil {
		return nil, 0, perr
	}
	keyed, perr := reg.keyRole(roomID, key)
	if perr != nil {
		return nil, 0, perr
	}
	granted := u.grantedRole(roomID)
	if perr := p.MayJoin(max(granted, keyed)); perr != nil {
		return nil, 0, perr
	}
	if keyed < policy.RoleOwner {
		if err := reg.bannedError(ctx, roomID, u.id); err != nil {
			return nil, 0, err
		}
	}
	return p, keyed, nil
}

// enter makes u a member of roomID on connection c, or finds its
// membership, and marks it joining. It fails with room_limit when u is in
// MaxRooms rooms already and room_full when the room has RoomCapacity
// live members; a member waiting out its grace period keeps its place.
//
// gen is the room's reset count at entry: answer compares it.
func (reg *Registry) enter(u *User, c Conn, roomID, name string, capacity int, role policy.Role) (r *Room, m *member, fresh bool, gen uint64, err error) {
	now := time.Now()
	u.mu.Lock()
	full := u.rooms.get(roomID) == nil && u.ghosts.get(roomID) == nil && len(u.rooms) >= reg.limits.MaxRooms
	returning := !u.returned.IsZero() && now.Sub(u.returned) < reg.resumeWindow
	u.mu.Unlock()
	if full {
		return nil, nil, false, 0, protocol.Errorf(protocol.CodeRoomLimit, "you are in %d rooms, the most one connection may be in; leave one first", reg.limits.MaxRooms)
	}
	for {
		r = reg.getOrCreate(roomID)
		reg.policyOf(r) // fills the room's cache before it announces
		r.mu.Lock()
		if !r.dead {
			break
		}
		r.mu.Unlock()
	}
	if m = r.member(u); m == nil {
		if r.live() >= capacity {
			r.mu.Unlock()
			return nil, nil, false, 0, protocol.Errorf(protocol.CodeRoomFull, "room %s is full (%d members)", roomID, capacity)
		}
		if !returning {
			if over := r.join(&reg.budgets, now.UnixNano()); over != budgetKinds {
				r.mu.Unlock()
				return nil, nil, false, 0, reg.overBudget(roomID, over)
			}
		}
		m = &member{user: u, name: name}
		r.add(m)
		fresh = true
		if reg.roster == nil {
			// In a cluster the join is announced once the roster has it
			// (Join), with the cluster's count.
			r.announce(presence(roomID, protocol.PresenceJoin, protocol.User{UserID: u.id, Name: name}, len(r.members)))
		}
	}
	if !fresh && m.conn == nil && reg.roster != nil {
		// A member back from its grace period may have been listed by
		// another node meanwhile (a resume there): list it here again.
		m.relist = true
	}
	r.rename(m, name)
	m.role = role
	m.joining, m.pending, m.rejoin = true, nil, false
	gen = r.resets
	r.setConn(m, c)
	r.mu.Unlock()

	u.mu.Lock()
	u.rooms.add(r)
	u.ghosts.remove(roomID)
	u.mu.Unlock()
	return r, m, fresh, gen, nil
}

// subscribe takes a broker subscription for new member m of r, which
// removeMember gives back. ctx bounds it. If m left meanwhile, the
// subscription is given back at once.
func (reg *Registry) subscribe(ctx context.Context, r *Room, m *member) error {
	if err := reg.broker.Subscribe(ctx, r.id); err != nil {
		return reg.storeError("subscribe", err)
	}
	r.mu.Lock()
	in := r.member(m.user) == m
	if in {
		m.subscribed = true
	}
	r.mu.Unlock()
	if !in {
		reg.broker.Unsubscribe(r.id)
	}
	return nil
}

// read returns what a join needs, from one snapshot of the store: the
// room's info and, without since, its newest messages, or, with since, the
// oldest page after it. Both fit Limits.MaxPage and MaxPageBytes. A join
// without since into a live room whose info is cached and that has no
// messages needs no store read.
func (reg *Registry) read(ctx context.Context, r *Room, since *int64) (store.RoomInfo, []protocol.Message, error) {
	q := store.Query{Limit: reg.limits.History, Newest: true, MaxBytes: reg.limits.MaxPageBytes}
	if since != nil {
		q = store.Query{After: *since, Limit: reg.limits.MaxPage, MaxBytes: reg.limits.MaxPageBytes}
	} else {
		r.mu.Lock()
		info, ok := r.info, r.infoOK
		info.LastSeq = max(info.LastSeq, r.lastSeq)
		r.mu.Unlock()
		if ok && info.LastSeq == 0 {
			return info, nil, nil
		}
	}
	info, hist, err := reg.store.Page(ctx, r.id, q)
	if err != nil {
		return info, nil, reg.storeError("read history", err)
	}
	r.mu.Lock()
	r.info, r.infoOK = info, true
	r.mu.Unlock()
	if p, _ := reg.policyOf(r); p != nil && p.HistorySize == 0 {
		// history.size = 0 (SPEC §9): joined.history is empty whatever
		// the store still holds; lastSeq and the epoch stay.
		return info, nil, nil
	}
	return info, reg.limits.FitPage(hist, since == nil), nil
}

// abandon undoes enter after a failed read: a fresh member leaves again;
// a member that was already in the room goes on receiving, starting with
// what it buffered meanwhile, so nothing delivered to it is lost.
func (reg *Registry) abandon(u *User, r *Room, m *member, fresh bool) {
	r.mu.Lock()
	if r.member(u) == m {
		if fresh {
			reg.removeMember(r, u)
		} else {
			m.goLive(m.seqSeen)
		}
	}
	r.mu.Unlock()
	if fresh {
		u.mu.Lock()
		u.rooms.remove(r.id)
		u.mu.Unlock()
	}
}

// reply is what answer needs to queue a joined: to whom (member m of
// user u, on connection c, in room r), what the store said (info and
// hist, read for since), the reply's id (reqID), and the room's reset
// count when the history was read (gen). reset marks an answer to Reset.
// roll, in a cluster, is the roster's members and count for joined; nil
// takes the room's own. post is the room's post rule in force for
// joined.post (roomMod.postInForce).
type reply struct {
	u     *User
	c     Conn
	r     *Room
	m     *member
	info  store.RoomInfo
	hist  []protocol.Message
	since *int64
	reqID string
	gen   uint64
	reset bool
	roll  *listing
	post  policy.PostRule
}

// answer queues joined to a.c, then the messages delivered while the
// member was joining that the snapshot did not hold, and makes the member
// live. The member list is read under the room's lock and encoded outside
// it; if presence went out meanwhile (rare), it is read and encoded again.
//
// If the room has started over since a.gen (Reset), nothing is queued and
// answer returns the new count, for the caller to read again. An answer
// to Reset (a.reset) queues joined only to a member still waiting for it
// (rejoin), with truncated set.
func (reg *Registry) answer(a reply) (uint64, error) {
	u, c, r, m, info, hist, gen := a.u, a.c, a.r, a.m, a.info, a.hist, a.gen
	if hist == nil {
		hist = []protocol.Message{}
	}
	lastSeq := info.LastSeq
	if len(hist) > 0 {
		lastSeq = max(lastSeq, hist[len(hist)-1].Seq)
	}
	joined := protocol.Joined{
		RoomID:    r.id,
		You:       protocol.User{UserID: u.id, Name: m.name},
		History:   hist,
		LastSeq:   lastSeq,
		Epoch:     info.Epoch,
		Truncated: a.reset || a.since != nil && info.Truncated(*a.since),
		More:      store.More(info, hist),
		Post:      string(a.post),
	}
	r.mu.Lock()
	if r.member(u) != m {
		r.mu.Unlock()
		return gen, protocol.Errorf(protocol.CodeNotInRoom, "left room %s while joining", r.id)
	}
	members, count := r.usersJSON(reg.limits.MaxMembers), len(r.members)
	if a.roll != nil {
		members, count = protocol.EncodeUsers(a.roll.members), a.roll.count
	}
	hidden := false
	if p, _ := reg.policyOf(r); p != nil && !p.Presence {
		members, hidden = noMembers, true // presence = false: the count only (SPEC §9)
	}
	joined.Count = count
	announced := r.announced
	r.mu.Unlock()
	frame := protocol.EncodeJoined(a.reqID, joined, members)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.member(u) != m {
		return gen, protocol.Errorf(protocol.CodeNotInRoom, "left room %s while joining", r.id)
	}
	if r.resets != gen {
		return r.resets, nil
	}
	if a.reset && !m.rejoin {
		return gen, nil // a join of the member's own answers it
	}
	if r.announced != announced && a.roll == nil && !hidden {
		joined.Count = len(r.members)
		announced = r.announced
		frame = protocol.EncodeJoined(a.reqID, joined, r.usersJSON(reg.limits.MaxMembers))
	}
	// joined lists the members as they are now: earlier presence events
	// are not for this member.
	m.presenceSeen = announced
	m.rejoin = false
	c.Queue(frame)
	m.goLive(lastSeq)
	return gen, nil
}

// reset starts room roomID over at a new epoch (the broker lost its
// history: SPEC §8): every member with a connection gets a new joined
// (the new epoch's first page, truncated set) before any message of the
// new epoch, which it buffers meanwhile. A member in its grace period
// gets its joined when it joins again. The broker calls it before it
// delivers the new epoch's first message; the store read runs on a
// goroutine of the registry's (rejoin).
func (reg *Registry) reset(roomID string) {
	r := reg.lookup(roomID)
	if r == nil {
		return
	}
	r.mu.Lock()
	r.resets++
	r.infoOK, r.lastSeq = false, 0
	for _, m := range r.members {
		m.pending, m.joining, m.rejoin = nil, m.conn != nil, m.conn != nil
		m.seqSeen = 0
	}
	r.mu.Unlock()
	reg.spawn(func() { reg.rejoin(r) })
}

// rejoin answers every member that reset left waiting, retrying the store
// read each second until it succeeds, the room starts over again (the
// newer rejoin answers), or the registry closes.
func (reg *Registry) rejoin(r *Room) {
	zero := int64(0)
	for {
		r.mu.Lock()
		gen := r.resets
		type waiting struct {
			m *member
			c Conn
		}
		var todo []waiting
		for _, m := range r.members {
			if m.rejoin && m.conn != nil {
				todo = append(todo, waiting{m, m.conn})
			}
		}
		r.mu.Unlock()
		if len(todo) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(reg.ctx, 10*time.Second)
		p, _ := reg.policyOf(r)
		post := reg.roomMod(r, time.Now()).postInForce(p)
		info, hist, err := reg.read(ctx, r, &zero)
		var roll *listing
		if err == nil && reg.roster != nil {
			var l listing
			l.count, l.members, err = reg.roster.List(ctx, r.id, reg.limits.MaxMembers)
			roll = &l
		}
		cancel()
		if err == nil {
			stale := false
			for _, w := range todo {
				a := reply{u: w.m.user, c: w.c, r: r, m: w.m, info: info, hist: hist, since: &zero, gen: gen, reset: true, roll: roll, post: post}
				if now, _ := reg.answer(a); now != gen {
					stale = true
					break
				}
			}
			if !stale {
				return
			}
			continue
		}
		select {
		case <-reg.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// History answers a history request of u: the oldest page of roomID's
// stored messages with seq > after, at most limit (0 or more than
// Limits.MaxPage means MaxPage) and Limits.MaxPageBytes, and whether more
// remain up to the room's last seq. u must be in the room. ctx bounds the
// store read; no lock is held across it.
func (reg *Registry) History(ctx context.Context, u *User, roomID string, after int64, limit int) (protocol.History, error) {
	r, err := u.resolve(roomID)
	if err != nil {
		return protocol.History{}, err
	}
	r.mu.Lock()
	in := r.member(u) != nil
	r.mu.Unlock()
	if !in {
		return protocol.History{}, protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", r.id)
	}
	p, perr := reg.policyOf(r)
	if perr != nil {
		return protocol.History{}, perr
	}
	if perr := p.MayReadHistory(); perr != nil {
		return protocol.History{}, perr
	}
	if limit <= 0 || limit > reg.limits.MaxPage {
		limit = reg.limits.MaxPage
	}
	info, msgs, err := reg.store.Page(ctx, r.id, store.Query{After: after, Limit: limit, MaxBytes: reg.limits.MaxPageBytes})
	if err != nil {
		return protocol.History{}, reg.storeError("read history", err)
	}
	msgs = reg.limits.FitPage(msgs, false)
	if msgs == nil {
		msgs = []protocol.Message{}
	}
	return protocol.History{RoomID: r.id, Messages: msgs, More: store.More(info, msgs)}, nil
}

// removeMember takes u out of r, if there, and tells the others. It
// returns the room's member count after, or -1 if u was not in r, for the
// caller to log once it has let go of r.mu (logLeave). Guarded by r.mu.
func (reg *Registry) removeMember(r *Room, u *User) (left int) {
	m, ok := r.remove(u)
	if !ok {
		return -1
	}
	reg.policyOf(r) // a reload may have changed join_leave: refresh the cache
	if m.subscribed {
		reg.broker.Unsubscribe(r.id)
	}
	who := protocol.User{UserID: u.id, Name: m.name}
	switch {
	case reg.roster == nil:
		r.announce(presence(r.id, protocol.PresenceLeave, who, len(r.members)))
	case m.listed:
		// The roster call is I/O: it runs on a goroutine of the
		// registry's, which announces the leave with the cluster's count.
		// After Close nothing starts: the entry lapses by itself.
		reg.spawn(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			count, removed, err := reg.roster.Remove(ctx, r.id, u.id)
			cancel()
			if err != nil {
				reg.log.Warn("presence", "op", "remove", "room", r.id, "user", u.id, "err", err)
				return // the entry lapses by itself
			}
			if removed {
				reg.AnnounceLeave(r.id, who, count)
			}
		})
	}
	reg.dropIfEmpty(r)
	return len(r.members)
}

// logLeave logs that u left r, leaving count members (removeMember's
// result; -1 logs nothing).
func (reg *Registry) logLeave(r *Room, u *User, count int) {
	if count >= 0 {
		reg.log.Info("leave", "room", r.id, "user", u.id, "count", count)
	}
}

// Leave takes u out of roomID ("" when u is in exactly one room) at once,
// announcing a presence leave, and queues left (with id reqID) to c.
func (reg *Registry) Leave(u *User, c Conn, roomID, reqID string) error {
	r, err := u.leaving(roomID)
	if err != nil {
		return err
	}
	r.mu.Lock()
	left := reg.removeMember(r, u)
	r.mu.Unlock()
	reg.logLeave(r, u, left)
	c.Queue(protocol.Encode(protocol.TypeLeft, reqID, protocol.Left{RoomID: r.id}))
	return nil
}
