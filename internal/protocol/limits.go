package protocol

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits are the configurable rules of SPEC §4. The zero value is not
// useful; start from DefaultLimits. Welcome carries them so that clients can
// check input before sending it.
type Limits struct {
	// MaxRoomID is the longest room ID, in characters (64).
	MaxRoomID int `json:"maxRoomID"`
	// MaxName is the longest display name after trimming, in characters (32).
	MaxName int `json:"maxName"`
	// MaxMessage is the longest message after trimming, in characters (4000).
	MaxMessage int `json:"maxMessage"`
	// MaxFrame is the largest frame the server reads, in bytes (64 KiB).
	// A larger frame closes the connection with 1009.
	MaxFrame int64 `json:"maxFrame"`
	// Rate is messages per second per connection; 0 turns the limit off.
	Rate float64 `json:"rate"`
	// Burst is how many messages may come at once before Rate applies (40).
	Burst int `json:"burst"`
	// RoomCapacity is the most members a room holds (10,000).
	RoomCapacity int `json:"roomCapacity"`
	// History is how many stored messages joined.history carries without
	// since (50).
	History int `json:"history"`
	// MaxPage is the most messages in one joined.history or history reply
	// (200), and MaxPageBytes the most bytes their JSON may take (256 KiB;
	// a page holds at least one message, whatever its size). Together they
	// keep every reply far below the 1 MiB slow-consumer bound.
	MaxPage      int `json:"maxPage"`
	MaxPageBytes int `json:"maxPageBytes"`
	// MaxMembers is the most members listed in joined.members and GET
	// /api/rooms/{id} (100); count stays exact.
	MaxMembers int `json:"maxMembers"`
	// MaxRooms is the most rooms one connection may be in (100); one more
	// join is room_limit.
	MaxRooms int `json:"maxRooms"`
	// MaxID is the longest envelope id, in characters (64).
	MaxID int `json:"maxID"`
	// MaxEventName is the longest custom event name (64 characters), and
	// MaxEventData the most bytes its data may take encoded (8 KiB).
	MaxEventName int `json:"maxEventName"`
	MaxEventData int `json:"maxEventData"`
}

// DefaultLimits returns SPEC §4's defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxRoomID:    64,
		MaxName:      32,
		MaxMessage:   4000,
		MaxFrame:     64 << 10,
		Rate:         20,
		Burst:        40,
		RoomCapacity: 10000,
		History:      50,
		MaxPage:      200,
		MaxPageBytes: 256 << 10,
		MaxMembers:   100,
		MaxRooms:     100,
		MaxID:        64,
		MaxEventName: 64,
		MaxEventData: 8 << 10,
	}
}

// WithDefaults returns l with every zero field set to its default, so that
// a configuration that sets some limits gets SPEC's value for the rest.
// Rate is left alone: 0 turns the rate limit off.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.MaxRoomID, d.MaxRoomID)
	set(&l.MaxName, d.MaxName)
	set(&l.MaxMessage, d.MaxMessage)
	if l.MaxFrame <= 0 {
		l.MaxFrame = d.MaxFrame
	}
	set(&l.Burst, d.Burst)
	set(&l.RoomCapacity, d.RoomCapacity)
	set(&l.History, d.History)
	set(&l.MaxPage, d.MaxPage)
	set(&l.MaxPageBytes, d.MaxPageBytes)
	set(&l.MaxMembers, d.MaxMembers)
	set(&l.MaxRooms, d.MaxRooms)
	set(&l.MaxID, d.MaxID)
	set(&l.MaxEventName, d.MaxEventName)
	set(&l.MaxEventData, d.MaxEventData)
	return l
}

// CheckID checks an envelope id: at most MaxID characters. A longer one is
// bad_envelope, before anything is stored under it.
func (l Limits) CheckID(id string) *Error {
	if len(id) <= l.MaxID {
		return nil
	}
	if n := utf8.RuneCountInString(id); n > l.MaxID {
		return FieldErrorf(CodeBadEnvelope, "id", `"id" is %d characters; the limit is %d`, n, l.MaxID)
	}
	return nil
}

// CheckEventName checks a custom event's name: 1 to MaxEventName
// characters from A–Z a–z 0–9 _ . : -.
func (l Limits) CheckEventName(field, name string) *Error {
	if name == "" {
		return FieldErrorf(CodeBadPayload, field, "%s is required", field)
	}
	if len(name) > l.MaxEventName {
		return FieldErrorf(CodeBadPayload, field, "%s must be at most %d characters", field, l.MaxEventName)
	}
	for i := 0; i < len(name); i++ {
		if b := name[i]; !roomIDByte(b) && b != '.' && b != ':' {
			return FieldErrorf(CodeBadPayload, field, "%s may only contain A-Z, a-z, 0-9, _, ., : and -", field)
		}
	}
	return nil
}

// CheckEventData checks a custom event's data, as encoded: at most
// MaxEventData bytes (too_long beyond).
func (l Limits) CheckEventData(field string, data []byte) *Error {
	if len(data) > l.MaxEventData {
		return FieldErrorf(CodeTooLong, field, "%s is %d bytes encoded; the limit is %d", field, len(data), l.MaxEventData)
	}
	return nil
}

