package room

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// Budgets bound what a room's members together, and one user over all its
// connections, may make the server fan out (SPEC §4 "Rules and limits":
// one client cannot exhaust the server). The per-connection rate limit
// bounds each connection, but a room's cost is the sum of its senders'
// times its members: a handful of connections at the full rate, each
// with 24 KB messages, is more than a member on a phone link can take.
// A zero field is no bound; the zero Budgets bounds nothing. Checked once
// per message, event or join, never per recipient.
type Budgets struct {
	// RoomMsgs is how many msg frames a second one room takes from all its
	// members together, RoomEvents how many custom events, and RoomBytes
	// how many bytes of both (as they fan out: the encoded frame, near
	// enough). A room may take twice each at once (budgetBurst).
	RoomMsgs, RoomEvents, RoomBytes float64
	// RoomJoins is how many members a second may join one room (each a
	// presence join to the others, and later a leave); joinBurst seconds'
	// worth may come at once.
	RoomJoins float64
	// UserFrames is how many frames a second one user may send over all
	// its connections together, UserBurst how many at once.
	UserFrames float64
	UserBurst  int
}

const (
	// budgetBurst is how many seconds of a room's message, event and byte
	// budget it may take at once.
	budgetBurst = 2
	// joinBurst is how many seconds of a room's join budget may come at
	// once: people arrive in waves (a link shared in a busy chat).
	joinBurst = 10
	// laneRate and laneBurst define a quiet member: one that sent at most
	// laneBurst messages and events at once and laneRate a second on
	// average. Past a room's budget, quiet members still get through, from
	// a reserve of one second of the budget, so that a few flooders cannot
	// silence a room's other members; the room's long-run total stays
	// within its budget.
	laneRate  = 1
	laneBurst = 5
)

// bucket is a token bucket; its rate and size are its owner's.
type bucket struct {
	tokens float64
	at     int64 // Unix ns of tokens; 0: never used, full
}

// fill adds what rate has brought since b.at, up to size.
func (b *bucket) fill(now int64, rate, size float64) {
	if b.at == 0 {
		b.tokens, b.at = size, now
		return
	}
	if d := now - b.at; d > 0 {
		b.tokens = min(size, b.tokens+float64(d)/1e9*rate)
		b.at = now
	}
}

// room budget kinds, for refusals and their counts.
const (
	budgetMsgs = iota
	budgetEvents
	budgetBytes
	budgetJoins
	budgetUser
	budgetKinds
)

// refusals counts the refusals of each budget kind, for metrics.
type refusals [budgetKinds]atomic.Uint64

// roomBudget is a room's buckets. Guarded by its Room's mu.
type roomBudget struct {
	msgs, events, bytes, joins bucket
}

// spend takes one msg (event=false) or custom event (event=true) of cost
// bytes from r's budget for member m, and returns budgetKinds, or, taking
// nothing, the kind of budget it is over. A member whose lane has a token
// (quiet) may go one second of the budget past it. Guarded by r.mu.
func (r *Room) spend(b *Budgets, m *member, event bool, cost int, now int64) int {
	count, rate, kind := &r.budget.msgs, b.RoomMsgs, budgetMsgs
	if event {
		count, rate, kind = &r.budget.events, b.RoomEvents, budgetEvents
	}
	if rate <= 0 && b.RoomBytes <= 0 {
		return budgetKinds
	}
	m.lane.fill(now, laneRate, laneBurst)
	quiet := m.lane.tokens >= 1
	if rate > 0 {
		count.fill(now, rate, budgetBurst*rate)
		if !admit(count, 1, rate, budgetBurst*rate, quiet) {
			return kind
		}
	}
	if b.RoomBytes > 0 {
		r.budget.bytes.fill(now, b.RoomBytes, budgetBurst*b.RoomBytes)
		if !admit(&r.budget.bytes, float64(cost), b.RoomBytes, budgetBurst*b.RoomBytes, quiet) {
			return budgetBytes
		}
		r.budget.bytes.tokens -= float64(cost)
	}
	if rate > 0 {
		count.tokens--
	}
	m.lane.tokens = max(0, m.lane.tokens-1)
	return budgetKinds
}

// admit reports whether b, filled, may give cost: when it holds that much
// (or is full: a cost above the bucket's size then goes through alone),
// or, for a quiet member, when giving it leaves b at most reserve short.
func admit(b *bucket, cost, reserve, size float64, quiet bool) bool {
	return b.tokens >= min(cost, size) || quiet && b.tokens-cost >= -reserve
}

