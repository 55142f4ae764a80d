package protocol

import "time"

// Moderation frames (SPEC §11). A client sends them; the server answers
// done, or an error: forbidden (naming the rule), not_found or
// bad_payload.
const (
	TypeRedact    = "redact"
	TypeKick      = "kick"
	TypeBan       = "ban"
	TypeUnban     = "unban"
	TypeMute      = "mute"
	TypeUnmute    = "unmute"
	TypeConfigure = "configure"

	// TypeDone answers a moderation frame: the action taken.
	TypeDone = "done"
	// TypeKicked tells a user that a moderator put it out of a room (a
	// kick, or a ban, which also keeps it out).
	TypeKicked = "kicked"
	// TypeMuted tells a user that its msg, event and typing in a room are
	// refused until a time (or until lifted).
	TypeMuted = "muted"
	// TypeConfigured tells every member of a room that its post rule
	// changed at run time (configure), so that a client can disable its
	// input when it may no longer post.
	TypeConfigured = "configured"
)

// Moderation error codes (SPEC §11).
const (
	// CodeBanned refuses a join into a room that bans the user; the
	// message says until when.
	CodeBanned = "banned"
	// CodeMuted refuses a muted user's msg, event and typing.
	CodeMuted = "muted"
)

// Redact asks to remove a message's text: the room stores a redaction
// with the next seq.
type Redact struct {
	RoomID string `json:"roomID"`
	Seq    int64  `json:"seq"`
	Reason string `json:"reason,omitempty"`
}

// Moderate is the payload of kick, ban, unban, mute and unmute. For is a
// duration such as "10m" (ban and mute; none: until lifted).
type Moderate struct {
	RoomID string `json:"roomID"`
	UserID string `json:"userID"`
	For    string `json:"for,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Configure switches a room's post rule at run time: "members" or
// "moderators".
type Configure struct {
	RoomID string `json:"roomID"`
	Post   string `json:"post"`
}

// Done answers a moderation frame with what was done.
type Done struct {
	Action string    `json:"action"`
	RoomID string    `json:"roomID"`
	UserID string    `json:"userID,omitempty"`
	Seq    int64     `json:"seq,omitzero"`
	Until  time.Time `json:"until,omitzero,format:'2006-01-02T15:04:05.000Z07:00'"`
	Post   string    `json:"post,omitempty"`
}

// Kicked tells a user it is out of a room; Until is set for a ban with an
// end (zero for a kick, or a ban until lifted: Banned tells them apart).
type Kicked struct {
	RoomID string    `json:"roomID"`
	By     User      `json:"by"`
	Reason string    `json:"reason,omitempty"`
	Banned bool      `json:"banned,omitzero"`
	Until  time.Time `json:"until,omitzero,format:'2006-01-02T15:04:05.000Z07:00'"`
}

// Muted tells a user it is muted in a room until Until (zero: until
// lifted), or, with Lifted, that the mute is over.
type Muted struct {
	RoomID string    `json:"roomID"`
	Until  time.Time `json:"until,omitzero,format:'2006-01-02T15:04:05.000Z07:00'"`
	Lifted bool      `json:"lifted,omitzero"`
}

// Configured tells the members of a room that By set its post rule to Post
// ("members" or "moderators") at run time.
type Configured struct {
	RoomID string `json:"roomID"`
	Post   string `json:"post"`
	By     User   `json:"by"`
}
