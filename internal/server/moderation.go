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
	mux.HandleFunc("POST /api/rooms/{id}/messages/{seq}/redact", s.post(s.handleRedact))
	mux.HandleFunc("POST /api/rooms/{id}/kick", s.post(s.handleKick))
	for _, kind := range []store.Kind{store.Ban, store.Mute} {
		mux.HandleFunc("PUT /api/rooms/{id}/"+string(kind)+"s/{user}", s.post(s.handleRestrict(kind)))
		mux.HandleFunc("DELETE /api/rooms/{id}/"+string(kind)+"s/{user}", s.post(s.handleLift(kind)))
		mux.HandleFunc("GET /api/rooms/{id}/"+string(kind)+"s", s.post(s.handleRestrictions(kind)))
	}
	mux.HandleFunc("PATCH /api/rooms/{id}", s.post(s.handleConfigure))
	mux.HandleFunc("DELETE /api/rooms/{id}/messages", s.post(s.handleClear))
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

func (s *Server) handleRedact(w http.ResponseWriter, r *http.Request) {
	id, _, ok := s.roomID(w, r)
	if !ok {
		return
	}
	seq, err := strconv.ParseInt(r.PathValue("seq"), 10, 64)
	if err != nil || seq < 1 {
		s.fail(w, http.StatusBadRequest, protocol.FieldErrorf(protocol.CodeBadPayload, "seq", "seq must be a whole number ≥ 1"))
		return
	}
	b, ok := s.modBody(w, r)
	if !ok {
		return
	}
	if perr := s.checkModeration(id, "", b.Reason, false); perr != nil {
		s.fail(w, http.StatusBadRequest, perr)
		return
	}
	m, rerr := s.reg.Redact(r.Context(), s.actor(r, id), id, seq, b.Reason)
	s.answer(w, http.StatusCreated, m, rerr)
}

func (s *Server) handleKick(w http.ResponseWriter, r *http.Request) {
	id, _, ok := s.roomID(w, r)
	if !ok {
		return
	}
	b, ok := s.modBody(w, r)
	if !ok {
		return
	}
	if perr := s.checkModeration(id, b.UserID, b.Reason, true); perr != nil {
		s.fail(w, http.StatusBadRequest, perr)
		return
	}
	err := s.reg.Kick(s.actor(r, id), id, b.UserID, b.Reason)
	s.answer(w, http.StatusOK, protocol.Done{Action: protocol.TypeKick, RoomID: id, UserID: b.UserID}, err)
}

func (s *Server) handleRestrict(kind store.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _, ok := s.roomID(w, r)
		if !ok {
			return
		}
		b, ok := s.modBody(w, r)
		if !ok {
			return
		}
		user := r.PathValue("user")
		if perr := s.checkModeration(id, user, b.Reason, true); perr != nil {
			s.fail(w, http.StatusBadRequest, perr)
			return
		}
		end, perr := until(b.For)
		if perr != nil {
			s.fail(w, http.StatusBadRequest, perr)
			return
		}
		a := s.actor(r, id)
		var err error
		if kind == store.Ban {
			err = s.reg.Ban(r.Context(), a, id, user, end, b.Reason)
		} else {
			err = s.reg.Mute(r.Context(), a, id, user, end, b.Reason)
		}
		s.answer(w, http.StatusOK, protocol.Done{Action: string(kind), RoomID: id, UserID: user, Until: end}, err)
	}
}

func (s *Server) handleLift(kind store.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _, ok := s.roomID(w, r)
		if !ok {
			return
		}
		user := r.PathValue("user")
		if perr := s.checkModeration(id, user, "", true); perr != nil {
			s.fail(w, http.StatusBadRequest, perr)
			return
		}
		err := s.reg.Lift(r.Context(), s.actor(r, id), kind, id, user)
		s.answer(w, http.StatusOK, protocol.Done{Action: "un" + string(kind), RoomID: id, UserID: user}, err)
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

func (s *Server) handleRestrictions(kind store.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _, ok := s.roomID(w, r)
		if !ok {
			return
		}
		rs, err := s.reg.Restrictions(r.Context(), s.actor(r, id), kind, id)
		out := make([]RestrictionInfo, 0, len(rs))
		for _, x := range rs {
			out = append(out, RestrictionInfo{UserID: x.UserID, Until: x.Until, By: x.By, Reason: x.Reason, At: x.At})
		}
		if kind == store.Ban {
			s.answer(w, http.StatusOK, BanList{RoomID: id, Bans: out}, err)
		} else {
			s.answer(w, http.StatusOK, MuteList{RoomID: id, Mutes: out}, err)
		}
	}
}

func (s *Server) handleConfigure(w http.ResponseWriter, r *http.Request) {
	id, _, ok := s.roomID(w, r)
	if !ok {
		return
	}
	b, ok := s.modBody(w, r)
	if !ok {
		return
	}
	err := s.reg.Configure(r.Context(), s.actor(r, id), id, b.Post)
	s.answer(w, http.StatusOK, protocol.Done{Action: protocol.TypeConfigure, RoomID: id, Post: b.Post}, err)
}

func (s *Server) handleClear(w http.ResponseWriter, r *http.Request) {
	id, _, ok := s.roomID(w, r)
	if !ok {
		return
	}
	err := s.reg.Clear(r.Context(), s.actor(r, id), id)
	s.answer(w, http.StatusOK, protocol.Done{Action: "clear", RoomID: id}, err)
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
