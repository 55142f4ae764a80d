package protocol

import (
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// Client → server frame types (SPEC §4).
const (
	TypeJoin    = "join"
	TypeMsg     = "msg"
	TypeLeave   = "leave"
	TypeCreate  = "create"
	TypeTyping  = "typing"
	TypePing    = "ping"
	TypeHistory = "history"
	TypeEvent   = "event"
	// TypeAuth carries a fresh signed identity (SPEC §10) before or after
	// the connection's token expires; the reply is TypeAuthed.
	TypeAuth = "auth"
)

// Server → client frame types (SPEC §4). TypeMsg, TypeTyping, TypeHistory
// and TypeEvent are shared with the client side.
const (
	TypeWelcome  = "welcome"
	TypeJoined   = "joined"
	TypePresence = "presence"
	TypeLeft     = "left"
	TypeCreated  = "created"
	TypePong     = "pong"
	TypeAck      = "ack"
	TypeError    = "error"
	// TypeResume carries a new resume token to a connection whose token is
	// half ResumeMaxAge old (24 h by default), so that it can still be
	// resumed after it drops.
	TypeResume = "resume"
	// TypeAuthed accepts an auth frame's token: its exp.
	TypeAuthed = "authed"
)

// Subprotocol is the WebSocket subprotocol of protocol v1. A client need
// not offer it. One that sends its resume token in the subprotocol
// ResumeSubprotocol+token (a browser, which can set no other header;
// unlike ?resume=, it stays out of the request lines that proxies log)
// offers Subprotocol beside it, and the server selects Subprotocol: a
// browser fails a connection whose server selects none of those offered.
const Subprotocol = "roomchat"

// ResumeSubprotocol starts the subprotocol that carries a resume token:
// "roomchat.resume.<token>". Tokens are base64url, which a subprotocol
// name may hold.
const ResumeSubprotocol = Subprotocol + ".resume."

// ClientTypes lists every frame type a client may send.
var ClientTypes = []string{TypeJoin, TypeMsg, TypeLeave, TypeCreate, TypeTyping, TypePing, TypeHistory, TypeEvent, TypeAuth,
	TypeRedact, TypeKick, TypeBan, TypeUnban, TypeMute, TypeUnmute, TypeConfigure}

// ServerTypes lists every frame type the server sends.
var ServerTypes = []string{TypeWelcome, TypeJoined, TypeMsg, TypePresence, TypeTyping, TypeLeft, TypeCreated, TypePong, TypeAck, TypeError, TypeHistory, TypeEvent, TypeResume, TypeAuthed, TypeDone, TypeKicked, TypeMuted, TypeConfigured}

// Envelope is one frame: {"type", "id"?, "payload"?}. Payload stays raw until
// the handler for Type decodes it into the matching struct.
type Envelope struct {
	Type    string         `json:"type"`
	ID      string         `json:"id,omitempty"`
	Payload jsontext.Value `json:"payload,omitempty"`
}

// Join is the payload of a client's join.
type Join struct {
	RoomID string `json:"roomID"`
	Name   string `json:"name,omitempty"`
	// Since, when set, asks for the stored messages with seq > *Since:
	// the oldest page of them in joined.history, the rest with history
	// requests while joined.more is true.
	Since *int64 `json:"since,omitempty"`
	// Key is the room's owner key (SPEC §11): the connection joins as
	// the room's owner.
	Key string `json:"key,omitempty"`
}

// HistoryRequest is the payload of a client's history: a page of stored
// messages with seq > After, oldest first. RoomID follows msg's defaulting
// rule; Limit 0 means MaxPage.
type HistoryRequest struct {
	RoomID string `json:"roomID,omitempty"`
	// After is required: a page starts just after it.
	After *int64 `json:"after"`
	Limit int    `json:"limit,omitempty"`
}

// History answers a history request: a page of messages, oldest first.
// More is true when stored messages between the page's end and the
// room's last seq were left out.
type History struct {
	RoomID   string    `json:"roomID"`
	Messages []Message `json:"messages"`
	More     bool      `json:"more"`
}

// SendEvent is the payload of a client's event: a custom event for the
// other members of a room, never stored. Data is any JSON value (absent
// is null). Only a nil Data is left out when encoding: omitempty would
// also drop the empty values "", {} and [], which the members would then
// receive as null.
type SendEvent struct {
	Name   string         `json:"name"`
	Data   jsontext.Value `json:"data,omitzero"`
	RoomID string         `json:"roomID,omitempty"`
}

// Event is a custom event as the members receive it. From.UserID is empty
// for an event posted through the HTTP API.
type Event struct {
	RoomID string         `json:"roomID"`
	Name   string         `json:"name"`
	Data   jsontext.Value `json:"data"`
	From   User           `json:"from"`
}

// Send is the payload of a client's msg.
type Send struct {
	Message string `json:"message"`
	RoomID  string `json:"roomID,omitempty"`
}

// RoomRef is the payload of leave and of a client's typing: an optional room.
type RoomRef struct {
	RoomID string `json:"roomID,omitempty"`
}

// User names a connection's user in events.
type User struct {
	UserID string `json:"userID"`
	Name   string `json:"name"`
}

// TimeFormat is the layout of Message.TS: RFC 3339 in UTC with milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Message is a stored chat message and the payload of a server's msg event.
type Message struct {
	ID      string `json:"id"`
	RoomID  string `json:"roomID"`
	Seq     int64  `json:"seq"`
	From    User   `json:"from"`
	Message string `json:"message"`
	// Redacts, when not 0, makes this message a redaction (SPEC §11): the
	// seq of the room's message whose text it removes. Redacts and
	// Redacted sit before TS: a stored message's JSON ends with its ts.
	Redacts int64 `json:"redacts,omitzero"`
	// Redacted marks a message whose text a redaction removed (Message is
	// then ""): who redacted it and the redaction's seq.
	Redacted *Redaction `json:"redacted,omitzero"`
	TS       time.Time  `json:"ts,format:'2006-01-02T15:04:05.000Z07:00'"`
	// BelowModerator is set on a member's msg by the room layer: its
	// sender's role is below moderator, so the store refuses it while
	// the room's run-time post rule is "moderators" (SPEC §11
	// configure), in the step that would store it, on every node at
	// once. It is never on the wire and never stored.
	BelowModerator bool `json:"-"`
}

// Redaction says who removed a message's text and with which seq.
type Redaction struct {
	By  User  `json:"by"`
	Seq int64 `json:"seq"`
}

// Welcome is the first frame on every connection.
type Welcome struct {
	UserID string `json:"userID"`
	Resume string `json:"resume"`
	Online int    `json:"online"`
	Limits Limits `json:"limits"`
	// Name and Exp are set for a signed identity (SPEC §10): the user's
	// name (the token's name claim, which the user cannot change, or else
	// the default name) and the token's exp (Unix seconds).
	Name string `json:"name,omitempty"`
	Exp  int64  `json:"exp,omitzero"`
}

// Auth is the payload of an auth frame: a fresh token for the same sub.
type Auth struct {
	Token string `json:"token"`
}

// Authed accepts an auth frame: the new token's exp (Unix seconds).
type Authed struct {
	Exp int64 `json:"exp"`
}

// Resume is the payload of a server's resume event: a new resume token
// that replaces the one of the welcome (or of the last resume event). A
// client keeps the newest and resumes with it after a drop.
type Resume struct {
	Resume string `json:"resume"`
}

// Joined answers a join. The server encodes it with EncodeJoined; a
// field added here goes into joinedWire too.
type Joined struct {
	RoomID    string    `json:"roomID"`
	You       User      `json:"you"`
	Members   []User    `json:"members"`
	Count     int       `json:"count"`
	History   []Message `json:"history"`
	LastSeq   int64     `json:"lastSeq"`
	Epoch     string    `json:"epoch"`
	Truncated bool      `json:"truncated"`
	// More is true when stored messages between the end of History and
	// LastSeq were left out of this reply: the client asks for them with
	// history requests.
	More bool `json:"more"`
	// Post is the room's post rule in force, as the server knew it when
	// it answered: the one set at run time (SPEC §11 configure),
	// "members" or "moderators", else the namespace's (SPEC §9) when it
	// is "moderators" or "api"; empty (left out) when every member may
	// post. A later change comes as configured.
	Post string `json:"post,omitempty"`
}

// Presence events.
const (
	PresenceJoin  = "join"
	PresenceLeave = "leave"
)

// Presence tells the other members that someone came or went.
type Presence struct {
	RoomID string `json:"roomID"`
	Event  string `json:"event"`
	User   User   `json:"user"`
	Count  int    `json:"count"`
}

// Typing tells the other members that User is typing.
type Typing struct {
	RoomID string `json:"roomID"`
	User   User   `json:"user"`
}

// Left answers a leave.
type Left struct {
	RoomID string `json:"roomID"`
}

// Created answers a create (and POST /api/rooms).
type Create struct {
	// Namespace, when set, creates "namespace:<nanoid>" (SPEC §9); the
	// configuration must name it.
	Namespace string `json:"namespace,omitempty"`
}

// Created is the reply to create and to POST /api/rooms.
type Created struct {
	RoomID string `json:"roomID"`
	URL    string `json:"url"`
	// OwnerKey is the new room's owner key (SPEC §11), for its creator.
	OwnerKey string `json:"ownerKey,omitempty"`
}

// Ack confirms that a msg sent with an id is stored.
type Ack struct {
	MsgID string `json:"msgID"`
	Seq   int64  `json:"seq"`
}
