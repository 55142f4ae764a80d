package room

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	gonanoid "github.com/matoous/go-nanoid/v2"

	"github.com/roomchat/roomchat/internal/broker"
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
	// ResumeMaxAge is how old a resume token may be, counted from when it
	// was issued, and still resume (24 hours): whatever the resume window
	// says, an older one gives a new user (SPEC §4 "Identity across
	// reconnects"). Reissue keeps a long-lived connection's token young.
	ResumeMaxAge time.Duration
	// Logger receives join, leave and error records; nil discards them.
	Logger *slog.Logger
	// Broker returns the broker that orders and delivers the registry's
	// messages, delivering to h; nil means broker.NewLocal on the store.
	Broker func(h broker.Handler) broker.Broker
	// Directory, in a cluster, knows which users are connected on any
	// node, so that a resume token works on every node; nil: this node
	// only.
	Directory Directory
	// Roster, in a cluster, returns the rooms' member lists across the
	// nodes; left is how it announces the leave of a member whose node
	// died. nil: each room's members are this node's.
	Roster func(left func(roomID string, who protocol.User, count int)) Roster
	// Budgets bound each room's traffic and each user's frames; the zero
	// value bounds nothing. In a cluster each node applies them to its own
	// members.
	Budgets Budgets
}

// Roster is each room's members across a cluster. Its calls are I/O: the
// registry makes them without locks.
type Roster interface {
	// Add lists who in roomID and returns the count and at most max
	// members after; listed reports that who was listed already (by
	// another node, which it left without a leave: a resume there), so
	// that its join is not announced again.
	Add(ctx context.Context, roomID string, who protocol.User, max int) (count int, members []protocol.User, listed bool, err error)
	// Remove takes userID out of roomID's list, if this node listed it,
	// and returns the count after; removed is false when another node
	// lists the user now (it resumed there), whose leave is not this
	// node's to announce.
	Remove(ctx context.Context, roomID, userID string) (count int, removed bool, err error)
	// List returns the count and at most max members of roomID.
	List(ctx context.Context, roomID string, max int) (count int, members []protocol.User, err error)
}

// Directory records, where every node can see it, which users are
// connected or dropped less than the resume window ago, and the issue
// time of each one's newest resume token, so that only the newest token
// resumes a user, on any node (SPEC §8). Online and Offline must not
// block; Resume may (it is called without locks).
type Directory interface {
	// Online records that userID has a connection here whose newest
	// token was issued at issued (a connect, or a token renewed).
	Online(userID string, issued time.Time)
	// Offline records that userID's connection here ended.
	Offline(userID string)
	// Resume decides whether a token of userID issued at issued resumes
	// it: only if it is the user's newest token, or the one the newest
	// replaced, within overlap of its replacement. If so, next (the new
	// token's issue time) becomes the newest, and the node that holds an
	// older connection of the user is told (Watch). known is false when
	// no node knows the user: the caller falls back to its own rules.
	Resume(ctx context.Context, userID string, issued, next time.Time, overlap time.Duration) (known, ok bool, err error)
	// Watch sets what is called when userID resumed on another node with
	// a token issued at issued: a connection of the user's here, with an
	// older token, is closed.
	Watch(replaced func(userID string, issued time.Time))
}

// Replaceable is a Conn that the registry can close when its user resumed
// on another node of a cluster (SPEC §8: the replaced connection is closed
// wherever it is). Replaced must not block.
type Replaceable interface {
	Replaced()
}

