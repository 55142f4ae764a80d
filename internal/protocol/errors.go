package protocol

import "fmt"

// Error codes (SPEC §4). The same codes are used by the HTTP API.
const (
	CodeBadJSON          = "bad_json"
	CodeBadEnvelope      = "bad_envelope"
	CodeUnknownType      = "unknown_type"
	CodeBadPayload       = "bad_payload"
	CodeNotInRoom        = "not_in_room"
	CodeRoomRequired     = "room_required"
	CodeTooLong          = "too_long"
	CodeRateLimited      = "rate_limited"
	CodeRoomFull         = "room_full"
	CodeRoomLimit        = "room_limit"
	CodeStoreUnavailable = "store_unavailable"
	// CodeShuttingDown answers frames and requests that arrive while the
	// server shuts down (WebSocket error, HTTP 503).
	CodeShuttingDown = "shutting_down"
	// CodeInternal is what a client sees for a server fault; the cause is
	// logged, never sent.
	CodeInternal = "internal"
	// CodeNotFound, CodeTooLarge, CodeForbiddenOrigin and
	// CodeUnsupportedType are HTTP-only (404, 413, 403 and 415).
	CodeNotFound        = "not_found"
	CodeTooLarge        = "too_large"
	CodeForbiddenOrigin = "forbidden_origin"
	CodeUnsupportedType = "unsupported_media_type"
	// CodeServerFull refuses a WebSocket upgrade when the server holds as
	// many connections as it may (HTTP 503 with Retry-After): HTTP-only.
	CodeServerFull = "server_full"
	// CodeServerBusy refuses a page of messages over HTTP while the server
	// answers as many as it may (HTTP 503 with Retry-After): HTTP-only.
	CodeServerBusy = "server_busy"
	// CodeBadHost refuses a request whose Host is not one the server
	// answers to (HTTP 421; -hosts, -url): HTTP-only.
	CodeBadHost = "bad_host"
	// CodeForbidden refuses an action the room's policy (§9) or the
	// actor's role (§11) does not allow; the message names the namespace
	// or room and the rule. Over HTTP it is 403.
	CodeForbidden = "forbidden"
	// CodeUnknownNamespace refuses a room whose namespace (§9) the
	// configuration does not name (HTTP 404).
	CodeUnknownNamespace = "unknown_namespace"
	// CodeHistoryDisabled answers a history request in a room whose
	// policy stores nothing (§9 history size 0).
	CodeHistoryDisabled = "history_disabled"
	// CodeTokenExpired tells a connection that its signed identity (§10)
	// has expired: it has 30 s to send an auth frame before a 4001 close.
	CodeTokenExpired = "token_expired"
	// CodeUnauthorized refuses a request or upgrade whose credentials are
	// missing where required, or presented and invalid (HTTP 401, §10).
	CodeUnauthorized = "unauthorized"
)

// ErrorCodes lists every code the server may send.
var ErrorCodes = []string{
	CodeBadJSON, CodeBadEnvelope, CodeUnknownType, CodeBadPayload, CodeNotInRoom,
	CodeRoomRequired, CodeTooLong, CodeRateLimited, CodeRoomFull, CodeRoomLimit,
	CodeStoreUnavailable, CodeShuttingDown, CodeInternal, CodeNotFound, CodeTooLarge,
	CodeForbiddenOrigin, CodeUnsupportedType, CodeServerFull, CodeBadHost,
	CodeServerBusy, CodeForbidden, CodeUnknownNamespace, CodeHistoryDisabled,
	CodeTokenExpired, CodeUnauthorized, CodeBanned, CodeMuted,
}

// ErrStoreUnavailable is the error every failure of the message store is
// answered with, over WebSocket and HTTP alike: one code, one sentence.
// The cause is logged, never sent. Do not modify it.
var ErrStoreUnavailable = &Error{Code: CodeStoreUnavailable, Message: "the message store is unavailable; try again shortly"}

// Error is the one error type that crosses the wire: the payload of an
// error frame and the body of an HTTP error. Field names the offending
// payload field for bad_payload and too_long.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with a formatted human message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns an *Error that names the payload field at fault.
func FieldErrorf(code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Close is a WebSocket close the server sends (RFC 6455 §7.4.1): its code
// and the reason that goes with it. Reasons stay well under the 123-byte
// limit of a close frame.
type Close struct {
	Code   int
	Reason string
}

// The closes roomchat's server sends.
var (
	// CloseReplaced ends a connection whose user resumed on another one.
	CloseReplaced = Close{1000, "resumed on another connection"}
	// CloseShutdown ends every connection when the server stops.
	CloseShutdown = Close{1001, "server shutting down"}
	// CloseBinary answers a binary frame.
	CloseBinary = Close{1003, "binary frames are not supported; send JSON text frames"}
	// CloseNotUTF8 answers a text frame that is not UTF-8.
	CloseNotUTF8 = Close{1007, "text frame is not valid UTF-8"}
	// CloseRateAbuse ends a connection that goes on sending far past its
	// rate limit.
	CloseRateAbuse = Close{1008, "too many messages; slow down"}
	// CloseFrameTimeout ends a connection whose client started a message
	// and did not finish it within the frame timeout (10 s).
	CloseFrameTimeout = Close{1008, "frame not finished in time"}
	// CloseTooBig answers a frame over the size cap; the WebSocket library
	// sends it, with a reason of its own.
	CloseTooBig = Close{1009, "frame exceeds the size limit"}
	// CloseSlow ends a connection that cannot keep up with its room.
	CloseSlow = Close{1013, "connection too slow to keep up; reconnect and resume"}
	// CloseTokenExpired ends a connection whose signed identity expired
	// and was not renewed with an auth frame within 30 s (SPEC §10):
	// clients fetch a new token before they reconnect.
	CloseTokenExpired = Close{4001, "token expired; reconnect with a new token"}
	// CloseDisconnected ends every connection of a user that the HTTP API
	// disconnected (SPEC §11); clients do not reconnect at once.
	CloseDisconnected = Close{4003, "disconnected by a moderator"}
)

// Closes lists every close the server sends.
var Closes = []Close{CloseReplaced, CloseShutdown, CloseBinary, CloseNotUTF8, CloseRateAbuse, CloseFrameTimeout, CloseTooBig, CloseSlow, CloseTokenExpired, CloseDisconnected}
