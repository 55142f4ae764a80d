package server

import (
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/store"
)

// maxReason bounds a moderation reason, in characters.
const maxReason = 200

// ownerKeyPrefix starts a room's owner key (room.Registry.OwnerKey), which
// an HTTP caller may present as its Bearer credential (SPEC §11).
const ownerKeyPrefix = "k1."

// checkModeration checks the fields moderation frames and requests share.
func (s *Server) checkModeration(roomID, userID, reason string, needUser bool) *protocol.Error {
	if err := s.limits.CheckRoomID("roomID", roomID); err != nil {
		return err
	}
	if needUser {
		if n := utf8.RuneCountInString(userID); n == 0 || n > 64 || !utf8.ValidString(userID) || strings.ContainsFunc(userID, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return protocol.FieldErrorf(protocol.CodeBadPayload, "userID", "userID must be 1 to 64 characters, no control characters")
		}
	}
	if n := utf8.RuneCountInString(reason); n > maxReason || !utf8.ValidString(reason) {
		return protocol.FieldErrorf(protocol.CodeTooLong, "reason", "reason must be valid UTF-8, at most %d characters", maxReason)
	}
	return nil
}

// until turns a for duration ("10m"; "" is until lifted) into an end.
func until(forText string) (time.Time, *protocol.Error) {
	if forText == "" {
		return time.Time{}, nil
	}
	d, err := time.ParseDuration(forText)
	if err != nil || d <= 0 || d > 10*365*24*time.Hour {
		return time.Time{}, protocol.FieldErrorf(protocol.CodeBadPayload, "for", `"for" must be a duration such as "10m", "1h" or "720h" (omit it for until lifted)`)
	}
	return time.Now().Add(d).UTC().Truncate(time.Millisecond), nil
}

// moderate handles the moderation frames (SPEC §11): the actor is this
// connection's user with its role in the room; the reply is done.
func (c *conn) moderate(env protocol.Envelope) error {
	switch env.Type {
	case protocol.TypeRedact:
		return c.redact(env)
	case protocol.TypeConfigure:
		return c.configure(env)
	}
	return c.moderateUser(env)
}

// redact is the redact frame: done carries the redaction's seq.
func (c *conn) redact(env protocol.Envelope) error {
	reg := c.srv.reg
	var p protocol.Redact
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	if err := c.srv.checkModeration(p.RoomID, "", p.Reason, false); err != nil {
		return err
	}
	if p.Seq < 1 {
		return protocol.FieldErrorf(protocol.CodeBadPayload, "seq", `"seq" must be the seq of a message, ≥ 1`)
	}
	a, err := reg.ActorIn(c.user, p.RoomID)
	if err != nil {
		return err
	}
	ctx, done := c.readContext()
	defer done()
	m, err := reg.Redact(ctx, a, p.RoomID, p.Seq, p.Reason)
	if err != nil {
		return err
	}
	c.Queue(protocol.Encode(protocol.TypeDone, env.ID, protocol.Done{Action: env.Type, RoomID: p.RoomID, Seq: m.Seq}))
	return nil
}

// configure is the configure frame: the room's post rule at run time.
func (c *conn) configure(env protocol.Envelope) error {
	reg := c.srv.reg
	var p protocol.Configure
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	if err := c.srv.checkModeration(p.RoomID, "", "", false); err != nil {
		return err
	}
	a, err := reg.ActorIn(c.user, p.RoomID)
	if err != nil {
		return err
	}
	ctx, done := c.readContext()
	defer done()
	if err := reg.Configure(ctx, a, p.RoomID, p.Post); err != nil {
		return err
	}
	c.Queue(protocol.Encode(protocol.TypeDone, env.ID, protocol.Done{Action: env.Type, RoomID: p.RoomID, Post: p.Post}))
	return nil
}

