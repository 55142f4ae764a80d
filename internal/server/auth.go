package server

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/roomchat/roomchat/internal/identity"
	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
)

// defaultAuthGrace is how long a connection whose token expired may go
// on without an auth frame before it is closed with 4001 (SPEC §10).
const defaultAuthGrace = 30 * time.Second

func (s *Server) authGrace() time.Duration {
	if s.cfg.AuthGrace > 0 {
		return s.cfg.AuthGrace
	}
	return defaultAuthGrace
}

// verifier returns the token verifier in force (a reload may replace it),
// or nil when none is configured: every token is then refused.
func (s *Server) verifier() *identity.Verifier {
	if s.cfg.Verifier == nil {
		return nil
	}
	return s.cfg.Verifier()
}

// authMode is the [auth] mode in force.
func (s *Server) authMode() policy.AuthMode {
	if v := s.verifier(); v != nil {
		return v.Mode()
	}
	return policy.AuthOff
}

// authenticate finds and checks the upgrade's token (SPEC §10), before
// anything is allocated for the connection: a token presented but
// invalid is refused with 401 in every mode, never taken as anonymous;
// with mode required, so is an upgrade without one. nil with ok is an
// anonymous connection. On refusal it gives the gate back key's place.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, key netip.Prefix) (id *identity.Identity, ok bool) {
	tok, via, found := identity.FromRequest(r)
	var perr *protocol.Error
	switch {
	case found:
		v := s.verifier()
		if v == nil {
			perr = protocol.Errorf(protocol.CodeUnauthorized, "tokens are not accepted: auth mode is off")
		} else {
			id, perr = v.Verify(tok)
		}
	case s.authMode() == policy.AuthRequired:
		perr = protocol.Errorf(protocol.CodeUnauthorized, "this server needs a token: Authorization: Bearer, the %s<token> subprotocol, or ?token=", identity.BearerSubprotocol)
	}
	if perr != nil {
		s.gate.leave(key)
		s.log.Info("refused websocket", "remote", r.RemoteAddr, "why", "token", "via", via, "err", perr.Message)
		s.metrics.refused.Inc()
		s.fail(w, http.StatusUnauthorized, perr)
		return nil, false
	}
	return id, true
}

// armExpiry starts the clock of c's identity: at exp, token_expired, and
// authGrace later, unless an auth frame renewed it, a 4001 close. A
// renewal (gen counts them) makes the earlier clock's firing do nothing.
// The timer is stopped when the connection ends (finish). Guarded by c.mu.
func (c *conn) armExpiry(exp time.Time) {
	if c.authTimer != nil {
		c.authTimer.Stop()
	}
	c.authGen++
	c.authExpired = false
	gen := c.authGen
	c.authTimer = time.AfterFunc(time.Until(exp), func() { c.expire(gen) })
}

// expire runs on the expiry timer's goroutine.
func (c *conn) expire(gen uint64) {
	c.mu.Lock()
	if c.closing || gen != c.authGen {
		c.mu.Unlock()
		return
	}
	if !c.authExpired {
		c.authExpired = true
		c.authTimer = time.AfterFunc(c.srv.authGrace(), func() { c.expire(gen) })
		c.mu.Unlock()
		c.Queue(protocol.EncodeError("", protocol.Errorf(protocol.CodeTokenExpired, "your token expired; send an auth frame with a new one within %s, or the connection closes with 4001", c.srv.authGrace())))
		return
	}
	c.mu.Unlock()
	c.closeWith(protocol.CloseTokenExpired, "token expired")
}

// auth renews the connection's signed identity (SPEC §10 auth): the new
// token must be valid and for the same sub; its rooms claim applies to the
// next action. The reply is authed with the new exp.
func (c *conn) auth(env protocol.Envelope) error {
	var p protocol.Auth
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	v := c.srv.verifier()
	if v == nil {
		return protocol.Errorf(protocol.CodeUnauthorized, "tokens are not accepted: auth mode is off")
	}
	id, perr := v.Verify(p.Token)
	if perr != nil {
		return perr
	}
	if id.UserID != c.user.ID() {
		return protocol.Errorf(protocol.CodeForbidden, "the token is for another user; a connection keeps its user (reconnect to change it)")
	}
	c.user.SetGrants(id)
	c.mu.Lock()
	if !c.closing {
		c.armExpiry(id.Expires)
	}
	c.mu.Unlock()
	c.Queue(protocol.Encode(protocol.TypeAuthed, env.ID, protocol.Authed{Exp: id.Expires.Unix()}))
	return nil
}

