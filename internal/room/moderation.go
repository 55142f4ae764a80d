package room

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Actor is who takes a moderation action (SPEC §11): the user a
// redaction is from and a kick is by, and its role in the room.
type Actor struct {
	User protocol.User
	Role policy.Role
}

// ActorIn is u acting in roomID: it must be a member here; its role is
// the room key's or its token's, whichever is higher.
func (reg *Registry) ActorIn(u *User, roomID string) (Actor, error) {
	granted := u.grantedRole(roomID)
	r := reg.lookup(roomID)
	if r == nil {
		return Actor{}, protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", roomID)
	}
	r.mu.Lock()
	m := r.member(u)
	var a Actor
	if m != nil {
		a = Actor{User: protocol.User{UserID: u.id, Name: m.name}, Role: max(m.role, granted)}
	}
	r.mu.Unlock()
	if m == nil {
		return Actor{}, protocol.Errorf(protocol.CodeNotInRoom, "you are not in room %s; join it first", roomID)
	}
	return a, nil
}

// roleOf is userID's role in roomID as this node knows it: a member's
// key role or token grants; RoleMember for a user it does not hold.
func (reg *Registry) roleOf(roomID, userID string) policy.Role {
	reg.mu.RLock()
	u := reg.users[userID]
	reg.mu.RUnlock()
	if u == nil {
		return policy.RoleMember
	}
	role := max(policy.RoleMember, u.grantedRole(roomID))
	if r := reg.lookup(roomID); r != nil {
		r.mu.Lock()
		if m := r.member(u); m != nil {
			role = max(role, m.role)
		}
		r.mu.Unlock()
	}
	return role
}

// mayModerate answers whether a may act on target (a userID, "" for the
// room itself) in roomID: a moderator or owner, never on an equal or
// higher role (SPEC §11).
func (reg *Registry) mayModerate(a Actor, roomID, target, action string) *protocol.Error {
	if a.Role < policy.RoleModerator {
		return protocol.Errorf(protocol.CodeForbidden, "room %s: only moderators and owners may %s (you are a %s)", roomID, action, max(a.Role, policy.RoleMember))
	}
	if target == "" {
		return nil
	}
	if t := reg.roleOf(roomID, target); t >= a.Role {
		return protocol.Errorf(protocol.CodeForbidden, "room %s: a %s may not %s a %s (moderators act only on lower roles)", roomID, a.Role, action, t)
	}
	return nil
}

// Redact removes the text of roomID's message seq: a redaction is stored
// with the next seq and delivered as a msg with redacts (SPEC §11). An
// author may redact its own messages per the namespace's redact_own;
// anyone else must be a moderator above the author. It blocks until the
// redaction is stored or ctx ends, and returns it.
func (reg *Registry) Redact(ctx context.Context, a Actor, roomID string, seq int64, reason string) (protocol.Message, error) {
	p, perr := reg.PolicyFor(roomID)
	if perr != nil {
		return protocol.Message{}, perr
	}
	msgs, err := reg.store.Messages(ctx, roomID, store.Query{After: seq - 1, Before: seq + 1, Limit: 1})
	if err != nil {
		return protocol.Message{}, reg.storeError("read message", err)
	}
	if len(msgs) == 0 || msgs[0].Seq != seq {
		return protocol.Message{}, protocol.FieldErrorf(protocol.CodeNotFound, "seq", "room %s keeps no message %d", roomID, seq)
	}
	target := msgs[0]
	switch {
	case target.Redacts != 0:
		return protocol.Message{}, protocol.FieldErrorf(protocol.CodeBadPayload, "seq", "message %d is a redaction; it cannot be removed", seq)
	case target.Redacted != nil:
		return protocol.Message{}, protocol.FieldErrorf(protocol.CodeNotFound, "seq", "message %d of room %s was removed already", seq, roomID)
	}
	if target.From.UserID == a.User.UserID && a.User.UserID != "" && a.Role < policy.RoleModerator {
		if perr := p.MayRedactOwn(target.TS, time.Now()); perr != nil {
			return protocol.Message{}, perr
		}
	} else if perr := reg.mayModerate(a, roomID, target.From.UserID, "remove others' messages"); perr != nil {
		return protocol.Message{}, perr
	}
	text := "removed a message"
	if reason != "" {
		text += ": " + reason
	}
	msg := protocol.Message{
		ID:      gonanoid.Must(),
		RoomID:  roomID,
		From:    a.User,
		Message: text,
		Redacts: seq,
		TS:      time.Now().UTC().Truncate(time.Millisecond),
	}
	stored, err := reg.publishWait(ctx, msg)
	if err != nil {
		return protocol.Message{}, err
	}
	reg.LogAction(a, "redact", roomID, target.From.UserID, reason, "seq", seq)
	return stored, nil
}