// CheckPageLimit checks a history request's limit: 0 (meaning MaxPage) or
// 1 to MaxPage.
func (l Limits) CheckPageLimit(field string, n int) *Error {
	if n < 0 || n > l.MaxPage {
		return FieldErrorf(CodeBadPayload, field, "%s must be a whole number from 1 to %d", field, l.MaxPage)
	}
	return nil
}

// FitPage returns the longest run of msgs, from the oldest (newest=false)
// or from the newest (newest=true), whose JSON takes at most MaxPageBytes,
// and at most MaxPage messages. It holds at least one message when msgs
// has any, whatever that message's size, so that paging always advances.
func (l Limits) FitPage(msgs []Message, newest bool) []Message {
	if len(msgs) > l.MaxPage {
		if newest {
			msgs = msgs[len(msgs)-l.MaxPage:]
		} else {
			msgs = msgs[:l.MaxPage]
		}
	}
	total := 0
	for i := range msgs {
		j := i
		if newest {
			j = len(msgs) - 1 - i
		}
		total += EncodedSize(msgs[j]) + 1 // the comma between array items
		if total > l.MaxPageBytes && i > 0 {
			if newest {
				return msgs[j+1:]
			}
			return msgs[:j]
		}
	}
	return msgs
}

// RoomIDLen is the length of a room ID that the server creates (a nanoid).
const RoomIDLen = 21

// RoomIDAlphabet is the nanoid alphabet, which is exactly the set of
// characters a room ID may hold.
const RoomIDAlphabet = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// CheckRoomID reports whether id is a valid room ID: 1 to MaxRoomID
// characters from A–Z a–z 0–9 _ -, optionally after a namespace and a
// colon (§9: "ns:room", the namespace 2–32 of the same characters). field
// names the payload field for the error. Whether the namespace exists is
// the policy's question, not this one.
func (l Limits) CheckRoomID(field, id string) *Error {
	if id == "" {
		return FieldErrorf(CodeBadPayload, field, "%s is required", field)
	}
	ns, rest := SplitRoomID(id)
	if ns != "" || len(rest) < len(id) {
		if n := len(ns); n < MinNamespace || n > MaxNamespace || !roomIDChars(ns) {
			return FieldErrorf(CodeBadPayload, field, "the namespace of %s must be %d to %d characters from A-Z, a-z, 0-9, _ and -", field, MinNamespace, MaxNamespace)
		}
		if rest == "" {
			return FieldErrorf(CodeBadPayload, field, "%s needs a room ID after its namespace", field)
		}
	}
	if len(rest) > l.MaxRoomID {
		return FieldErrorf(CodeBadPayload, field, "%s must be at most %d characters", field, l.MaxRoomID)
	}
	if !roomIDChars(rest) {
		return FieldErrorf(CodeBadPayload, field, "%s may only contain A-Z, a-z, 0-9, _ and - (and one : after a namespace)", field)
	}
	return nil
}

// MinNamespace and MaxNamespace bound a namespace's length (§9).
const (
	MinNamespace = 2
	MaxNamespace = 32
)

// SplitRoomID splits "ns:room" into its namespace and the rest; a room ID
// without a colon has the namespace "". It does not validate either part.
func SplitRoomID(id string) (namespace, rest string) {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[:i], id[i+1:]
	}
	return "", id
}

// CheckNamespace reports whether ns is a well-formed namespace name (§9).
func CheckNamespace(ns string) bool {
	return len(ns) >= MinNamespace && len(ns) <= MaxNamespace && roomIDChars(ns)
}

func roomIDChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if !roomIDByte(s[i]) {
			return false
		}
	}
	return true
}

func roomIDByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-'
}

// CleanName trims name and checks it: 1 to MaxName characters, no control
// characters. It returns the trimmed name.
func (l Limits) CleanName(field, name string) (string, *Error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", FieldErrorf(CodeBadPayload, field, "%s must not be empty", field)
	}
	if !utf8.ValidString(name) {
		return "", FieldErrorf(CodeBadPayload, field, "%s must be valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(name); n > l.MaxName {
		return "", FieldErrorf(CodeBadPayload, field, "%s must be at most %d characters (got %d)", field, l.MaxName, n)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return "", FieldErrorf(CodeBadPayload, field, "%s must not contain control characters", field)
		}
	}
	return name, nil
}

// CheckMessage checks a chat message: valid UTF-8 with 1 to MaxMessage
// characters after trimming white space. The message itself is stored and
// delivered as sent, untrimmed. An empty message is bad_payload; a long one
// is too_long.
func (l Limits) CheckMessage(field, msg string) *Error {
	if !utf8.ValidString(msg) {
		return FieldErrorf(CodeBadPayload, field, "%s must be valid UTF-8", field)
	}
	t := strings.TrimSpace(msg)
	if t == "" {
		return FieldErrorf(CodeBadPayload, field, "%s must not be empty", field)
	}
	// Cheap bound first: a string of at most MaxMessage bytes has at most
	// MaxMessage characters.
	if len(t) > l.MaxMessage {
		if n := utf8.RuneCountInString(t); n > l.MaxMessage {
			return FieldErrorf(CodeTooLong, field, "%s is %d characters; the limit is %d", field, n, l.MaxMessage)
		}
	}
	return nil
}
