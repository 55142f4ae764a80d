package room

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Options configure a Registry. Zero values mean the documented defaults.
type Options struct {
	// Limits are SPEC §4's limits; the zero value means protocol.DefaultLimits.
	Limits protocol.Limits
	// Grace is how long a connection that dropped without a close frame
	// stays in its rooms before a presence leave is announced (15 s).
	Grace time.Duration
	// ResumeWindow is how long after a drop the user's resume token keeps
	// its userID (2 minutes).
	ResumeWindow time.Duration
	// Logger receives join, leave and error records; nil discards them.
	Logger *slog.Logger
}

// Registry owns every live room and user of one server.
type Registry struct {
	store        store.Store
	limits       protocol.Limits
	grace        time.Duration
	resumeWindow time.Duration
	log          *slog.Logger

	mu     sync.RWMutex // guards rooms, tokens and their peaks
	rooms  map[string]*Room
	tokens map[string]*User // resume token → user
	// A Go map keeps its buckets after deletes: these are the sizes the
	// maps grew to, so that they are rebuilt smaller once they empty out
	// (see compact) and a burst of connections leaves no lasting heap.
	roomsPeak, tokensPeak int

	stored     atomic.Uint64 // messages stored
	deliveries atomic.Uint64 // msg events queued to members
	roomsLive  atomic.Int64
}

// New returns a registry whose rooms keep history in st. It starts nothing.
func New(st store.Store, opts Options) *Registry {
	if opts.Limits == (protocol.Limits{}) {
		opts.Limits = protocol.DefaultLimits()
	}
	if opts.Grace <= 0 {
		opts.Grace = 15 * time.Second
	}
	if opts.ResumeWindow <= 0 {
		opts.ResumeWindow = 2 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		store:        st,
		limits:       opts.Limits,
		grace:        opts.Grace,
		resumeWindow: opts.ResumeWindow,
		log:          opts.Logger,
		rooms:        make(map[string]*Room),
		tokens:       make(map[string]*User),
	}
}

// Stats are the registry's counters, for metrics.
type Stats struct {
	Rooms      int64  // rooms with at least one member
	Stored     uint64 // messages stored since start
	Deliveries uint64 // msg events queued to members since start
}

// Stats returns the current counters.
func (reg *Registry) Stats() Stats {
	return Stats{Rooms: reg.roomsLive.Load(), Stored: reg.stored.Load(), Deliveries: reg.deliveries.Load()}
}

// Limits returns the limits in force.
func (reg *Registry) Limits() protocol.Limits { return reg.limits }

// compact returns m, or m rebuilt to its size when it has shrunk to under
// a quarter of *peak, which it then lowers: deleting from a Go map does not
// free its buckets.
func compact[K comparable, V any](m map[K]V, peak *int) map[K]V {
	if len(m) >= *peak/4 {
		return m
	}
	*peak = len(m)
	return maps.Collect(maps.All(m)) // not Clone: it keeps the table size
}

// NewRoomID returns a fresh 21-character room ID.
func NewRoomID() string { return gonanoid.Must(protocol.RoomIDLen) }

func newToken() string { return gonanoid.Must(32) }