// Kick puts userID out of roomID: each of its connections here leaves the
// room with kicked, and the others see the leave (SPEC §11). A user this
// node does not hold in the room is not_found.
func (reg *Registry) Kick(a Actor, roomID, userID, reason string) error {
	if perr := reg.mayModerate(a, roomID, userID, "kick"); perr != nil {
		return perr
	}
	// In a cluster the user may be on another node: every node takes it
	// out (relayed), and no node can say it was nowhere.
	if !reg.putOut(roomID, userID, protocol.Kicked{RoomID: roomID, By: a.User, Reason: reason}) && reg.roster == nil {
		return protocol.FieldErrorf(protocol.CodeNotFound, "userID", "user %s is not in room %s", userID, roomID)
	}
	reg.LogAction(a, "kick", roomID, userID, reason)
	return nil
}

// putOut takes userID out of roomID on every node: here, if it is here
// (reported), and on the others through the broker's relay (relayedToUser).
func (reg *Registry) putOut(roomID, userID string, k protocol.Kicked) bool {
	frame := protocol.Encode(protocol.TypeKicked, "", k)
	reg.broker.Relay(roomID, userID, false, frame)
	return reg.putOutHere(roomID, userID, frame)
}

// putOutHere takes userID out of roomID, if it is there on this node, and
// queues frame (kicked) to its connection.
func (reg *Registry) putOutHere(roomID, userID string, frame []byte) bool {
	reg.mu.RLock()
	u := reg.users[userID]
	reg.mu.RUnlock()
	r := reg.lookup(roomID)
	if u == nil || r == nil {
		return false
	}
	u.mu.Lock()
	in := u.rooms.get(roomID) != nil || u.ghosts.get(roomID) != nil
	u.rooms.remove(roomID)
	u.ghosts.remove(roomID)
	u.mu.Unlock()
	if !in {
		return false
	}
	r.mu.Lock()
	left := reg.removeMember(r, u)
	r.mu.Unlock()
	reg.logLeave(r, u, left)
	u.queue(frame)
	return true
}

// Frames relayed to one user, not to a room (SPEC §11 in a cluster): a
// kick or ban takes the user out wherever it is; a mute's news reaches it
// wherever it is, and every node forgets the room's cached mutes.
var (
	kickedPrefix     = []byte(`{"type":"` + protocol.TypeKicked + `"`)
	mutedPrefix      = []byte(`{"type":"` + protocol.TypeMuted + `"`)
	configuredPrefix = []byte(`{"type":"` + protocol.TypeConfigured + `"`)
)

// relayedToUser handles a frame relayed to userID, reporting whether it
// was one (else it is a room's frame).
func (reg *Registry) relayedToUser(roomID, userID string, frame []byte) bool {
	switch {
	case bytes.HasPrefix(frame, kickedPrefix):
		reg.forgetMod(roomID)
		reg.putOutHere(roomID, userID, frame)
	case bytes.HasPrefix(frame, mutedPrefix):
		reg.forgetMod(roomID)
		reg.tell(userID, frame)
	default:
		return false
	}
	return true
}

// Ban keeps userID out of roomID until until (zero: until lifted): it is
// kicked, and its joins answer banned (SPEC §11). The ban is the store's,
// so it holds on every node and after restarts.
func (reg *Registry) Ban(ctx context.Context, a Actor, roomID, userID string, until time.Time, reason string) error {
	return reg.restrict(ctx, a, store.Ban, roomID, userID, until, reason)
}

// Mute refuses userID's msg, event and typing in roomID until until (zero:
// until lifted); it is told with muted (SPEC §11). The store refuses its
// messages on every node.
func (reg *Registry) Mute(ctx context.Context, a Actor, roomID, userID string, until time.Time, reason string) error {
	return reg.restrict(ctx, a, store.Mute, roomID, userID, until, reason)
}

