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
	// History is how many stored messages joined.history carries (50).
	History int `json:"history"`
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
	}
}

// RoomIDLen is the length of a room ID that the server creates (a nanoid).
const RoomIDLen = 21

// RoomIDAlphabet is the nanoid alphabet, which is exactly the set of
// characters a room ID may hold.
const RoomIDAlphabet = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// CheckRoomID reports whether id is a valid room ID: 1 to MaxRoomID
// characters from A–Z a–z 0–9 _ -. field names the payload field for the error.
func (l Limits) CheckRoomID(field, id string) *Error {
	if id == "" {
		return FieldErrorf(CodeBadPayload, field, "%s is required", field)
	}
	if len(id) > l.MaxRoomID {
		return FieldErrorf(CodeBadPayload, field, "%s must be at most %d characters", field, l.MaxRoomID)
	}
	for i := 0; i < len(id); i++ {
		if !roomIDByte(id[i]) {
			return FieldErrorf(CodeBadPayload, field, "%s may only contain A-Z, a-z, 0-9, _ and -", field)
		}
	}
	return nil
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
