package policy

import (
	"fmt"
	"math"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// JoinRule says who may join a namespace's rooms (§9 join).
type JoinRule string

// PostRule says who may send msg and event (§9 post).
type PostRule string

const (
	// JoinOpen lets anyone with the link join.
	JoinOpen JoinRule = "open"
	// JoinToken needs a signed identity whose rooms claim grants the room,
	// or the room's owner key (§11).
	JoinToken JoinRule = "token"

	// PostMembers lets any member post.
	PostMembers PostRule = "members"
	// PostModerators lets moderators and owners post: an announcement room.
	PostModerators PostRule = "moderators"
	// PostAPI lets only the HTTP API post.
	PostAPI PostRule = "api"
)

// Role is a user's standing in one room (§11): RoleNone < RoleMember <
// RoleModerator < RoleOwner. RoleNone is an identity that no rooms claim
// grants the room; an anonymous user joining an open room is a member.
type Role int8

const (
	RoleNone Role = iota
	RoleMember
	RoleModerator
	RoleOwner
)

func (r Role) String() string {
	switch r {
	case RoleMember:
		return "member"
	case RoleModerator:
		return "moderator"
	case RoleOwner:
		return "owner"
	}
	return "none"
}

// ParseRole parses "member", "moderator" or "owner".
func ParseRole(s string) (Role, bool) {
	switch s {
	case "member":
		return RoleMember, true
	case "moderator":
		return RoleModerator, true
	case "owner":
		return RoleOwner, true
	}
	return RoleNone, false
}

// RedactAlways is the RedactOwn value that lets authors redact their own
// messages at any time; RedactNever (0) never lets them.
const (
	RedactNever  time.Duration = 0
	RedactAlways time.Duration = math.MaxInt64
)

// Policy is the effective policy of one namespace (or of rooms without
// one): every field of §9 resolved, nothing left to inherit. A *Policy is
// never modified after Load; a reload builds new ones.
type Policy struct {
	// Namespace is the namespace this policy governs; "" for rooms
	// without one.
	Namespace string

	Join        JoinRule
	Post        PostRule
	HistorySize int           // messages kept per room; 0 stores nothing
	HistoryAge  time.Duration // 0 keeps messages whatever their age
	Presence    bool          // false: joined lists no members
	JoinLeave   bool          // false: no presence frames
	Typing      bool
	Events      bool
	Capacity    int     // most members in one room
	Rate        float64 // messages per second per connection; 0: no limit
	Burst       int
	// RedactOwn is how long after sending authors may redact their own
	// messages: RedactNever, RedactAlways, or a duration.
	RedactOwn time.Duration
}

// Builtin returns the built-in layer under the file: §4's defaults with
// the values flags set (capacity, rate, burst, retention).
func Builtin(l protocol.Limits, historySize int, historyAge time.Duration) Policy {
	return Policy{
		Join:        JoinOpen,
		Post:        PostMembers,
		HistorySize: historySize,
		HistoryAge:  historyAge,
		Presence:    true,
		JoinLeave:   true,
		Typing:      true,
		Events:      true,
		Capacity:    l.RoomCapacity,
		Rate:        l.Rate,
		Burst:       l.Burst,
		RedactOwn:   RedactAlways,
	}
}

// Where names the policy's scope for messages: `namespace "news"` or
// `rooms without a namespace`.
func (p *Policy) Where() string { return p.where() }

func (p *Policy) where() string {
	if p.Namespace == "" {
		return "rooms without a namespace"
	}
	return fmt.Sprintf("namespace %q", p.Namespace)
}

func (p *Policy) forbid(format string, args ...any) *protocol.Error {
	return protocol.Errorf(protocol.CodeForbidden, "%s: %s", p.where(), fmt.Sprintf(format, args...))
}

// MayJoin answers a join by a user whose role in the room is role (from a
// token's rooms claim, or RoleOwner from the room's key; RoleNone
// otherwise). It returns nil or a forbidden error naming the rule.
func (p *Policy) MayJoin(role Role) *protocol.Error {
	if p.Join == JoinToken && role < RoleMember {
		return p.forbid(`joining needs a token whose rooms claim grants this room, or the room's key (join = "token")`)
	}
	return nil
}

// MayPost answers a msg or event from a member whose role is role. viaAPI
// is true for the HTTP API acting with an API key or a token.
func (p *Policy) MayPost(role Role, viaAPI bool) *protocol.Error {
	return p.mayPost(p.Post, role, viaAPI)
}

// MayPostWith is MayPost under a post rule set at run time (§11
// configure) in place of the namespace's.
func (p *Policy) MayPostWith(rule PostRule, role Role, viaAPI bool) *protocol.Error {
	return p.mayPost(rule, role, viaAPI)
}

func (p *Policy) mayPost(rule PostRule, role Role, viaAPI bool) *protocol.Error {
	switch rule {
	case PostModerators:
		if role < RoleModerator {
			return p.forbid(`only moderators and owners may post (post = "moderators")`)
		}
	case PostAPI:
		if !viaAPI {
			return p.forbid(`only the HTTP API may post (post = "api")`)
		}
	}
	return nil
}

// MayType answers a typing frame.
func (p *Policy) MayType() *protocol.Error {
	if !p.Typing {
		return p.forbid("typing notices are off (typing = false)")
	}
	return nil
}

// MayEvent answers a custom event (before MayPost).
func (p *Policy) MayEvent() *protocol.Error {
	if !p.Events {
		return p.forbid("custom events are off (events = false)")
	}
	return nil
}

// MayReadHistory answers a history request: history_disabled when the
// policy stores nothing.
func (p *Policy) MayReadHistory() *protocol.Error {
	if p.HistorySize == 0 {
		return protocol.Errorf(protocol.CodeHistoryDisabled, "%s: no history is stored (history.size = 0)", p.where())
	}
	return nil
}

// MayRedactOwn reports whether an author may redact their own message
// sent at sent, at now (§9 redact_own).
func (p *Policy) MayRedactOwn(sent, now time.Time) *protocol.Error {
	switch p.RedactOwn {
	case RedactAlways:
		return nil
	case RedactNever:
		return p.forbid(`authors may not remove their own messages (redact_own = "never")`)
	}
	if now.Sub(sent) > p.RedactOwn {
		return p.forbid("authors may remove their own messages for %s after sending (redact_own)", p.RedactOwn)
	}
	return nil
}