func (reg *Registry) restrict(ctx context.Context, a Actor, kind store.Kind, roomID, userID string, until time.Time, reason string) error {
	if perr := reg.mayModerate(a, roomID, userID, string(kind)); perr != nil {
		return perr
	}
	mod := reg.store
	now := time.Now()
	rs := store.Restriction{UserID: userID, Until: until, By: a.User, Reason: reason, At: now.UTC().Truncate(time.Millisecond)}
	if err := mod.PutRestriction(ctx, roomID, kind, rs); err != nil {
		return reg.storeError("put "+string(kind), err)
	}
	if kind == store.Ban {
		reg.putOut(roomID, userID, protocol.Kicked{RoomID: roomID, By: a.User, Reason: reason, Banned: true, Until: until})
	} else {
		reg.forgetMod(roomID)
		reg.tellEverywhere(roomID, userID, protocol.Encode(protocol.TypeMuted, "", protocol.Muted{RoomID: roomID, Until: until}))
	}
	reg.LogAction(a, string(kind), roomID, userID, reason, "until", until)
	return nil
}

// Lift ends userID's ban or mute in roomID; one that does not exist is
// not_found.
func (reg *Registry) Lift(ctx context.Context, a Actor, kind store.Kind, roomID, userID string) error {
	if perr := reg.mayModerate(a, roomID, "", "un"+string(kind)); perr != nil {
		return perr
	}
	mod := reg.store
	existed, err := mod.DeleteRestriction(ctx, roomID, kind, userID)
	if err != nil {
		return reg.storeError("delete "+string(kind), err)
	}
	if !existed {
		return protocol.FieldErrorf(protocol.CodeNotFound, "userID", "user %s has no %s in room %s", userID, kind, roomID)
	}
	if kind == store.Mute {
		reg.forgetMod(roomID)
		reg.tellEverywhere(roomID, userID, protocol.Encode(protocol.TypeMuted, "", protocol.Muted{RoomID: roomID, Lifted: true}))
	}
	reg.LogAction(a, "un"+string(kind), roomID, userID, "")
	return nil
}

// Restrictions lists the bans or mutes in force in roomID; a moderator's
// question.
func (reg *Registry) Restrictions(ctx context.Context, a Actor, kind store.Kind, roomID string) ([]store.Restriction, error) {
	if perr := reg.mayModerate(a, roomID, "", "list "+string(kind)+"s"); perr != nil {
		return nil, perr
	}
	mod := reg.store
	rs, err := mod.Restrictions(ctx, roomID, kind, time.Now())
	if err != nil {
		return nil, reg.storeError("list "+string(kind)+"s", err)
	}
	return rs, nil
}

// Configure sets roomID's post rule at run time (SPEC §11): "members" or
// "moderators"; it applies to the next msg of every member.
func (reg *Registry) Configure(ctx context.Context, a Actor, roomID, post string) error {
	if perr := reg.mayModerate(a, roomID, "", "configure the room"); perr != nil {
		return perr
	}
	switch policy.PostRule(post) {
	case policy.PostMembers, policy.PostModerators:
	default:
		return protocol.FieldErrorf(protocol.CodeBadPayload, "post", `post must be "members" or "moderators"`)
	}
	mod := reg.store
	if err := mod.SetPostRule(ctx, roomID, post); err != nil {
		return reg.storeError("set post rule", err)
	}
	// Every member, on every node, is told (configured); the other nodes
	// drop their cached post rule as the notice reaches them, so that
	// event and typing, which the store does not see, follow at once.
	reg.forgetMod(roomID)
	frame := protocol.Encode(protocol.TypeConfigured, "", protocol.Configured{RoomID: roomID, Post: post, By: a.User})
	reg.broker.Relay(roomID, "", false, frame)
	if r := reg.lookup(roomID); r != nil {
		r.notify(frame)
	}
	reg.LogAction(a, "configure", roomID, "", "", "post", post)
	return nil
}

// Clear drops roomID's stored messages (SPEC §11); lastSeq and the epoch
// stay, and an older since gets truncated.
func (reg *Registry) Clear(ctx context.Context, a Actor, roomID string) error {
	if perr := reg.mayModerate(a, roomID, "", "clear the history"); perr != nil {
		return perr
	}
	if err := reg.store.Clear(ctx, roomID); err != nil {
		return reg.storeError("clear", err)
	}
	reg.LogAction(a, "clear", roomID, "", "")
	return nil
}

// DisconnectUser closes every connection of userID with 4003 (SPEC §11),
// on this node and, in a cluster, on the others (a notice through the
// directory). here reports whether this node held one; in a cluster the
// notice may reach a node that does.
func (reg *Registry) DisconnectUser(ctx context.Context, userID string) (here bool, err error) {
	here = reg.disconnectHere(userID)
	if reg.dir == nil {
		return here, nil
	}
	if err := reg.dir.Disconnect(ctx, userID); err != nil {
		return here, reg.storeError("disconnect notice", err)
	}
	return here, nil
}