// Registry owns every live room and user of one server. Its methods are
// safe for concurrent use; see the package doc for the lock order.
type Registry struct {
	// Read-only after New.
	dir          Directory     // nil on a single node
	roster       Roster        // nil on a single node
	store        store.Store   // history: joins and history requests read it
	broker       broker.Broker // messages: published here, delivered by it to deliver
	limits       protocol.Limits
	grace        time.Duration
	resumeWindow time.Duration
	maxAge       time.Duration // Options.ResumeMaxAge
	log          *slog.Logger
	signer       signer    // resume tokens, keyed by the store's TokenKey
	started      time.Time // tokens issued before it come from an earlier run
	budgets      Budgets

	// ctx ends at Close; bg counts the goroutines the registry starts
	// (rejoin), which end with it.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	// mu guards rooms, users and their peaks. Taken after a Room's mu,
	// before a User's.
	mu    sync.RWMutex
	rooms map[string]*Room
	users map[string]*User // by userID: connected, or within ResumeWindow of a drop
	// A Go map keeps its buckets after deletes: these are the sizes the
	// maps grew to, so that they are rebuilt smaller once they empty out
	// (see compact) and a burst of connections leaves no lasting heap.
	roomsPeak, usersPeak int

	stored     atomic.Uint64 // messages this node published and the broker stored
	deliveries atomic.Uint64 // msg events queued to members
	roomsLive  atomic.Int64
	refused    refusals // frames refused by a budget, by kind
}