// getOrCreate returns the live room id, creating it if needed. The caller
// locks it and must check dead.
func (reg *Registry) getOrCreate(id string) *Room {
	reg.mu.RLock()
	r := reg.rooms[id]
	reg.mu.RUnlock()
	if r != nil {
		return r
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if r = reg.rooms[id]; r == nil {
		r = newRoom(id)
		reg.rooms[id] = r
		reg.roomsPeak = max(reg.roomsPeak, len(reg.rooms))
		reg.roomsLive.Add(1)
	}
	return r
}

func (reg *Registry) lookup(id string) *Room {
	reg.mu.RLock()
	defer reg.mu.RUnlock()
	return reg.rooms[id]
}

// dropIfEmpty removes r from the registry once it has no members.
// Guarded by r.mu (lock order: a room's mu, then reg.mu).
func (reg *Registry) dropIfEmpty(r *Room) {
	if len(r.members) > 0 || r.dead {
		return
	}
	r.flushPresence() // nobody to tell: stops the timer
	r.dead = true
	reg.mu.Lock()
	if reg.rooms[r.id] == r {
		delete(reg.rooms, r.id)
		reg.rooms = compact(reg.rooms, &reg.roomsPeak)
		reg.roomsLive.Add(-1)
	}
	reg.mu.Unlock()
}

// Connect registers a new connection c. With the resume token of a user
// whose connection dropped less than ResumeWindow ago, it returns that user
// (resumed = true) with a fresh token; the old token stops working. If the
// user's previous connection is still attached, it is returned as replaced:
// the caller closes it. An unknown or expired token gives a new user.
func (reg *Registry) Connect(c Conn, token string) (u *User, resumed bool, replaced Conn) {
	if token != "" {
		reg.mu.Lock()
		u = reg.tokens[token]
		if u != nil {
			delete(reg.tokens, token)
			u.mu.Lock()
			u.token = newToken()
			reg.tokens[u.token] = u
			u.mu.Unlock()
		}
		reg.mu.Unlock()
		if u != nil {
			replaced = u.attach(c)
			return u, true, replaced
		}
	}
	u = &User{
		reg:   reg,
		id:    gonanoid.Must(),
		name:  "guest-" + gonanoid.MustGenerate("abcdefghijklmnopqrstuvwxyz0123456789", 4),
		conn:  c,
		token: newToken(),
	}
	reg.mu.Lock()
	reg.tokens[u.token] = u
	reg.tokensPeak = max(reg.tokensPeak, len(reg.tokens))
	reg.mu.Unlock()
	return u, false, nil
}

// Join puts u, on connection c, into room roomID under name ("" keeps the
// user's current name) and queues the joined reply (with id reqID) to c.
// With since, joined.history holds every stored message with seq > *since;
// without, the last Limits.History messages. Messages stored while Join
// reads history are merged by seq, so c sees each seq once, in order, and
// joined before any later msg. A first join announces a presence join to
// the other members; joining again, or re-joining after a resume within the
// grace period, is silent.
func (reg *Registry) Join(ctx context.Context, u *User, c Conn, roomID, name string, since *int64, reqID string) error {
	if name != "" {
		u.mu.Lock()
		u.name = name
		u.mu.Unlock()
	}
	name = u.Name()

	var r *Room
	var m *member
	fresh := false
	for {
		r = reg.getOrCreate(roomID)
		r.mu.Lock()
		if !r.dead {
			break
		}
		r.mu.Unlock()
	}
	if m = r.member(u); m == nil {
		if len(r.members) >= reg.limits.RoomCapacity {
			r.mu.Unlock()
			return protocol.Errorf(protocol.CodeRoomFull, "room %s is full (%d members)", roomID, reg.limits.RoomCapacity)
		}
		m = &member{user: u}
		r.add(m)
		fresh = true
		r.announce(protocol.Encode(protocol.TypePresence, "", protocol.Presence{
			RoomID: roomID, Event: protocol.PresenceJoin, User: protocol.User{UserID: u.id, Name: name}, Count: len(r.members),
		}), u)
	}
	m.name, m.conn, m.joining, m.pending = name, c, true, nil
	r.mu.Unlock()

	u.mu.Lock()
	u.rooms.add(r)
	u.ghosts.remove(roomID)
	u.mu.Unlock()

	info, hist, err := reg.history(ctx, r, since)
	if err != nil {
		u.mu.Lock()
		u.rooms.remove(roomID)
		u.mu.Unlock()
		r.mu.Lock()
		if fresh {
			reg.removeMember(r, u)
		} else {
			m.joining = false
		}
		r.mu.Unlock()
		return err
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.member(u) != m {
		// Left (or was dropped) meanwhile: nothing to answer.
		return protocol.Errorf(protocol.CodeNotInRoom, "left room %s while joining", roomID)
	}
	// Merge what arrived while history was read: only seqs after both the
	// history and since, so each seq reaches c once.
	after := int64(0)
	if since != nil {
		after = *since
	}
	if len(hist) > 0 {
		after = hist[len(hist)-1].Seq
	}
	for _, p := range m.pending {
		if p.Seq > after {
			hist = append(hist, p)
			after = p.Seq
		}
	}
	lastSeq := info.LastSeq
	if len(hist) > 0 {
		lastSeq = max(lastSeq, hist[len(hist)-1].Seq)
	}
	m.seen = lastSeq
	m.pending, m.joining = nil, false
	// joined lists the members as they are now: earlier presence events are
	// not for this member.
	m.after = r.announced
	if hist == nil {
		hist = []protocol.Message{}
	}
	truncated := false
	if since != nil {
		truncated = info.Truncated(*since)
	}
	c.Queue(protocol.Encode(protocol.TypeJoined, reqID, protocol.Joined{
		RoomID:    roomID,
		You:       protocol.User{UserID: u.id, Name: name},
		Members:   r.users(),
		Count:     len(r.members),
		History:   hist,
		LastSeq:   lastSeq,
		Epoch:     info.Epoch,
		Truncated: truncated,
	}))
	if fresh {
		reg.log.Info("join", "room", roomID, "user", u.id, "count", len(r.members))
	}
	return nil
}

// history returns what a join needs: the room's info and its history, the
// last Limits.History messages or, with since, everything after it. A join
// without since into a live room whose info is cached and that has no
// messages needs no store read.
func (reg *Registry) history(ctx context.Context, r *Room, since *int64) (info store.RoomInfo, hist []protocol.Message, err error) {
	if since == nil {
		r.mu.Lock()
		info, ok := r.info, r.infoOK
		info.LastSeq = max(info.LastSeq, r.lastSeq)
		r.mu.Unlock()
		if ok && info.LastSeq == 0 {
			return info, nil, nil
		}
	}
	return reg.readHistory(ctx, r, since)
}

func (reg *Registry) readHistory(ctx context.Context, r *Room, since *int64) (store.RoomInfo, []protocol.Message, error) {
	info, err := reg.store.Room(ctx, r.id)
	if err != nil {
		return info, nil, reg.storeError("read room", err)
	}
	r.mu.Lock()
	if info.Epoch != "" || info.LastSeq == 0 {
		r.info, r.infoOK = info, true
	}
	r.mu.Unlock()
	if info.LastSeq == 0 {
		// Nothing stored yet; what is stored from now on reaches the
		// joiner as pending messages.
		return info, nil, nil
	}
	q := store.Query{Limit: reg.limits.History, Newest: true}
	if since != nil {
		q = store.Query{After: *since}
	}
	hist, err := reg.store.Messages(ctx, r.id, q)
	if err != nil {
		return info, nil, reg.storeError("read history", err)
	}
	return info, hist, nil
}

func (reg *Registry) storeError(op string, err error) *protocol.Error {
	if !errors.Is(err, context.Canceled) {
		reg.log.Error("store", "op", op, "err", err)
	}
	return protocol.Errorf(protocol.CodeStoreUnavailable, "the message store is unavailable; try again shortly")
}

// removeMember takes u out of r and tells the others. Guarded by r.mu.
func (reg *Registry) removeMember(r *Room, u *User) bool {
	m, ok := r.remove(u)
	if !ok {
		return false
	}
	r.announce(protocol.Encode(protocol.TypePresence, "", protocol.Presence{
		RoomID: r.id, Event: protocol.PresenceLeave, User: protocol.User{UserID: u.id, Name: m.name}, Count: len(r.members),
	}), u)
	reg.log.Info("leave", "room", r.id, "user", u.id, "count", len(r.members))
	reg.dropIfEmpty(r)
	return true
}

// Leave takes u out of roomID ("" when u is in exactly one room) at once,
// announcing a presence leave, and queues left (with id reqID) to c.
func (reg *Registry) Leave(u *User, c Conn, roomID, reqID string) error {
	r, err := u.resolve(roomID, true)
	if err != nil {
		return err
	}
	r.mu.Lock()
	reg.removeMember(r, u)
	r.mu.Unlock()
	c.Queue(protocol.Encode(protocol.TypeLeft, reqID, protocol.Left{RoomID: r.id}))
	return nil
}

// Send stores text as a message from u in roomID ("" when u is in exactly
// one room). Once stored, every live member receives the msg event, and,
// when reqID is set, u gets an ack (the original one for a retried reqID).
// A store failure reaches u as a store_unavailable error with id reqID. Send
// returns before the message is stored; it fails at once for not_in_room
// and room_required.
func (reg *Registry) Send(u *User, roomID, text, reqID string) error {
	r, err := u.resolve(roomID, false)
	if err != nil {
		return err
	}
	r.mu.Lock()
	m := r.member(u)
	var name string
	if m != nil {
		name = m.name
	}
	r.mu.Unlock()
	if m == nil {
		return protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", r.id)
	}
	msg := protocol.Message{
		ID:      gonanoid.Must(),
		RoomID:  r.id,
		From:    protocol.User{UserID: u.id, Name: name},
		Message: text,
		TS:      time.Now().UTC().Truncate(time.Millisecond),
	}
	reg.store.Append(msg, store.DedupKey(u.id, reqID), func(stored protocol.Message, dup bool, err error) {
		if err != nil {
			reg.log.Error("store append", "room", r.id, "user", u.id, "err", err)
			u.queue(protocol.EncodeError(reqID, protocol.Errorf(protocol.CodeStoreUnavailable, "the message was not stored; the store is unavailable")))
			return
		}
		if !dup {
			reg.deliver(stored)
		}
		if reqID != "" {
			u.queue(protocol.Encode(protocol.TypeAck, reqID, protocol.Ack{MsgID: stored.ID, Seq: stored.Seq}))
		}
	})
	return nil
}

// Post stores a message from a bot (HTTP API) in roomID and delivers it to
// the room's live members. It blocks until the message is stored or ctx ends.
func (reg *Registry) Post(ctx context.Context, roomID, name, text string) (protocol.Message, error) {
	msg := protocol.Message{
		ID:      gonanoid.Must(),
		RoomID:  roomID,
		From:    protocol.User{UserID: "bot-" + gonanoid.Must(12), Name: name},
		Message: text,
		TS:      time.Now().UTC().Truncate(time.Millisecond),
	}
	type result struct {
		m   protocol.Message
		err error
	}
	ch := make(chan result, 1)
	reg.store.Append(msg, "", func(stored protocol.Message, _ bool, err error) {
		if err == nil {
			reg.deliver(stored)
		}
		ch <- result{stored, err}
	})
	select {
	case res := <-ch:
		if res.err != nil {
			return protocol.Message{}, reg.storeError("append", res.err)
		}
		return res.m, nil
	case <-ctx.Done():
		return protocol.Message{}, ctx.Err()
	}
}

// deliver encodes m once and queues it to every live member of its room;
// members still joining keep it to merge with their history. The store
// calls it in seq order.
func (reg *Registry) deliver(m protocol.Message) {
	reg.stored.Add(1)
	r := reg.lookup(m.RoomID)
	if r == nil {
		return
	}
	frame := protocol.Encode(protocol.TypeMsg, "", m)
	r.mu.Lock()
	r.lastSeq = max(r.lastSeq, m.Seq)
	if r.info.Epoch == "" {
		// The room's first message may have given it an epoch.
		r.infoOK = false
	}
	r.flushPresence()
	n := 0
	for _, mem := range r.members {
		switch {
		case mem.joining:
			mem.pending = append(mem.pending, m)
		case mem.conn != nil && m.Seq > mem.seen:
			mem.conn.Queue(frame)
			n++
		}
	}
	r.mu.Unlock()
	reg.deliveries.Add(uint64(n))
}

// Typing tells the other live members of roomID ("" when u is in exactly
// one room) that u is typing.
func (reg *Registry) Typing(u *User, roomID string) error {
	r, err := u.resolve(roomID, false)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.member(u)
	if m == nil {
		return protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", r.id)
	}
	r.broadcast(protocol.Encode(protocol.TypeTyping, "", protocol.Typing{RoomID: r.id, User: protocol.User{UserID: u.id, Name: m.name}}), u)
	return nil
}

// Disconnect tells the registry that connection c of u ended. clean means
// the client closed it on purpose (a close frame): u leaves every room at
// once. Otherwise u stays in its rooms, receiving nothing, for the grace
// period, in which a resumed connection may join them again silently; then
// the others see a presence leave. Either way u's resume token works for
// ResumeWindow. A c that is no longer u's connection is ignored.
func (reg *Registry) Disconnect(u *User, c Conn, clean bool) {
	u.mu.Lock()
	if u.conn != c {
		u.mu.Unlock()
		return
	}
	u.conn = nil
	rooms := u.rooms
	u.rooms = nil
	if clean {
		for _, r := range u.ghosts {
			rooms.add(r)
		}
		u.ghosts = nil
	} else {
		for _, r := range rooms {
			u.ghosts.add(r)
		}
		u.startGrace()
	}
	if u.expireTimer != nil {
		u.expireTimer.Stop()
	}
	u.expireTimer = time.AfterFunc(reg.resumeWindow, u.expire)
	u.mu.Unlock()

	for _, r := range rooms {
		r.mu.Lock()
		if clean {
			reg.removeMember(r, u)
		} else if m := r.member(u); m != nil && m.conn == c {
			m.conn = nil
		}
		r.mu.Unlock()
	}
}

// Room describes a live room for the HTTP API: its members (nil when nobody
// is in it).
func (reg *Registry) Room(roomID string) []protocol.User {
	r := reg.lookup(roomID)
	if r == nil {
		return []protocol.User{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.users()
}

// Close stops the registry's timers. Call it after every connection has
// gone.
func (reg *Registry) Close() {
	reg.mu.Lock()
	users := make([]*User, 0, len(reg.tokens))
	for _, u := range reg.tokens {
		users = append(users, u)
	}
	rooms := make([]*Room, 0, len(reg.rooms))
	for _, r := range reg.rooms {
		rooms = append(rooms, r)
	}
	reg.mu.Unlock()
	for _, r := range rooms {
		r.mu.Lock()
		r.flushPresence()
		r.mu.Unlock()
	}
	for _, u := range users {
		u.mu.Lock()
		if u.graceTimer != nil {
			u.graceTimer.Stop()
		}
		if u.expireTimer != nil {
			u.expireTimer.Stop()
		}
		u.mu.Unlock()
	}
}