// disconnectHere closes userID's connection on this node, if any.
func (reg *Registry) disconnectHere(userID string) bool {
	c, ok := reg.UserConn(userID).(Disconnectable)
	if ok {
		c.Disconnected()
	}
	return ok
}

// Clustered reports whether the registry is one node of a cluster.
func (reg *Registry) Clustered() bool { return reg.dir != nil }

// UserConn returns userID's connection on this node, or nil.
func (reg *Registry) UserConn(userID string) Conn {
	reg.mu.RLock()
	u := reg.users[userID]
	reg.mu.RUnlock()
	if u == nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conn
}

// tellEverywhere queues frame to userID's connection on every node.
func (reg *Registry) tellEverywhere(roomID, userID string, frame []byte) {
	reg.broker.Relay(roomID, userID, false, frame)
	reg.tell(userID, frame)
}

// tell queues frame to userID's connection on this node, if any.
func (reg *Registry) tell(userID string, frame []byte) {
	reg.mu.RLock()
	u := reg.users[userID]
	reg.mu.RUnlock()
	if u != nil {
		u.queue(frame)
	}
}

// LogAction logs a moderation action (actor, target, room, reason) and
// counts it.
func (reg *Registry) LogAction(a Actor, action, roomID, target, reason string, more ...any) {
	reg.actions.add(action)
	args := append([]any{"action", action, "room", roomID, "actor", a.User.UserID, "role", a.Role.String(), "target", target, "reason", reason}, more...)
	reg.log.Info("moderation", args...)
}

// actionCounts counts moderation actions by name, for /metrics.
type actionCounts struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (c *actionCounts) add(action string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]uint64{}
	}
	c.n[action]++
	c.mu.Unlock()
}

// Actions returns how many of each moderation action were taken here.
func (reg *Registry) Actions() map[string]uint64 {
	reg.actions.mu.Lock()
	defer reg.actions.mu.Unlock()
	out := make(map[string]uint64, len(reg.actions.n))
	for k, v := range reg.actions.n {
		out[k] = v
	}
	return out
}

// roomMod caches a live room's mutes and run-time post rule, for the
// checks of msg, event and typing: read from the store at most every
// modCacheTTL (another node's mute reaches typing and events that late;
// a muted msg is refused by the store itself, on every node at once) and
// dropped at once by this node's own changes (forgetMod).
type roomMod struct {
	at time.Time
	// forgotten marks the state forgetMod leaves: nothing cached, read
	// again before use, even on a message's path (currentMod).
	forgotten bool
	mutes     map[string]time.Time // userID → until (zero: until lifted)
	post      policy.PostRule      // "" : the namespace's
}

const modCacheTTL = 5 * time.Second

// forgetMod drops roomID's cached moderation state, if the room is live.
//
// It stores a new expired state rather than nil, so that a refresh that
// read the store before this change cannot put its stale copy back:
// roomMod stores what it read only if the state it replaced is still the
// one it found.
func (reg *Registry) forgetMod(roomID string) {
	if r := reg.lookup(roomID); r != nil {
		r.mod.Store(&roomMod{forgotten: true})
	}
}

// currentMod is roomMod for a message's path (msg, event, typing): a state
// past modCacheTTL is used once more while a goroutine of the registry
// reads the store again, so that no sender waits for that read. Only a
// room with nothing cached (none yet, or forgotten by this node's own
// change) is read first. A stale state risks little: the store checks a
// msg's mute and post rule itself as it appends it, and another node's
// change also reaches this one as a relayed notice (muted, configured).
func (reg *Registry) currentMod(r *Room, now time.Time) *roomMod {
	rm := r.mod.Load()
	switch {
	case rm == nil || rm.forgotten:
		return reg.roomMod(r, now)
	case now.Sub(rm.at) >= modCacheTTL && r.modReading.CompareAndSwap(false, true):
		if !reg.spawn(func() {
			defer r.modReading.Store(false)
			reg.roomMod(r, time.Now())
		}) {
			r.modReading.Store(false)
		}
	}
	return rm
}

