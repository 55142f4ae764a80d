package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Frames are decoded with github.com/go-json-experiment/json: it matches
// keys case-sensitively, rejects duplicated keys in every object of the
// frame and rejects invalid UTF-8, which are exactly SPEC §4's frame rules.
// Unknown fields are ignored (its default).

// DecodeEnvelope parses one frame. It returns bad_json when data is not a
// single valid JSON value with unique keys, and bad_envelope when it is
// valid JSON but not an envelope: not an object, a missing or non-string
// type, a non-string id, or a payload that is not an object. It never panics.
func DecodeEnvelope(data []byte) (Envelope, *Error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Envelope{}, decodeError(err, "")
	}
	if env.Type == "" {
		return Envelope{}, &Error{Code: CodeBadEnvelope, Field: "type", Message: `the frame needs a "type" string, e.g. {"type":"ping"}`}
	}
	if len(env.Payload) > 0 {
		switch env.Payload.Kind() {
		case '{':
		case 'n': // "payload": null is the same as no payload.
			env.Payload = nil
		default:
			return Envelope{}, &Error{Code: CodeBadEnvelope, Field: "payload", Message: `"payload" must be a JSON object`}
		}
	}
	return env, nil
}

// DecodePayload decodes env.Payload into v (a pointer to a payload struct).
// A missing payload leaves v at its zero value. A wrong type names the field.
func DecodePayload(env Envelope, v any) *Error {
	if len(env.Payload) == 0 {
		return nil
	}
	if err := json.Unmarshal(env.Payload, v); err != nil {
		return decodeError(err, "payload")
	}
	return nil
}

func decodeError(err error, prefix string) *Error {
	if _, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		msg := "the frame is not valid JSON"
		if errors.Is(err, jsontext.ErrDuplicateName) {
			msg = "the frame has a duplicated key"
		}
		return &Error{Code: CodeBadJSON, Message: msg}
	}
	if se, ok := errors.AsType[*json.SemanticError](err); ok {
		field := strings.TrimPrefix(string(se.JSONPointer), "/")
		code := CodeBadEnvelope
		if prefix != "" {
			code = CodeBadPayload
		}
		if field == "" {
			if prefix != "" {
				return &Error{Code: code, Field: prefix, Message: fmt.Sprintf("%q must be a JSON object", prefix)}
			}
			return &Error{Code: code, Message: "the frame must be a JSON object"}
		}
		want := "a value of another kind"
		if se.GoType != nil {
			want = kindName(se.GoType.Kind().String())
		}
		return &Error{Code: code, Field: field, Message: fmt.Sprintf("%q must be %s", field, want)}
	}
	return &Error{Code: CodeBadJSON, Message: "the frame is not valid JSON"}
}

func kindName(k string) string {
	switch k {
	case "string":
		return "a string"
	case "int64", "int", "uint64":
		return "a whole number"
	case "ptr":
		return "a whole number"
	case "bool":
		return "true or false"
	}
	return "a " + k
}

// Frame is a server→client frame before encoding.
type Frame struct {
	Type    string `json:"type"`
	ID      string `json:"id,omitempty"`
	Payload any    `json:"payload,omitempty"`
}

// Encode marshals one server frame. The payload types of this package
// always marshal, so an error here is a programming error and panics.
func Encode(typ, id string, payload any) []byte {
	b, err := json.Marshal(Frame{Type: typ, ID: id, Payload: payload})
	if err != nil {
		panic(fmt.Sprintf("protocol: encode %s: %v", typ, err))
	}
	return b
}

// EncodedSize returns how many bytes m takes as JSON, without keeping them.
func EncodedSize(m Message) int {
	var n countWriter
	if err := json.MarshalWrite(&n, m); err != nil {
		panic(fmt.Sprintf("protocol: encode message: %v", err))
	}
	return int(n)
}

type countWriter int

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// EncodeError is Encode for an error frame.
func EncodeError(id string, e *Error) []byte { return Encode(TypeError, id, e) }

// SplitBatch splits a frame received with ?batch=1 into its events: one JSON
// object per line, with an optional trailing newline. A frame without
// newlines is one event.
func SplitBatch(frame []byte) [][]byte {
	var out [][]byte
	for len(frame) > 0 {
		i := bytes.IndexByte(frame, '\n')
		if i < 0 {
			out = append(out, frame)
			break
		}
		if i > 0 {
			out = append(out, frame[:i])
		}
		frame = frame[i+1:]
	}
	return out
}

// EncodeUsers encodes a member list as a JSON array, for EncodeJoined.
func EncodeUsers(users []User) jsontext.Value {
	if users == nil {
		users = []User{}
	}
	b, err := json.Marshal(users)
	if err != nil {
		panic(fmt.Sprintf("protocol: encode users: %v", err))
	}
	return b
}

// AppendUser appends u's encoding to b, byte for byte as EncodeUsers
// writes it (TestAppendUser), without reflection: a room appends each
// member that joins to the list it keeps encoded.
func AppendUser(b []byte, u User) []byte {
	b = append(b, `{"userID":`...)
	b, err1 := jsontext.AppendQuote(b, u.UserID)
	b = append(b, `,"name":`...)
	b, err2 := jsontext.AppendQuote(b, u.Name)
	if err := errors.Join(err1, err2); err != nil {
		panic(fmt.Sprintf("protocol: encode user: %v", err)) // as Encode does
	}
	return append(b, '}')
}

// joinedWire is Joined with its member list already encoded: a room keeps
// the encoding of its list between changes of its members, so that a wave
// of joins into a room of 100 does not encode up to 100 members for each
// (a sixth of the server's work per join). TestEncodeJoined keeps its
// fields those of Joined.
type joinedWire struct {
	RoomID    string         `json:"roomID"`
	You       User           `json:"you"`
	Members   jsontext.Value `json:"members"`
	Count     int            `json:"count"`
	History   []Message      `json:"history"`
	LastSeq   int64          `json:"lastSeq"`
	Epoch     string         `json:"epoch"`
	Truncated bool           `json:"truncated"`
	More      bool           `json:"more"`
	Post      string         `json:"post,omitempty"`
}

// EncodeJoined is Encode of a joined frame whose member list is members,
// as EncodeUsers encodes it; j.Members is not used.
func EncodeJoined(id string, j Joined, members jsontext.Value) []byte {
	return Encode(TypeJoined, id, joinedWire{
		RoomID: j.RoomID, You: j.You, Members: members, Count: j.Count, History: j.History,
		LastSeq: j.LastSeq, Epoch: j.Epoch, Truncated: j.Truncated, More: j.More, Post: j.Post,
	})
}