// New returns a registry whose rooms keep history in st. It starts nothing.
func New(st store.Store, opts Options) *Registry {
	if opts.Limits == (protocol.Limits{}) {
		opts.Limits = protocol.DefaultLimits()
	}
	opts.Limits = opts.Limits.WithDefaults()
	if opts.Grace <= 0 {
		opts.Grace = 15 * time.Second
	}
	if opts.ResumeWindow <= 0 {
		opts.ResumeWindow = 2 * time.Minute
	}
	if opts.ResumeMaxAge <= 0 {
		opts.ResumeMaxAge = DefaultResumeMaxAge
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Broker == nil {
		opts.Broker = func(h broker.Handler) broker.Broker { return broker.NewLocal(st, h) }
	}
	reg := &Registry{
		store:        st,
		limits:       opts.Limits,
		grace:        opts.Grace,
		resumeWindow: opts.ResumeWindow,
		maxAge:       opts.ResumeMaxAge,
		budgets:      opts.Budgets,
		log:          opts.Logger,
		dir:          opts.Directory,
		signer:       signer{keyOf: st.TokenKey},
		started:      time.Now(),
		rooms:        make(map[string]*Room),
		users:        make(map[string]*User),
	}
	reg.ctx, reg.cancel = context.WithCancel(context.Background())
	reg.broker = opts.Broker(handler{reg})
	if opts.Roster != nil {
		reg.roster = opts.Roster(reg.announceLeave)
	}
	if reg.dir != nil {
		reg.dir.Watch(reg.replacedElsewhere)
	}
	return reg
}

// handler is the registry as the broker's Handler.
type handler struct{ reg *Registry }

func (h handler) Deliver(m protocol.Message) { h.reg.deliver(m) }
func (h handler) Reset(roomID, epoch string) { h.reg.reset(roomID) }
func (h handler) Relayed(roomID, about string, presence bool, frame []byte) {
	h.reg.relayed(roomID, about, presence, frame)
}

// Stats are the registry's counters, for metrics.
type Stats struct {
	Rooms      int64  // rooms with at least one member
	Stored     uint64 // messages stored since start
	Deliveries uint64 // msg events queued to members since start
	// Refused counts the frames refused by a budget since start: a room's
	// messages, custom events, bytes or joins, or a user's frames.
	Refused BudgetCounts
}

// BudgetCounts are counts by budget.
type BudgetCounts struct {
	RoomMsgs, RoomEvents, RoomBytes, RoomJoins, User uint64
}

// Stats returns the current counters.
func (reg *Registry) Stats() Stats {
	return Stats{Rooms: reg.roomsLive.Load(), Stored: reg.stored.Load(), Deliveries: reg.deliveries.Load(),
		Refused: BudgetCounts{
			RoomMsgs:   reg.refused[budgetMsgs].Load(),
			RoomEvents: reg.refused[budgetEvents].Load(),
			RoomBytes:  reg.refused[budgetBytes].Load(),
			RoomJoins:  reg.refused[budgetJoins].Load(),
			User:       reg.refused[budgetUser].Load(),
		}}
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

// NewRoomID returns a fresh 21-character room ID. It never starts with
// "-", so that a command line never takes it for an option (roomchat send
// ROOM …).
func NewRoomID() string {
	for {
		if id := gonanoid.Must(protocol.RoomIDLen); id[0] != '-' {
			return id
		}
	}
}

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

// Connect registers a new connection c. With a valid resume token (see
// token.go) it returns the token's user (resumed = true) with a fresh
// token, when that user's connection dropped less than ResumeWindow ago,
// or the token was issued before this registry started and ResumeWindow
// has not passed since (a restart or crash loses when connections ended).
// Either way the token must be younger than ResumeMaxAge. The presented
// token keeps working for tokenOverlap, for a client that lost the welcome
// carrying the new one. If the user's previous connection is still
// attached, it is returned as replaced: the caller closes it. An unknown,
// forged, superseded, too old or expired token gives a new user.
func (reg *Registry) Connect(c Conn, token string) (u *User, resumed bool, replaced Conn) {
	now := time.Now()
	if token != "" {
		if id, issued, ok := reg.signer.verify(token); ok && now.Sub(issued) <= reg.maxAge {
			if u = reg.resumable(id, issued, token, now); u != nil {
				replaced = u.attach(c)
				reg.online(u)
				return u, true, replaced
			}
		}
	}
	reg.mu.Lock()
	u = reg.newUser(gonanoid.Must(), c, now)
	reg.mu.Unlock()
	reg.online(u)
	return u, false, nil
}

// resumable returns the user a verified token of userID id may resume, or
// nil, and gives the user a fresh token. In a cluster the Directory
// decides: only the user's newest token (or the one it replaced, within
// the overlap) resumes it, on any node, this one included. Without a
// Directory, or when it does not know the user (Redis lost it) or cannot
// be asked, this node's rules apply: a user it knows, if token is its
// current one or the previous one within its overlap; else a user it does
// not know, if the token comes from before the node started (a restart).
func (reg *Registry) resumable(id string, issued time.Time, token string, now time.Time) *User {
	now = time.UnixMilli(now.UnixMilli()) // a token holds milliseconds
	if reg.dir != nil {
		// Asked without a lock: it is a network call.
		ctx, cancel := context.WithTimeout(reg.ctx, 2*time.Second)
		known, ok, err := reg.dir.Resume(ctx, id, issued, now, reg.overlap())
		cancel()
		switch {
		case err != nil:
			reg.log.Warn("directory", "op", "resume", "err", err)
		case known && !ok:
			return nil
		case known:
			return reg.resumed(id, token, now)
		}
	}
	reg.mu.Lock()
	u := reg.users[id]
	if u != nil {
		u.mu.Lock()
		switch {
		case token == u.token:
			u.prevToken, u.prevUntil = token, now.Add(reg.overlap())
		case token == u.prevToken && now.Before(u.prevUntil):
			// Using the previous token again does not extend its
			// overlap: two clients cannot share an identity past it.
		default:
			u.mu.Unlock()
			reg.mu.Unlock()
			return nil
		}
		u.token, u.issued = reg.signer.sign(id, now), now
		u.mu.Unlock()
		reg.mu.Unlock()
		return u
	}
	fresh := issued.Before(reg.started) && now.Before(reg.started.Add(reg.resumeWindow))
	reg.mu.Unlock()
	if !fresh {
		return nil
	}
	return reg.resumed(id, token, now)
}

// resumed gives user id, resumed with token, a new token issued now: the
// user this node holds, or a new one (it comes from another node, or from
// before a restart).
func (reg *Registry) resumed(id, token string, now time.Time) *User {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if u := reg.users[id]; u != nil {
		u.mu.Lock()
		if token != u.prevToken || !now.Before(u.prevUntil) {
			u.prevToken, u.prevUntil = token, now.Add(reg.overlap())
		}
		u.token, u.issued = reg.signer.sign(id, now), now
		u.returned = now
		u.mu.Unlock()
		return u
	}
	u := reg.newUser(id, nil, now)
	u.prevToken, u.prevUntil = token, now.Add(reg.overlap())
	u.returned = now
	return u
}

// replacedElsewhere is the Directory's news that userID resumed on another
// node with a token issued at issued: a connection here with an older
// token is let go as a drop would be (its rooms wait out the grace period,
// which a join there ends silently) and closed with 1000.
func (reg *Registry) replacedElsewhere(userID string, issued time.Time) {
	reg.mu.RLock()
	u := reg.users[userID]
	reg.mu.RUnlock()
	if u == nil {
		return
	}
	u.mu.Lock()
	c := u.conn
	older := u.issued.UnixMilli() < issued.UnixMilli()
	u.mu.Unlock()
	if c == nil || !older {
		return
	}
	reg.Disconnect(u, c, false)
	if rc, ok := c.(Replaceable); ok {
		rc.Replaced()
	}
}

// online and offline tell the Directory, if any, that u has a connection
// here, or no longer has one.
func (reg *Registry) online(u *User) {
	if reg.dir != nil {
		u.mu.Lock()
		issued := u.issued
		u.mu.Unlock()
		reg.dir.Online(u.id, issued)
	}
}

func (reg *Registry) offline(u *User) {
	if reg.dir != nil {
		reg.dir.Offline(u.id)
	}
}

// DefaultResumeMaxAge is Options.ResumeMaxAge's default. A resume token
// travels in URLs that proxies may log (GET /ws?resume=…, for scripts),
// so a token found in a log must stop working: a day is far longer than
// any reconnect needs (the resume window is 2 minutes), and a connection
// open longer gets a new token every 12 hours (Reissue).
const DefaultResumeMaxAge = 24 * time.Hour

// MaxAge is Options.ResumeMaxAge as in force (its default when it was 0).
func (reg *Registry) MaxAge() time.Duration { return reg.maxAge }

// Reissue gives u a new resume token, issued now, and returns it, when c
// is u's connection; otherwise it returns "" and changes nothing. The
// server calls it for a connection whose token is half ResumeMaxAge old,
// and sends the new token to the client (SPEC §4, the resume event), so a
// connection open for days can still be resumed after it drops. The token
// it replaces keeps working for tokenOverlap, for a client whose
// connection drops before the new one arrives; after that only the new
// one resumes u.
func (reg *Registry) Reissue(u *User, c Conn) string {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != c || c == nil {
		return ""
	}
	now = time.UnixMilli(now.UnixMilli())
	u.prevToken, u.prevUntil = u.token, now.Add(reg.overlap())
	u.token, u.issued = reg.signer.sign(u.id, now), now
	if reg.dir != nil {
		reg.dir.Online(u.id, now)
	}
	return u.token
}

// tokenOverlap is how long a token that was used to resume keeps working:
// long enough for a client whose connection died before the new welcome
// arrived to redial, short enough that two clients cannot share an
// identity for long. A short ResumeWindow shortens it (overlap).
const tokenOverlap = 30 * time.Second

// overlap is tokenOverlap, or a quarter of the resume window if shorter.
func (reg *Registry) overlap() time.Duration { return min(tokenOverlap, reg.resumeWindow/4) }

// newUser registers a user with connection c (nil: attach one). Guarded
// by reg.mu.
func (reg *Registry) newUser(id string, c Conn, now time.Time) *User {
	now = time.UnixMilli(now.UnixMilli())
	u := &User{
		reg:    reg,
		id:     id,
		name:   guestName(id),
		conn:   c,
		token:  reg.signer.sign(id, now),
		issued: now,
	}
	reg.users[id] = u
	reg.usersPeak = max(reg.usersPeak, len(reg.users))
	return u
}

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
	if name != "" {
		u.mu.Lock()
		u.name = name
		u.mu.Unlock()
	}
	name = u.Name()
	r, m, fresh, gen, err := reg.enter(u, c, roomID, name)
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
	for {
		info, hist, err := reg.read(ctx, r, since)
		if err != nil {
			reg.abandon(u, r, m, fresh)
			return err
		}
		now, err := reg.answer(u, c, r, m, info, hist, since, reqID, gen, false, roll)
		if err != nil {
			return err
		}
		if now == gen {
			break
		}
		gen = now // the room started over while we read: read again
	}
	if fresh {
		reg.log.Info("join", "room", roomID, "user", u.id)
	}
	return nil
}

// enter makes u a member of roomID on connection c, or finds its
// membership, and marks it joining. It fails with room_limit when u is in
// MaxRooms rooms already and room_full when the room has RoomCapacity
// live members; a member waiting out its grace period keeps its place.
//
// gen is the room's reset count at entry: answer compares it.
func (reg *Registry) enter(u *User, c Conn, roomID, name string) (r *Room, m *member, fresh bool, gen uint64, err error) {
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
		r.mu.Lock()
		if !r.dead {
			break
		}
		r.mu.Unlock()
	}
	if m = r.member(u); m == nil {
		if r.live() >= reg.limits.RoomCapacity {
			r.mu.Unlock()
			return nil, nil, false, 0, protocol.Errorf(protocol.CodeRoomFull, "room %s is full (%d members)", roomID, reg.limits.RoomCapacity)
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

// answer queues joined to c, then the messages delivered while the member
// was joining that the snapshot did not hold, and makes the member live.
// The member list is read under the room's lock and encoded outside it;
// if presence went out meanwhile (rare), it is read and encoded again.
//
// gen is the room's reset count when the history was read; if the room
// has started over since (Reset), nothing is queued and answer returns
// the new count, for the caller to read again. reset marks an answer to
// Reset, which queues joined only to a member still waiting for it
// (rejoin), with truncated set.
//
// roll, in a cluster, is the roster's members and count for joined; nil
// takes the room's own.
func (reg *Registry) answer(u *User, c Conn, r *Room, m *member, info store.RoomInfo, hist []protocol.Message, since *int64, reqID string, gen uint64, reset bool, roll *listing) (uint64, error) {
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
		Truncated: reset || since != nil && info.Truncated(*since),
		More:      store.More(info, hist),
	}
	r.mu.Lock()
	if r.member(u) != m {
		r.mu.Unlock()
		return gen, protocol.Errorf(protocol.CodeNotInRoom, "left room %s while joining", r.id)
	}
	members, count := r.usersJSON(reg.limits.MaxMembers), len(r.members)
	if roll != nil {
		members, count = protocol.EncodeUsers(roll.members), roll.count
	}
	joined.Count = count
	announced := r.announced
	r.mu.Unlock()
	frame := protocol.EncodeJoined(reqID, joined, members)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.member(u) != m {
		return gen, protocol.Errorf(protocol.CodeNotInRoom, "left room %s while joining", r.id)
	}
	if r.resets != gen {
		return r.resets, nil
	}
	if reset && !m.rejoin {
		return gen, nil // a join of the member's own answers it
	}
	if r.announced != announced && roll == nil {
		joined.Count = len(r.members)
		announced = r.announced
		frame = protocol.EncodeJoined(reqID, joined, r.usersJSON(reg.limits.MaxMembers))
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
	reg.bg.Add(1)
	go reg.rejoin(r)
}

// rejoin answers every member that reset left waiting, retrying the store
// read each second until it succeeds, the room starts over again (the
// newer rejoin answers), or the registry closes.
func (reg *Registry) rejoin(r *Room) {
	defer reg.bg.Done()
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
				if now, _ := reg.answer(w.m.user, w.c, r, w.m, info, hist, &zero, "", gen, true, roll); now != gen {
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

func (reg *Registry) storeError(op string, err error) *protocol.Error {
	if !errors.Is(err, context.Canceled) {
		reg.log.Error("store", "op", op, "err", err)
	}
	return protocol.Errorf(protocol.CodeStoreUnavailable, "the message store is unavailable; try again shortly")
}

// removeMember takes u out of r, if there, and tells the others. It
// returns the room's member count after, or -1 if u was not in r, for the
// caller to log once it has let go of r.mu (logLeave). Guarded by r.mu.
func (reg *Registry) removeMember(r *Room, u *User) (left int) {
	m, ok := r.remove(u)
	if !ok {
		return -1
	}
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
		reg.bg.Add(1)
		go func() {
			defer reg.bg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			count, removed, err := reg.roster.Remove(ctx, r.id, u.id)
			cancel()
			if err != nil {
				reg.log.Warn("presence", "op", "remove", "room", r.id, "user", u.id, "err", err)
				return // the entry lapses by itself
			}
			if removed {
				reg.announceLeave(r.id, who, count)
			}
		}()
	}
	reg.dropIfEmpty(r)
	return len(r.members)
}

// presence returns a presence event and its encoding.
func presence(roomID, event string, who protocol.User, count int) (protocol.Presence, []byte) {
	p := protocol.Presence{RoomID: roomID, Event: event, User: who, Count: count}
	return p, protocol.Encode(protocol.TypePresence, "", p)
}

// announceLeave announces, in a cluster, that who left roomID (leaving
// count members): to this node's members and, through the broker, the
// other nodes'. The roster calls it for members of a node that died.
func (reg *Registry) announceLeave(roomID string, who protocol.User, count int) {
	p, frame := presence(roomID, protocol.PresenceLeave, who, count)
	if r := reg.lookup(roomID); r != nil {
		r.mu.Lock()
		r.announce(p, frame)
		r.mu.Unlock()
	}
	reg.broker.Relay(roomID, who.UserID, true, frame)
}

// listing is what joined says of the room's members: in a cluster, the
// roster's view (list), else the room's own.
type listing struct {
	members []protocol.User
	count   int
}

// list adds new member m to the roster and announces its join, or, for a
// member already there, reads the roster: joined's members and count.
// nil on a single node.
func (reg *Registry) list(ctx context.Context, r *Room, m *member, fresh bool) (*listing, error) {
	if reg.roster == nil {
		return nil, nil
	}
	r.mu.Lock()
	who := protocol.User{UserID: m.user.id, Name: m.name}
	listed := m.listed && !m.relist
	r.mu.Unlock()
	if !fresh && listed {
		count, members, err := reg.roster.List(ctx, r.id, reg.limits.MaxMembers)
		if err != nil {
			return nil, reg.storeError("list members", err)
		}
		return &listing{members, count}, nil
	}
	count, members, already, err := reg.roster.Add(ctx, r.id, who, reg.limits.MaxMembers)
	if err != nil {
		return nil, reg.storeError("add member", err)
	}
	// A member listed already (it resumed here from another node within
	// the grace period, or came back from its own) joins silently.
	announce := fresh && !already
	p, frame := presence(r.id, protocol.PresenceJoin, who, count)
	r.mu.Lock()
	in := r.member(m.user) == m
	if in {
		m.listed, m.relist = true, false
		if announce {
			r.announce(p, frame)
		}
	}
	r.mu.Unlock()
	if !in {
		// Gone while being listed: take the entry out again.
		if count, removed, err := reg.roster.Remove(ctx, r.id, who.UserID); err == nil && removed {
			reg.announceLeave(r.id, who, count)
		}
		return nil, protocol.Errorf(protocol.CodeNotInRoom, "left room %s while joining", r.id)
	}
	if announce {
		reg.broker.Relay(r.id, who.UserID, true, frame)
	}
	return &listing{members, count}, nil
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

// Send stores text as a message from u in roomID ("" when u is in exactly
// one room). Once stored, every live member receives the msg event, and,
// when reqID is set, u gets an ack (the original one for a retried reqID).
// A store failure reaches u as a store_unavailable error with id reqID. Send
// returns before the message is stored; it fails at once for not_in_room
// and room_required.
func (reg *Registry) Send(u *User, roomID, text, reqID string) error {
	r, err := u.resolve(roomID)
	if err != nil {
		return err
	}
	now := time.Now()
	msg := protocol.Message{
		ID:      gonanoid.Must(),
		RoomID:  r.id,
		From:    protocol.User{UserID: u.id},
		Message: text,
		TS:      now.UTC().Truncate(time.Millisecond),
	}
	cost := 0
	if reg.budgets.RoomBytes > 0 {
		cost = protocol.EncodedSize(msg) + msgFrameOverhead
	}
	r.mu.Lock()
	m := r.member(u)
	over := budgetKinds
	if m != nil {
		msg.From.Name = m.name
		over = r.spend(&reg.budgets, m, false, cost+len(m.name), now.UnixNano())
	}
	r.mu.Unlock()
	if m == nil {
		return protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", r.id)
	}
	if over != budgetKinds {
		return reg.overBudget(r.id, over)
	}
	reg.broker.Publish(msg, store.DedupKey(u.id, r.id, reqID), func(stored protocol.Message, dup bool, err error) {
		if err != nil {
			reg.log.Error("store append", "room", r.id, "user", u.id, "err", err)
			u.queue(protocol.EncodeError(reqID, protocol.Errorf(protocol.CodeStoreUnavailable, "the message was not stored; the store is unavailable")))
			return
		}
		if !dup {
			reg.stored.Add(1)
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
	reg.broker.Publish(msg, "", func(stored protocol.Message, _ bool, err error) {
		if err == nil {
			reg.stored.Add(1)
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
// members still joining keep it to merge with their history. The broker
// calls it in seq order per room; a room without members here ignores it.
func (reg *Registry) deliver(m protocol.Message) {
	r := reg.lookup(m.RoomID)
	if r == nil {
		return
	}
	frame := protocol.Encode(protocol.TypeMsg, "", m)
	r.mu.Lock()
	r.lastSeq = max(r.lastSeq, m.Seq)
	r.flushPresence()
	n := 0
	for _, mem := range r.members {
		switch {
		case mem.joining:
			mem.pending = append(mem.pending, delivery{seq: m.Seq, frame: frame})
		case mem.conn != nil && m.Seq > mem.seqSeen:
			mem.conn.Queue(frame)
			n++
		}
	}
	r.mu.Unlock()
	reg.deliveries.Add(uint64(n))
}

// typingInterval is the least time between two typing events of one user
// in one room (SPEC §4): a client that sends typing on every keystroke
// costs the room one event per interval.
const typingInterval = 2 * time.Second

// Typing tells the other live members of roomID ("" when u is in exactly
// one room) that u is typing, at most once per typingInterval; typing
// sent more often is dropped without an error.
func (reg *Registry) Typing(u *User, roomID string) error {
	r, err := u.resolve(roomID)
	if err != nil {
		return err
	}
	now := time.Now()
	r.mu.Lock()
	m := r.member(u)
	if m == nil {
		r.mu.Unlock()
		return protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", r.id)
	}
	if now.Sub(m.typed) < typingInterval {
		r.mu.Unlock()
		return nil
	}
	m.typed = now
	from := protocol.User{UserID: u.id, Name: m.name}
	r.mu.Unlock()
	frame := protocol.Encode(protocol.TypeTyping, "", protocol.Typing{RoomID: r.id, User: from})
	r.relay(frame, u)
	reg.broker.Relay(r.id, u.id, false, frame)
	return nil
}

// Event relays a custom event from u to the other live members of roomID
// ("" when u is in exactly one room). Nothing is stored. The caller has
// checked name and data (protocol.Limits.CheckEventName, CheckEventData);
// empty data is null.
func (reg *Registry) Event(u *User, roomID, name string, data jsontext.Value) error {
	r, err := u.resolve(roomID)
	if err != nil {
		return err
	}
	r.mu.Lock()
	m := r.member(u)
	var from protocol.User
	over := budgetKinds
	if m != nil {
		from = protocol.User{UserID: u.id, Name: m.name}
		cost := eventFrameOverhead + len(r.id) + len(name) + len(data) + len(u.id) + len(m.name)
		over = r.spend(&reg.budgets, m, true, cost, time.Now().UnixNano())
	}
	r.mu.Unlock()
	if m == nil {
		return protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", r.id)
	}
	if over != budgetKinds {
		return reg.overBudget(r.id, over)
	}
	frame := encodeEvent(r.id, name, data, from)
	r.relay(frame, u)
	reg.broker.Relay(r.id, u.id, false, frame)
	return nil
}

// PostEvent relays a custom event from the server side (HTTP API) to every
// live member of roomID and returns how many on this node it was queued
// to; a room nobody is in gets nothing. In a cluster the other nodes'
// members get it too (not counted).
func (reg *Registry) PostEvent(roomID, name string, data jsontext.Value) int {
	frame := encodeEvent(roomID, name, data, protocol.User{})
	reg.broker.Relay(roomID, "", false, frame)
	r := reg.lookup(roomID)
	if r == nil {
		return 0
	}
	return r.relay(frame, nil)
}

// relayed queues an event another node relayed to this node's members of
// roomID, except the user it is about; presence events are coalesced
// with the room's own.
func (reg *Registry) relayed(roomID, about string, presence bool, frame []byte) {
	r := reg.lookup(roomID)
	if r == nil {
		return
	}
	if presence {
		p := relayedPresence(about, frame)
		r.mu.Lock()
		r.announce(p, frame)
		r.mu.Unlock()
		return
	}
	var u *User
	if about != "" {
		reg.mu.RLock()
		u = reg.users[about]
		reg.mu.RUnlock()
	}
	r.relay(frame, u)
}

// relayedPresence decodes a presence frame another node relayed. One that
// does not decode (a node of another version) goes out as it is, to all
// but the user it is about, and collapses with no other.
func relayedPresence(about string, frame []byte) protocol.Presence {
	var p protocol.Presence
	if env, err := protocol.DecodeEnvelope(frame); err == nil && protocol.DecodePayload(env, &p) == nil && p.User.UserID == about {
		return p
	}
	return protocol.Presence{User: protocol.User{UserID: about}}
}

func encodeEvent(roomID, name string, data jsontext.Value, from protocol.User) []byte {
	if len(data) == 0 {
		data = jsontext.Value("null")
	}
	return protocol.Encode(protocol.TypeEvent, "", protocol.Event{RoomID: roomID, Name: name, Data: data, From: from})
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
	reg.offline(u)
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
		left := -1
		if clean {
			left = reg.removeMember(r, u)
		} else if m := r.member(u); m != nil && m.conn == c {
			r.setConn(m, nil)
		}
		r.mu.Unlock()
		reg.logLeave(r, u, left)
	}
}

// Members describes a live room for the HTTP API: at most
// Limits.MaxMembers of its members, and how many it has.
//
// In a cluster they come from the roster (ctx bounds the call).
func (reg *Registry) Members(ctx context.Context, roomID string) (members []protocol.User, count int, err error) {
	if reg.roster != nil {
		count, members, err := reg.roster.List(ctx, roomID, reg.limits.MaxMembers)
		if err != nil {
			return nil, 0, reg.storeError("list members", err)
		}
		return members, count, nil
	}
	r := reg.lookup(roomID)
	if r == nil {
		return []protocol.User{}, 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.users(reg.limits.MaxMembers), len(r.members), nil
}

// Close stops the registry's timers and goroutines. Call it after every
// connection has gone.
func (reg *Registry) Close() {
	reg.cancel()
	reg.bg.Wait()
	reg.mu.Lock()
	users := make([]*User, 0, len(reg.users))
	for _, u := range reg.users {
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
