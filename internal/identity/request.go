package identity

import (
	"net/http"
	"strings"
)

// BearerSubprotocol is the prefix of the WebSocket subprotocol that
// carries a token from a browser, which cannot set headers on an upgrade
// (§10): "roomchat.bearer.<jwt>", offered beside "roomchat".
const BearerSubprotocol = "roomchat.bearer."

// FromRequest finds a token on an HTTP request, first found wins (§10):
// "Authorization: Bearer <jwt>", then a "roomchat.bearer.<jwt>" entry of
// Sec-WebSocket-Protocol (a comma-separated list, in any of the header's
// lines), then ?token=. via names where it was found ("header",
// "subprotocol", "query"); ok is false when none is there. A carrier that
// is present but empty ("Bearer " with nothing after it, token=) is found
// with token "": a credential presented but invalid is refused, never
// taken as anonymous. A token over MaxToken is returned as is; Verify
// refuses it. An Authorization header of another scheme is not a token.
func FromRequest(r *http.Request) (token, via string, ok bool) {
	for _, h := range r.Header.Values("Authorization") {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
		if strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(rest), "header", true
		}
	}
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if t, found := strings.CutPrefix(strings.TrimSpace(p), BearerSubprotocol); found {
				return t, "subprotocol", true
			}
		}
	}
	if q := r.URL.Query(); q.Has("token") {
		return q.Get("token"), "query", true
	}
	return "", "", false
}