// join takes one join from r's join budget and returns budgetKinds, or
// budgetJoins when there is none. Guarded by r.mu.
func (r *Room) join(b *Budgets, now int64) int {
	if b.RoomJoins <= 0 {
		return budgetKinds
	}
	r.budget.joins.fill(now, b.RoomJoins, joinBurst*b.RoomJoins)
	if r.budget.joins.tokens < 1 {
		return budgetJoins
	}
	r.budget.joins.tokens--
	return budgetKinds
}

// overBudget counts a refusal by room roomID's budget kind and returns
// the rate_limited error that says so: its field is roomID, and its
// message names the budget.
func (reg *Registry) overBudget(roomID string, kind int) *protocol.Error {
	reg.refused[kind].Add(1)
	b := &reg.budgets
	var what string
	switch kind {
	case budgetMsgs:
		what = fmt.Sprintf("its budget of %g messages a second from all its members", b.RoomMsgs)
	case budgetEvents:
		what = fmt.Sprintf("its budget of %g custom events a second from all its members", b.RoomEvents)
	case budgetBytes:
		what = fmt.Sprintf("its budget of %s of messages and events a second from all its members", bytesText(b.RoomBytes))
	case budgetJoins:
		return protocol.FieldErrorf(protocol.CodeRateLimited, "roomID", "room %s is over its budget of %g joins a second; join again in a moment", roomID, b.RoomJoins)
	}
	return protocol.FieldErrorf(protocol.CodeRateLimited, "roomID", "room %s is over %s; nothing was sent, send again in a moment", roomID, what)
}

// bytesText writes n bytes for people: 65536 is "64 KiB".
func bytesText(n float64) string {
	if n >= 1024 && n == float64(int64(n)/1024*1024) {
		return fmt.Sprintf("%d KiB", int64(n)/1024)
	}
	return fmt.Sprintf("%g bytes", n)
}

// userBudget is a user's frames over all its connections. Guarded by its
// User's mu.
type userBudget struct {
	frames bucket
}

// TakeFrame takes one frame from u's budget over all its connections
// (Budgets.UserFrames) and reports whether there was one; the server
// asks it for every frame, as it does the connection's own limit.
func (u *User) TakeFrame() bool {
	b := &u.reg.budgets
	if b.UserFrames <= 0 {
		return true
	}
	now := time.Now().UnixNano()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.budget.frames.fill(now, b.UserFrames, float64(max(b.UserBurst, 1)))
	if u.budget.frames.tokens < 1 {
		u.reg.refused[budgetUser].Add(1)
		return false
	}
	u.budget.frames.tokens--
	return true
}

// The bytes of a frame around what a budget counts of it: the envelope
// of a msg event ({"type":"msg","payload":…}: 25 bytes, and its seq is
// not known yet) and a custom event's frame without its room ID, name,
// data and sender (89 bytes), measured and rounded up.
const (
	msgFrameOverhead   = 32
	eventFrameOverhead = 96
)

// The default room budgets (DefaultBudgets). An honest busy room stays
// well under each; docs/operations.md ("Each room") has the numbers
// behind them.
const (
	// DefaultRoomRate: 50 messages a second is a hundred people each
	// sending one every two seconds without a pause, ten times what
	// anyone can read; at 10,000 members it is 500,000 deliveries a second.
	DefaultRoomRate = 50
	// DefaultRoomEvents: 100 custom events a second, reactions and
	// cursors being smaller and more frequent than messages.
	DefaultRoomEvents = 100
	// DefaultRoomBytes: 64 KiB a second (0.5 Mbit/s) is what every member
	// of a room at its budget must read; a phone on a fair 3G link keeps
	// up. It binds only on long messages: 50 a second of short ones are
	// about 12 KiB.
	DefaultRoomBytes = 64 << 10
	// DefaultRoomJoins: 50 joins a second, 500 at once (a link shared in
	// a busy chat brings people in waves): a crowd of 10,000 gets in
	// within 3.5 minutes. Each join is a presence event to every member,
	// and its leave another.
	DefaultRoomJoins = 50
)

// DefaultBudgets returns the budgets of a server whose per-connection
// limits are l: the default room budgets and a per-user one; none when
// l.Rate is 0 (no rate limit: benchmarks, trusted bots).
func DefaultBudgets(l protocol.Limits) Budgets {
	if l.Rate <= 0 {
		return Budgets{}
	}
	return Budgets{
		RoomMsgs:   DefaultRoomRate,
		RoomEvents: DefaultRoomEvents,
		RoomBytes:  DefaultRoomBytes,
		RoomJoins:  DefaultRoomJoins,
		// A user may have several connections at once while a resume
		// replaces one (the old one reads on until its close handshake
		// ends) and gets a fresh connection limit with each: over all of
		// them it keeps one connection's rate, and twice its burst, so
		// that a client that reconnects and re-sends what was in flight
		// gets through.
		UserFrames: l.Rate,
		UserBurst:  2 * l.Burst,
	}
}