// moderateUser is kick, ban, unban, mute and unmute: actions on a user.
func (c *conn) moderateUser(env protocol.Envelope) error {
	reg := c.srv.reg
	var p protocol.Moderate
	if err := protocol.DecodePayload(env, &p); err != nil {
		return err
	}
	if err := c.srv.checkModeration(p.RoomID, p.UserID, p.Reason, true); err != nil {
		return err
	}
	end, perr := until(p.For)
	if perr != nil {
		return perr
	}
	a, err := reg.ActorIn(c.user, p.RoomID)
	if err != nil {
		return err
	}
	ctx, done := c.readContext()
	defer done()
	switch env.Type {
	case protocol.TypeKick:
		err = reg.Kick(a, p.RoomID, p.UserID, p.Reason)
	case protocol.TypeBan:
		err = reg.Ban(ctx, a, p.RoomID, p.UserID, end, p.Reason)
	case protocol.TypeMute:
		err = reg.Mute(ctx, a, p.RoomID, p.UserID, end, p.Reason)
	case protocol.TypeUnban:
		err = reg.Lift(ctx, a, store.Ban, p.RoomID, p.UserID)
	case protocol.TypeUnmute:
		err = reg.Lift(ctx, a, store.Mute, p.RoomID, p.UserID)
	}
	if err != nil {
		return err
	}
	c.Queue(protocol.Encode(protocol.TypeDone, env.ID, protocol.Done{Action: env.Type, RoomID: p.RoomID, UserID: p.UserID, Until: end}))
	return nil
}

// actor is the HTTP caller acting in roomID (SPEC §11): an API key or the
// room's owner key is the owner; a token is its sub with its role;
// anyone else is a member (and may do nothing).
func (s *Server) actor(r *http.Request, roomID string) room.Actor {
	cl := callerOf(r)
	switch {
	case cl.apiKey:
		return room.Actor{User: protocol.User{Name: "api"}, Role: policy.RoleOwner}
	case cl.ownerKey != "" && s.reg.IsOwnerKey(roomID, cl.ownerKey):
		return room.Actor{User: protocol.User{Name: "owner"}, Role: policy.RoleOwner}
	case cl.id != nil:
		return room.Actor{User: protocol.User{UserID: cl.id.UserID, Name: cl.id.Name}, Role: max(policy.RoleMember, cl.id.Role(roomID))}
	}
	return room.Actor{Role: policy.RoleMember}
}

// moderationRoutes registers §11's HTTP endpoints.
func (s *Server) moderationRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/rooms/{id}/messages/{seq}/redact", s.post(s.modHandler(modPrelude{seq: true, body: true, check: true}, s.handleRedact)))
	mux.HandleFunc("POST /api/rooms/{id}/kick", s.post(s.modHandler(modPrelude{body: true, user: "body", check: true}, s.handleKick)))
	for _, kind := range []store.Kind{store.Ban, store.Mute} {
		mux.HandleFunc("PUT /api/rooms/{id}/"+string(kind)+"s/{user}", s.post(s.modHandler(modPrelude{body: true, user: "path", check: true, until: true}, s.handleRestrict(kind))))
		mux.HandleFunc("DELETE /api/rooms/{id}/"+string(kind)+"s/{user}", s.post(s.modHandler(modPrelude{user: "path", check: true}, s.handleLift(kind))))
		mux.HandleFunc("GET /api/rooms/{id}/"+string(kind)+"s", s.post(s.modHandler(modPrelude{}, s.handleRestrictions(kind))))
	}
	mux.HandleFunc("PATCH /api/rooms/{id}", s.post(s.modHandler(modPrelude{body: true}, s.handleConfigure)))
	mux.HandleFunc("DELETE /api/rooms/{id}/messages", s.post(s.modHandler(modPrelude{}, s.handleClear)))
	mux.HandleFunc("POST /api/users/{id}/disconnect", s.post(s.handleDisconnect))
}

// Reason is the optional body of redact, kick, ban, mute and disconnect.
type Reason struct {
	Reason string `json:"reason,omitempty"`
	For    string `json:"for,omitempty"`
	UserID string `json:"userID,omitempty"`
	Post   string `json:"post,omitempty"`
}

// modBody reads an optional JSON body: none is the zero Reason.
func (s *Server) modBody(w http.ResponseWriter, r *http.Request) (Reason, bool) {
	var b Reason
	if r.ContentLength == 0 {
		return b, true
	}
	return b, s.readBody(w, r, &b)
}

