package room

import (
	"sync/atomic"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
)

// Grants gives a verified identity's role in each room (SPEC §10 rooms
// claim); identity.Identity implements it. A user without one is
// anonymous.
type Grants interface {
	Role(roomID string) policy.Role
}

// roomPolicy is a room's policy as looked up in one Config: a room looks
// its policy up once, and again only after a reload put another Config in
// force (SPEC §9: the next action of every connection follows the new
// file).
type roomPolicy struct {
	cfg *policy.Config
	p   *policy.Policy
	err *protocol.Error // unknown_namespace: the reload dropped it
}

// roomPolicyRef is a Room's cached policy; set without the room's lock.
type roomPolicyRef = atomic.Pointer[roomPolicy]

// Policies returns the source of policy the registry decides by.
func (reg *Registry) Policies() *policy.Source { return reg.policies }

// PolicyFor returns the policy that governs roomID in the Config in force,
// or unknown_namespace. roomID must be valid.
func (reg *Registry) PolicyFor(roomID string) (*policy.Policy, *protocol.Error) {
	return reg.policies.Config().Lookup(roomID)
}

// policyOf is PolicyFor for a live room, from its cache.
func (reg *Registry) policyOf(r *Room) (*policy.Policy, *protocol.Error) {
	cfg := reg.policies.Config()
	if rp := r.pol.Load(); rp != nil && rp.cfg == cfg {
		return rp.p, rp.err
	}
	p, err := cfg.Lookup(r.id)
	r.pol.Store(&roomPolicy{cfg: cfg, p: p, err: err})
	return p, err
}

// quiet reports whether r's policy sends no presence frames (join_leave =
// false), from the cache the room's last action filled.
func (r *Room) quiet() bool {
	rp := r.pol.Load()
	return rp != nil && rp.p != nil && !rp.p.JoinLeave
}

// grantsRef boxes a Grants for User.grants.
type grantsRef struct{ g Grants }

// grantedRole is the role u's identity grants in roomID: RoleNone for an
// anonymous user or a room its token does not name. It takes no lock: a
// message's path asks it.
func (u *User) grantedRole(roomID string) policy.Role {
	if ref := u.grants.Load(); ref != nil {
		return ref.g.Role(roomID)
	}
	return policy.RoleNone
}

// Verified reports whether u's identity comes from a signed token.
func (u *User) Verified() bool { return u.grants.Load() != nil }

// SetGrants replaces u's identity grants (a refreshed token, SPEC §10
// auth): the next action in each room follows them.
func (u *User) SetGrants(g Grants) {
	if g == nil {
		u.grants.Store(nil)
		return
	}
	u.grants.Store(&grantsRef{g})
}

// mayPost checks m's post permission and the namespace's own rate in r
// under p (SPEC §9 post, rate, burst). Guarded by r.mu.
// granted is the role u's token grants in r (grantedRole, read before
// r.mu: a user's lock is never taken under a room's).
//
// rm is the room's moderation state: a mute refuses, and a post rule set
// at run time (SPEC §11 configure) replaces the namespace's. stored is
// true for a msg, which the store checks against the room's run-time post
// rule as it stores it (protocol.Message.BelowModerator): a cached rule of
// moderators is left to that check, so that a switch back to members on
// another node holds for the next msg, not after the cache is dropped.
func (reg *Registry) mayPost(r *Room, p *policy.Policy, rm *roomMod, m *member, granted policy.Role, now int64, stored bool) *protocol.Error {
	if err := rm.mutedError(r.id, m.user.id); err != nil {
		return err
	}
	rule := p.Post
	if rm.post != "" {
		rule = rm.post
	}
	if !stored || rm.post != policy.PostModerators {
		if err := p.MayPostWith(rule, max(m.role, granted), false); err != nil {
			return err
		}
	}
	// The connection's own limit is the built-in layer's (SPEC §4); a
	// namespace that sets another rate or burst adds its own per member.
	if p.Rate <= 0 || p.Rate == reg.limits.Rate && p.Burst == reg.limits.Burst {
		return nil
	}
	m.nsRate.fill(now, p.Rate, float64(p.Burst))
	if m.nsRate.tokens < 1 {
		return protocol.Errorf(protocol.CodeRateLimited, "%s: at most %g messages a second (rate), %d at once (burst); send again in a moment", p.Where(), p.Rate, p.Burst)
	}
	m.nsRate.tokens--
	return nil
}

// noMembers is joined's member list under presence = false.
var noMembers = protocol.EncodeUsers(nil)

// OwnerKey returns roomID's owner key (SPEC §11): create and POST
// /api/rooms hand it to the room's creator, and a join with it makes that
// connection the room's owner.
func (reg *Registry) OwnerKey(roomID string) string { return reg.signer.ownerKey(roomID) }

// keyRole is the role a join's room key gives: RoleOwner for roomID's
// owner key, RoleNone without one, forbidden for any other key.
func (reg *Registry) keyRole(roomID, key string) (policy.Role, *protocol.Error) {
	switch {
	case key == "":
		return policy.RoleNone, nil
	case reg.signer.checkOwnerKey(roomID, key):
		return policy.RoleOwner, nil
	}
	return policy.RoleNone, protocol.FieldErrorf(protocol.CodeForbidden, "key", "this key is not room %s's owner key", roomID)
}

// IsOwnerKey reports whether key is roomID's owner key.
func (reg *Registry) IsOwnerKey(roomID, key string) bool {
	return reg.signer.checkOwnerKey(roomID, key)
}