// callerKey is the request context key of an HTTP caller's credentials.
type callerKey struct{}

// caller is who makes an HTTP API request (SPEC §10): an API key (owner
// everywhere) or a token's identity; neither when auth is off.
type caller struct {
	apiKey   bool
	id       *identity.Identity
	ownerKey string // a room's owner key (SPEC §11), checked per room
}

// authorize checks a state-changing request's credentials (SPEC §10):
// with auth on, Authorization: Bearer with an API key or a valid token is
// required (401 otherwise); with auth off, a presented one is refused as
// on the WebSocket. It returns r with the caller in its context.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	tok, via, found := identity.FromRequest(r)
	if via != "header" {
		found, tok = false, "" // the HTTP API takes the Authorization header only
	}
	v := s.verifier()
	var cl caller
	var perr *protocol.Error
	switch {
	case found && strings.HasPrefix(tok, ownerKeyPrefix):
		cl.ownerKey = tok // any mode: checked against the room it acts in
	case !found && s.authMode() != policy.AuthOff:
		perr = protocol.Errorf(protocol.CodeUnauthorized, "this endpoint needs Authorization: Bearer with an API key or a token")
	case !found:
	case v == nil:
		perr = protocol.Errorf(protocol.CodeUnauthorized, "tokens are not accepted: auth mode is off")
	case v.APIKey(tok):
		cl.apiKey = true
	default:
		cl.id, perr = v.Verify(tok)
	}
	if perr != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="roomchat"`)
		s.fail(w, http.StatusUnauthorized, perr)
		return r, false
	}
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, cl)), true
}

// callerOf is the caller authorize put in r's context.
func callerOf(r *http.Request) caller {
	cl, _ := r.Context().Value(callerKey{}).(caller)
	return cl
}

// mayPost answers whether the HTTP request r may post to roomID under p
// (SPEC §9 post and join): it writes the refusal itself, 403. The room's
// owner key (SPEC §11) is checked against the room: the owner's.
func (s *Server) mayPost(w http.ResponseWriter, r *http.Request, roomID string, p *policy.Policy) bool {
	cl := callerOf(r)
	role := s.actor(r, roomID).Role
	perr := p.MayPost(role, true)
	if perr == nil && cl.id != nil && !cl.apiKey {
		perr = p.MayJoin(cl.id.Role(roomID)) // a private room's token rule holds for posts too
	}
	if perr != nil {
		s.fail(w, http.StatusForbidden, perr)
		return false
	}
	return true
}

// mayRead guards the reads of a private room (join = "token", SPEC §9):
// they need an API key, or a token that grants the room; other rooms are
// read by anyone, as in §5. It writes the refusal itself.
func (s *Server) mayRead(w http.ResponseWriter, r *http.Request, roomID string, p *policy.Policy) bool {
	if p.Join != policy.JoinToken {
		return true
	}
	if _, found := r.Header["Authorization"]; !found {
		s.fail(w, http.StatusUnauthorized, protocol.Errorf(protocol.CodeUnauthorized, "the rooms of %s are private: this read needs Authorization: Bearer with an API key or a token that grants the room", p.Where()))
		return false
	}
	r, ok := s.authorize(w, r)
	if !ok {
		return false
	}
	cl := callerOf(r)
	if cl.apiKey {
		return true
	}
	var role policy.Role
	if cl.id != nil {
		role = cl.id.Role(roomID)
	}
	if perr := p.MayJoin(role); perr != nil {
		s.fail(w, http.StatusForbidden, perr)
		return false
	}
	return true
}