// answer writes a moderation outcome: err as a JSON error with its
// status, or v with ok.
func (s *Server) answer(w http.ResponseWriter, ok int, v any, err error) {
	if err == nil {
		writeJSON(w, ok, v)
		return
	}
	if pe, isPE := err.(*protocol.Error); isPE && pe.Code != protocol.CodeStoreUnavailable && pe.Code != protocol.CodeInternal {
		status := statusOf(pe)
		if pe.Code == protocol.CodeNotInRoom {
			status = http.StatusNotFound
		}
		s.fail(w, status, pe)
		return
	}
	s.storeFailed(w, err)
}

// modPrelude says which of the shared steps a moderation endpoint of a
// room takes before it acts (modHandler), in this order: the room ID
// from the path (always); seq, the path's {seq} (redact); body, the
// optional JSON body (Reason); user, where the target userID is ("path":
// the path's {user}; "body": the body's userID; "": none); check, the
// shared field checks (checkModeration, with a user when there is
// one); until, the body's for as an end. Each step writes its own
// refusal: 400 for a bad field, as readBody says for the body.
type modPrelude struct {
	seq   bool
	body  bool
	user  string
	check bool
	until bool
}

// modCall is a moderation request that passed its prelude: the room, the
// message seq, the body, the target user and for's end, as the prelude
// read them, and the HTTP actor (Server.actor).
type modCall struct {
	roomID string
	seq    int64
	body   Reason
	user   string
	end    time.Time
	actor  room.Actor
}

// modHandler runs pre's steps, then act with what they read.
func (s *Server) modHandler(pre modPrelude, act func(w http.ResponseWriter, r *http.Request, c modCall)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var c modCall
		var ok bool
		if c.roomID, _, ok = s.roomID(w, r); !ok {
			return
		}
		if pre.seq {
			seq, err := strconv.ParseInt(r.PathValue("seq"), 10, 64)
			if err != nil || seq < 1 {
				s.fail(w, http.StatusBadRequest, protocol.FieldErrorf(protocol.CodeBadPayload, "seq", "seq must be a whole number ≥ 1"))
				return
			}
			c.seq = seq
		}
		if pre.body {
			if c.body, ok = s.modBody(w, r); !ok {
				return
			}
		}
		switch pre.user {
		case "path":
			c.user = r.PathValue("user")
		case "body":
			c.user = c.body.UserID
		}
		if pre.check {
			if perr := s.checkModeration(c.roomID, c.user, c.body.Reason, pre.user != ""); perr != nil {
				s.fail(w, http.StatusBadRequest, perr)
				return
			}
		}
		if pre.until {
			end, perr := until(c.body.For)
			if perr != nil {
				s.fail(w, http.StatusBadRequest, perr)
				return
			}
			c.end = end
		}
		c.actor = s.actor(r, c.roomID)
		act(w, r, c)
	}
}

func (s *Server) handleRedact(w http.ResponseWriter, r *http.Request, c modCall) {
	m, err := s.reg.Redact(r.Context(), c.actor, c.roomID, c.seq, c.body.Reason)
	s.answer(w, http.StatusCreated, m, err)
}

func (s *Server) handleKick(w http.ResponseWriter, r *http.Request, c modCall) {
	err := s.reg.Kick(c.actor, c.roomID, c.user, c.body.Reason)
	s.answer(w, http.StatusOK, protocol.Done{Action: protocol.TypeKick, RoomID: c.roomID, UserID: c.user}, err)
}

func (s *Server) handleRestrict(kind store.Kind) func(http.ResponseWriter, *http.Request, modCall) {
	return func(w http.ResponseWriter, r *http.Request, c modCall) {
		var err error
		if kind == store.Ban {
			err = s.reg.Ban(r.Context(), c.actor, c.roomID, c.user, c.end, c.body.Reason)
		} else {
			err = s.reg.Mute(r.Context(), c.actor, c.roomID, c.user, c.end, c.body.Reason)
		}
		s.answer(w, http.StatusOK, protocol.Done{Action: string(kind), RoomID: c.roomID, UserID: c.user, Until: c.end}, err)
	}
}

