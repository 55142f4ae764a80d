package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// Kind is a kind of restriction of a user in a room (SPEC §11).
type Kind string

// The kinds of restriction.
const (
	Ban  Kind = "ban"
	Mute Kind = "mute"
)

// Restriction is a ban or a mute of one user in one room.
type Restriction struct {
	UserID string
	Until  time.Time // zero: until lifted
	By     protocol.User
	Reason string
	At     time.Time
}

// InForce reports whether r holds at now: it has no end or ends after now.
func (r Restriction) InForce(now time.Time) bool {
	return r.Until.IsZero() || now.Before(r.Until)
}

// ErrMuted is matched (errors.Is) by the error an Append of a muted
// user's message gets: a *MutedError. It does not wrap ErrUnavailable.
var ErrMuted = errors.New("muted")

// MutedError refuses a muted user's message; Until is when the mute ends
// (zero: until lifted).
type MutedError struct {
	Until time.Time
}

func (e *MutedError) Error() string {
	if e.Until.IsZero() {
		return "muted until lifted"
	}
	return fmt.Sprintf("muted until %s", e.Until.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrMuted) true.
func (e *MutedError) Is(target error) bool { return target == ErrMuted }

// ErrPostRule is matched (errors.Is) by the error an Append of a message
// with BelowModerator gets while its room's run-time post rule is
// ModeratorsOnly: a *PostRuleError. It does not wrap ErrUnavailable.
var ErrPostRule = errors.New("post rule")

// ModeratorsOnly is the run-time post rule (SetPostRule) under which an
// Append of a message with BelowModerator is refused: policy's
// PostModerators, spelled here because the store does not import policy.
const ModeratorsOnly = "moderators"

// PostRuleError refuses a message whose sender is below moderator in a
// room whose run-time post rule is Rule.
type PostRuleError struct {
	Rule string
}

func (e *PostRuleError) Error() string {
	return fmt.Sprintf("the room's post rule is %q", e.Rule)
}

// Is makes errors.Is(err, ErrPostRule) true.
func (e *PostRuleError) Is(target error) bool { return target == ErrPostRule }

// Moderation is the durable moderation state of rooms (SPEC §11): bans,
// mutes and the run-time post rule. Expiries are enforced on read. Every
// Store implements it (Store includes it); an Append of a message (not a
// redaction) whose From.UserID is muted in the room at the store's clock
// fails with a *MutedError, storing nothing and using no seq; so does an
// Append of a message with BelowModerator while the room's post rule is
// ModeratorsOnly, with a *PostRuleError. The store's copy of a message
// never keeps BelowModerator.
type Moderation interface {
	// PutRestriction sets r for its user in roomID, replacing an earlier one.
	PutRestriction(ctx context.Context, roomID string, kind Kind, r Restriction) error
	// DeleteRestriction lifts userID's restriction; existed reports
	// whether there was one (in force, or ended and not yet pruned: a
	// store deletes ended ones as it reads or trims, never by a timer
	// per entry).
	DeleteRestriction(ctx context.Context, roomID string, kind Kind, userID string) (existed bool, err error)
	// Restrictions returns those in force at now, sorted by UserID.
	Restrictions(ctx context.Context, roomID string, kind Kind, now time.Time) ([]Restriction, error)
	// Restricted returns userID's restriction if it is in force at now.
	Restricted(ctx context.Context, roomID string, kind Kind, userID string, now time.Time) (Restriction, bool, error)
	// SetPostRule sets the room's run-time post rule; "" removes it.
	SetPostRule(ctx context.Context, roomID, rule string) error
	// PostRule returns the room's run-time post rule, "" if none.
	PostRule(ctx context.Context, roomID string) (string, error)
}