// roomMod returns r's cached moderation state, reading the store when it
// is older than modCacheTTL. A store without moderation, or one that
// fails, gives the empty state (the store's own check of a msg still
// holds).
//
// now is the caller's clock reading: a message's path reads it once.
func (reg *Registry) roomMod(r *Room, now time.Time) *roomMod {
	old := r.mod.Load()
	if old != nil && now.Sub(old.at) < modCacheTTL {
		return old
	}
	rm := &roomMod{at: now}
	ctx, cancel := context.WithTimeout(reg.ctx, 2*time.Second)
	if rs, err := reg.store.Restrictions(ctx, r.id, store.Mute, now); err == nil && len(rs) > 0 {
		rm.mutes = make(map[string]time.Time, len(rs))
		for _, x := range rs {
			rm.mutes[x.UserID] = x.Until
		}
	}
	if post, err := reg.store.PostRule(ctx, r.id); err == nil {
		rm.post = policy.PostRule(post)
	}
	cancel()
	// A change made meanwhile (forgetMod) wins: the next caller reads
	// again.
	r.mod.CompareAndSwap(old, rm)
	return rm
}

// MayPostEvent holds an event posted over HTTP (POST
// /api/rooms/{id}/events) to roomID's post rule set at run time (SPEC §11)
// for a caller of role; the namespace's own rule is the caller's to check
// (policy.MayPost). Events are not stored, so no store checks them as it
// appends a message: the rule is read from the store, once per request.
func (reg *Registry) MayPostEvent(ctx context.Context, roomID string, p *policy.Policy, role policy.Role) error {
	rule, err := reg.store.PostRule(ctx, roomID)
	if err != nil {
		return reg.storeError("read post rule", err)
	}
	if rule == "" {
		return nil
	}
	if perr := p.MayPostWith(policy.PostRule(rule), role, true); perr != nil {
		return perr
	}
	return nil
}

// postInForce is what joined says of r's post rule (SPEC §11): the rule
// set at run time, else the namespace's when it is not members ("": every
// member may post).
func (rm *roomMod) postInForce(p *policy.Policy) policy.PostRule {
	switch {
	case rm.post != "":
		return rm.post
	case p != nil && p.Post != policy.PostMembers:
		return p.Post
	}
	return ""
}

// mutedError is the muted refusal of userID in rm's room, or nil.
func (rm *roomMod) mutedError(roomID, userID string) *protocol.Error {
	until, ok := rm.mutes[userID]
	if !ok || !until.IsZero() && time.Now().After(until) {
		return nil
	}
	return mutedErr(roomID, until)
}

func mutedErr(roomID string, until time.Time) *protocol.Error {
	if until.IsZero() {
		return protocol.Errorf(protocol.CodeMuted, "you are muted in room %s until a moderator lifts it", roomID)
	}
	return protocol.Errorf(protocol.CodeMuted, "you are muted in room %s until %s", roomID, until.UTC().Format(time.RFC3339))
}

// storeRefusal turns an append's error into what the sender is told: muted
// for a mute the store found, forbidden (naming the rule, as p words it)
// for the room's moderators post rule (p nil: naming the room),
// else store_unavailable. Either refusal drops the room's cached
// moderation state, which missed it.
func (reg *Registry) storeRefusal(roomID string, p *policy.Policy, err error) *protocol.Error {
	var me *store.MutedError
	if errors.As(err, &me) {
		reg.forgetMod(roomID)
		return mutedErr(roomID, me.Until)
	}
	var pe *store.PostRuleError
	if errors.As(err, &pe) {
		reg.forgetMod(roomID)
		if p != nil {
			if perr := p.MayPostWith(policy.PostRule(pe.Rule), policy.RoleMember, false); perr != nil {
				return perr
			}
		}
		return protocol.Errorf(protocol.CodeForbidden, "room %s: only moderators and owners may post (post = %q)", roomID, pe.Rule)
	}
	return reg.storeError("append", err)
}

// bannedError is the banned refusal of u joining roomID, or nil.
func (reg *Registry) bannedError(ctx context.Context, roomID, userID string) error {
	rs, banned, err := reg.store.Restricted(ctx, roomID, store.Ban, userID, time.Now())
	if err != nil {
		return reg.storeError("read bans", err)
	}
	if !banned {
		return nil
	}
	until := "a moderator lifts it"
	if !rs.Until.IsZero() {
		until = rs.Until.UTC().Format(time.RFC3339)
	}
	msg := fmt.Sprintf("you are banned from room %s until %s", roomID, until)
	if rs.Reason != "" {
		msg += " (" + rs.Reason + ")"
	}
	return &protocol.Error{Code: protocol.CodeBanned, Message: msg}
}