func (s *Server) handleLift(kind store.Kind) func(http.ResponseWriter, *http.Request, modCall) {
	return func(w http.ResponseWriter, r *http.Request, c modCall) {
		err := s.reg.Lift(r.Context(), c.actor, kind, c.roomID, c.user)
		s.answer(w, http.StatusOK, protocol.Done{Action: "un" + string(kind), RoomID: c.roomID, UserID: c.user}, err)
	}
}

// BanList and MuteList are the bodies of GET /api/rooms/{id}/bans and
// /mutes: the restrictions in force, by userID.
type (
	BanList struct {
		RoomID string            `json:"roomID"`
		Bans   []RestrictionInfo `json:"bans"`
	}
	MuteList struct {
		RoomID string            `json:"roomID"`
		Mutes  []RestrictionInfo `json:"mutes"`
	}
)

// RestrictionInfo is one entry of GET /api/rooms/{id}/bans or /mutes.
type RestrictionInfo struct {
	UserID string        `json:"userID"`
	Until  time.Time     `json:"until,omitzero,format:'2006-01-02T15:04:05.000Z07:00'"`
	By     protocol.User `json:"by"`
	Reason string        `json:"reason,omitempty"`
	At     time.Time     `json:"at,format:'2006-01-02T15:04:05.000Z07:00'"`
}

func (s *Server) handleRestrictions(kind store.Kind) func(http.ResponseWriter, *http.Request, modCall) {
	return func(w http.ResponseWriter, r *http.Request, c modCall) {
		rs, err := s.reg.Restrictions(r.Context(), c.actor, kind, c.roomID)
		out := make([]RestrictionInfo, 0, len(rs))
		for _, x := range rs {
			out = append(out, RestrictionInfo{UserID: x.UserID, Until: x.Until, By: x.By, Reason: x.Reason, At: x.At})
		}
		if kind == store.Ban {
			s.answer(w, http.StatusOK, BanList{RoomID: c.roomID, Bans: out}, err)
		} else {
			s.answer(w, http.StatusOK, MuteList{RoomID: c.roomID, Mutes: out}, err)
		}
	}
}

func (s *Server) handleConfigure(w http.ResponseWriter, r *http.Request, c modCall) {
	err := s.reg.Configure(r.Context(), c.actor, c.roomID, c.body.Post)
	s.answer(w, http.StatusOK, protocol.Done{Action: protocol.TypeConfigure, RoomID: c.roomID, Post: c.body.Post}, err)
}

func (s *Server) handleClear(w http.ResponseWriter, r *http.Request, c modCall) {
	err := s.reg.Clear(r.Context(), c.actor, c.roomID)
	s.answer(w, http.StatusOK, protocol.Done{Action: "clear", RoomID: c.roomID}, err)
}

// handleDisconnect closes every connection of a user on this node with
// 4003 (SPEC §11): an API key's action only.
func (s *Server) handleDisconnect(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("id")
	b, ok := s.modBody(w, r)
	if !ok {
		return
	}
	if perr := s.checkModeration("x", user, b.Reason, true); perr != nil {
		s.fail(w, http.StatusBadRequest, perr)
		return
	}
	if !callerOf(r).apiKey {
		s.fail(w, http.StatusForbidden, protocol.Errorf(protocol.CodeForbidden, "disconnecting a user needs an API key"))
		return
	}
	here, err := s.reg.DisconnectUser(r.Context(), user)
	if err != nil {
		s.storeFailed(w, err)
		return
	}
	if !here && !s.reg.Clustered() {
		s.fail(w, http.StatusNotFound, protocol.FieldErrorf(protocol.CodeNotFound, "userID", "user %s has no connection here", user))
		return
	}
	s.reg.LogAction(room.Actor{User: protocol.User{Name: "api"}, Role: policy.RoleOwner}, "disconnect", "", user, b.Reason)
	writeJSON(w, http.StatusOK, protocol.Done{Action: "disconnect", UserID: user})
}
