// Package identity verifies signed identities and API keys (SPEC §10).
//
// It owns the [auth] table's secrets and keys at run time: New reads the
// HMAC secrets and API keys from the environment variables the
// configuration names (never inline), the PEM public key from its file,
// and keeps a JWKS fresh when jwks_url is set. Verify turns a JWT into an
// Identity (sub, name, exp and the rooms claim as Grants, most specific
// first) or refuses it with one protocol.Error of code unauthorized that
// says what is wrong without echoing the token. FromRequest finds a token
// on an HTTP request in §10's transport order (Authorization header, the
// roomchat.bearer.<jwt> subprotocol, ?token=). APIKey compares an HTTP API
// key in constant time.
//
// It knows nothing of sockets, rooms or policy decisions: the server asks
// it who a connection is and what role a token grants in a room, and asks
// package policy whether that role may join or post.
//
// Signature checks are github.com/golang-jwt/jwt/v5 with an explicit
// algorithm allow-list; an HMAC secret is offered only for HS256 and a
// public key only for its own algorithm family, so a token signed with a
// public key's bytes as an HMAC secret never verifies. The JWKS is
// github.com/MicahParks/keyfunc/v3; its refresh goroutine ends at Close.
package identity
