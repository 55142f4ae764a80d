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

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/policy"
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
	// Broker orders and delivers the registry's messages; nil means a
	// broker.Local on the store, which New starts. A broker given here
	// must be handed the registry's Handler (its Start step) before the
	// first Join.
	Broker broker.Broker
	// Directory, in a cluster, knows which users are connected on any
	// node, so that a resume token works on every node; nil: this node
	// only.
	Directory Directory
	// Roster, in a cluster, is the rooms' member lists across the nodes;
	// it announces the leave of a member whose node died through
	// AnnounceLeave, which it is handed after New (its Start step). nil:
	// each room's members are this node's.
	Roster Roster
	// Policy is where each room's policy comes from (SPEC §9); nil: the
	// built-in layer only, from Limits (every room as in §4).
	Policy *policy.Source
	// Budgets bound each room's traffic and each user's frames; the zero
	// value bounds nothing. In a cluster each node applies them to its own
	// members.
	Budgets Budgets
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
	policies     *policy.Source

	// ctx ends at Close; bg counts the goroutines the registry starts
	// (rejoin, a roster removal: see spawn), which Close waits for.
	// closed is set by Close, under life: from then on no goroutine
	// starts (spawn) and no timer is armed (Room.announce,
	// User.startGrace, Disconnect).
	ctx    context.Context
	cancel context.CancelFunc
	life   sync.Mutex // orders spawn's bg.Go before Close's bg.Wait
	closed atomic.Bool
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
	actions    actionCounts
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
	reg := &Registry{
		store:        st,
		limits:       opts.Limits,
		grace:        opts.Grace,
		resumeWindow: opts.ResumeWindow,
		maxAge:       opts.ResumeMaxAge,
		budgets:      opts.Budgets,
		policies:     opts.Policy,
		log:          opts.Logger,
		dir:          opts.Directory,
		roster:       opts.Roster,
		broker:       opts.Broker,
		signer:       signer{keyOf: st.TokenKey},
		started:      time.Now(),
		rooms:        make(map[string]*Room),
		users:        make(map[string]*User),
	}
	if reg.policies == nil {
		reg.policies = policy.NewSource(policy.BuiltinConfig(policy.Builtin(opts.Limits, store.DefaultMaxMessages, 0)))
	}
	reg.ctx, reg.cancel = context.WithCancel(context.Background())
	if reg.broker == nil {
		lb := broker.NewLocal(st)
		lb.Start(reg.Handler())
		reg.broker = lb
	}
	if reg.dir != nil {
		reg.dir.Watch(reg.replacedElsewhere)
		reg.dir.WatchDisconnect(func(userID string) { reg.disconnectHere(userID) })
	}
	return reg
}

// Handler returns the registry as the broker.Handler its broker delivers
// to: hand it to the broker given in Options (its Start step).
func (reg *Registry) Handler() broker.Handler { return handler{reg} }

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
		r = newRoom(id, &reg.closed)
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

// storeError logs err, the failure of op on the store (not a cancelled
// request), and returns the one error a store failure is answered with.
func (reg *Registry) storeError(op string, err error) *protocol.Error {
	if !errors.Is(err, context.Canceled) {
		reg.log.Error("store", "op", op, "err", err)
	}
	return protocol.ErrStoreUnavailable
}

// spawn runs f on a goroutine of the registry's, which Close waits
// for, and reports whether it does: once Close has begun, f does not run.
func (reg *Registry) spawn(f func()) bool {
	reg.life.Lock()
	defer reg.life.Unlock()
	if reg.closed.Load() {
		return false
	}
	reg.bg.Go(f)
	return true
}

// Close stops the registry: no goroutine of its starts and no timer is
// armed after it begins, the timers running are stopped (pending
// presence events go out first), and it returns once the registry's
// goroutines have ended. A timer that fired just before finds the
// registry closed and starts nothing. Call it after every connection
// has gone; calling it again does nothing. It returns nil.
func (reg *Registry) Close() error {
	reg.life.Lock()
	already := reg.closed.Swap(true)
	reg.life.Unlock()
	if already {
		reg.bg.Wait()
		return nil
	}
	reg.cancel()
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
	reg.bg.Wait()
	return nil
}
