package server

import (
	"cmp"
	"context"
	"errors"
	"io"
	"io/fs"
	"math"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/store"
)

// contentSecurityPolicy lets pages load only their own scripts, styles and
// WebSocket ('self' covers ws: and wss: of the same host), never inline code.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

const (
	defaultPage = 50
	maxPage     = 500
)

func (s *Server) routes() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.handleWS)
	mux.HandleFunc("POST /api/rooms", s.post(s.handleCreateRoom))
	mux.HandleFunc("GET /api/rooms/{id}", s.handleGetRoom)
	mux.HandleFunc("GET /api/rooms/{id}/messages", s.handleListMessages)
	mux.HandleFunc("POST /api/rooms/{id}/messages", s.post(s.handlePostMessage))
	mux.HandleFunc("POST /api/rooms/{id}/events", s.post(s.handlePostEvent))
	s.moderationRoutes(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	if !s.cfg.SeparateMetrics {
		mux.Handle("GET /metrics", s.MetricsHandler())
	}
	mux.HandleFunc("GET /{$}", s.page("index.html"))
	mux.HandleFunc("GET /r/{id}", s.page("room.html"))
	if s.cfg.Web != nil {
		if static, err := fs.Sub(s.cfg.Web, "static"); err == nil {
			mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
		}
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, protocol.Errorf(protocol.CodeNotFound, "no such path: %s %s", r.Method, r.URL.Path))
	})
	s.mux = mux
}

// page serves one HTML file of the web client with the CSP header.
func (s *Server) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if id := r.PathValue("id"); id != "" {
			if err := s.limits.CheckRoomID("roomID", id); err != nil {
				writeError(w, http.StatusNotFound, protocol.Errorf(protocol.CodeNotFound, "%s", err.Message))
				return
			}
			if _, perr := s.reg.PolicyFor(id); perr != nil {
				writeError(w, http.StatusNotFound, perr)
				return
			}
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if s.cfg.Web == nil {
			h.Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, placeholderPage)
			return
		}
		b, err := fs.ReadFile(s.cfg.Web, name)
		if err != nil {
			s.log.Error("web client file missing", "file", name, "err", err)
			writeError(w, http.StatusNotFound, protocol.Errorf(protocol.CodeNotFound, "the web client is not available"))
			return
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		w.Write(b)
	}
}

const placeholderPage = `<!doctype html><meta charset="utf-8"><title>roomchat</title>
<h1>roomchat</h1><p>The server is running. Connect a WebSocket client to <code>/ws</code>.</p>`

// handleReady answers /readyz from the store's Ready, waiting at most 2 s.
// Ready does no I/O while the store's last write is recent and otherwise
// makes one probe that concurrent callers share (sqlite.Store.Ready), so
// this public endpoint costs the store no write per request. Changes of
// the answer are logged, not each failing request.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.shutting.Load() {
		writeError(w, http.StatusServiceUnavailable, errShuttingDown)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	err := s.store.Ready(ctx)
	if r.Context().Err() != nil {
		return // the client has gone: nothing learned, nobody to answer
	}
	if was := s.notReady.Swap(err != nil); was != (err != nil) {
		if err != nil {
			s.log.Warn("not ready", "err", err)
		} else {
			s.log.Info("ready again")
		}
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, protocol.ErrStoreUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// handleCreateRoom answers a new room's ID and link; a JSON body
// {"namespace": "ns"} makes it "ns:<nanoid>" (SPEC §9). Without a JSON
// body (v1 clients send none) the room has no namespace.
func (s *Server) handleCreateRoom(w http.ResponseWriter, r *http.Request) {
	var p protocol.Create
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" && !s.readBody(w, r, &p) {
		return
	}
	id, perr := s.newRoomID(p.Namespace)
	if perr != nil {
		s.fail(w, statusOf(perr), perr)
		return
	}
	writeJSON(w, http.StatusCreated, protocol.Created{RoomID: id, URL: s.baseURL(r) + "/r/" + id, OwnerKey: s.reg.OwnerKey(id)})
}

// newRoomID is a new room's ID in namespace ns ("" for none), which the
// policy in force must name.
func (s *Server) newRoomID(ns string) (string, *protocol.Error) {
	id := room.NewRoomID()
	if ns == "" {
		return id, nil
	}
	if !protocol.CheckNamespace(ns) {
		return "", protocol.FieldErrorf(protocol.CodeBadPayload, "namespace", "namespace must be %d to %d characters from A-Z, a-z, 0-9, _ and -", protocol.MinNamespace, protocol.MaxNamespace)
	}
	id = ns + ":" + id
	if _, perr := s.reg.PolicyFor(id); perr != nil {
		return "", perr
	}
	return id, nil
}

// roomID reads and checks the {id} path segment, and finds the policy
// that governs the room: unknown_namespace is 404.
func (s *Server) roomID(w http.ResponseWriter, r *http.Request) (string, *policy.Policy, bool) {
	id := r.PathValue("id")
	if err := s.limits.CheckRoomID("roomID", id); err != nil {
		s.fail(w, http.StatusBadRequest, err)
		return "", nil, false
	}
	p, perr := s.reg.PolicyFor(id)
	if perr != nil {
		s.fail(w, http.StatusNotFound, perr)
		return "", nil, false
	}
	return id, p, true
}

// statusOf is the HTTP status of a policy or access refusal.
func statusOf(e *protocol.Error) int {
	switch e.Code {
	case protocol.CodeUnknownNamespace, protocol.CodeNotFound:
		return http.StatusNotFound
	case protocol.CodeForbidden, protocol.CodeHistoryDisabled:
		return http.StatusForbidden
	case protocol.CodeUnauthorized:
		return http.StatusUnauthorized
	}
	return http.StatusBadRequest
}

// RoomInfo is the body of GET /api/rooms/{id}.
type RoomInfo struct {
	RoomID  string          `json:"roomID"`
	Count   int             `json:"count"`
	Members []protocol.User `json:"members"`
	LastSeq int64           `json:"lastSeq"`
}

func (s *Server) handleGetRoom(w http.ResponseWriter, r *http.Request) {
	id, p, ok := s.roomID(w, r)
	if !ok || !s.mayRead(w, r, id, p) {
		return
	}
	info, err := s.store.Room(r.Context(), id)
	if err != nil {
		s.storeFailed(w, err)
		return
	}
	members, count, err := s.reg.Members(r.Context(), id)
	if err != nil {
		s.storeFailed(w, err)
		return
	}
	if !p.Presence {
		members = []protocol.User{} // presence = false: the count only
	}
	writeJSON(w, http.StatusOK, RoomInfo{RoomID: id, Count: count, Members: members, LastSeq: info.LastSeq})
}

// MessagePage is the body of GET /api/rooms/{id}/messages.
type MessagePage struct {
	RoomID   string             `json:"roomID"`
	Messages []protocol.Message `json:"messages"`
	LastSeq  int64              `json:"lastSeq"`
	// More is true when stored messages after the page's last one were
	// left out of it (SPEC §5): the next page starts after its last seq.
	More bool `json:"more"`
}

// retryBusy is the Retry-After of a page refused because MaxPageResponses
// are being answered: pages take a fraction of a second to a few seconds.
const retryBusy = time.Second

func (s *Server) handleListMessages(w http.ResponseWriter, r *http.Request) {
	id, p, ok := s.roomID(w, r)
	if !ok || !s.mayRead(w, r, id, p) {
		return
	}
	if perr := p.MayReadHistory(); perr != nil {
		s.fail(w, statusOf(perr), perr)
		return
	}
	q := store.Query{Limit: defaultPage}
	var perr *protocol.Error
	if q.Before, perr = queryInt(r, "before", 0); perr != nil {
		s.fail(w, http.StatusBadRequest, perr)
		return
	}
	if q.After, perr = queryInt(r, "after", 0); perr != nil {
		s.fail(w, http.StatusBadRequest, perr)
		return
	}
	limit, perr := queryInt(r, "limit", defaultPage)
	if perr != nil || limit < 1 || limit > maxPage {
		s.fail(w, http.StatusBadRequest, protocol.FieldErrorf(protocol.CodeBadPayload, "limit", "limit must be a whole number from 1 to %d", maxPage))
		return
	}
	q.Limit = int(limit)
	// A page holds at most MaxPageBytes of messages, like a history
	// reply (SPEC §5): 500 messages of 4000 control characters would
	// encode to 12 MB. The store stops reading once the texts are past
	// the budget; FitPage cuts the encoded page to it.
	q.MaxBytes = s.limits.MaxPageBytes
	// Without after, a page ends at the newest message (or before "before");
	// with after alone, it starts just after it. after=0 is "after seq 0",
	// the oldest page, not "no after": a script pages a whole room forward
	// from after=0 (docs/scripting.md).
	q.Newest = r.URL.Query().Get("after") == "" || q.Before != 0
	select {
	case s.pages <- struct{}{}:
		defer func() { <-s.pages }()
	default:
		s.refuse(w, http.StatusServiceUnavailable, retryBusy, protocol.Errorf(protocol.CodeServerBusy, "the server is answering as many pages of messages as it may; try again in a second"))
		return
	}
	info, msgs, err := s.store.Page(r.Context(), id, q)
	if err != nil {
		s.storeFailed(w, err)
		return
	}
	fit := s.limits
	fit.MaxPage = q.Limit // the HTTP page's own count bound (up to 500)
	msgs = fit.FitPage(msgs, q.Newest)
	if msgs == nil {
		msgs = []protocol.Message{}
	}
	s.writePage(w, http.StatusOK, MessagePage{RoomID: id, Messages: msgs, LastSeq: info.LastSeq, More: store.More(info, msgs)})
}

func queryInt(r *http.Request, name string, def int64) (int64, *protocol.Error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, protocol.FieldErrorf(protocol.CodeBadPayload, name, "%s must be a whole number ≥ 0", name)
	}
	return n, nil
}

// PostMessage is the body of POST /api/rooms/{id}/messages.
type PostMessage struct {
	Name    string `json:"name"`
	Message string `json:"message"`
}

func (s *Server) handlePostMessage(w http.ResponseWriter, r *http.Request) {
	id, pol, ok := s.roomID(w, r)
	if !ok || !s.mayPost(w, r, id, pol) {
		return
	}
	var p PostMessage
	if !s.readBody(w, r, &p) {
		return
	}
	name := "bot"
	if p.Name != "" {
		n, perr := s.limits.CleanName("name", p.Name)
		if perr != nil {
			s.fail(w, http.StatusBadRequest, perr)
			return
		}
		name = n
	}
	if perr := s.limits.CheckMessage("message", p.Message); perr != nil {
		s.fail(w, http.StatusBadRequest, perr)
		return
	}
	var msg protocol.Message
	var err error
	// The caller's role holds it to the room's run-time post rule (SPEC
	// §11), which the store checks as it stores the message: an API key
	// or the room's owner key is the owner; a token, its role; anyone
	// else, a member.
	role := s.actor(r, id).Role
	if cl := callerOf(r); cl.id != nil {
		// A token's caller posts as itself; its name claim wins.
		msg, err = s.reg.PostAs(r.Context(), id, protocol.User{UserID: cl.id.UserID, Name: cmp.Or(cl.id.Name, name)}, p.Message, role)
	} else {
		msg, err = s.reg.Post(r.Context(), id, name, p.Message, role)
	}
	if pe, ok := errors.AsType[*protocol.Error](err); ok && pe.Code != protocol.CodeStoreUnavailable {
		s.fail(w, statusOf(pe), pe)
		return
	}
	if err != nil {
		s.storeFailed(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, msg)
}

// PostEvent is the body of POST /api/rooms/{id}/events.
type PostEvent struct {
	Name string         `json:"name"`
	Data jsontext.Value `json:"data,omitempty"`
}

// EventPosted is the 202 answer to POST /api/rooms/{id}/events.
type EventPosted struct {
	RoomID string `json:"roomID"`
	Name   string `json:"name"`
	// Delivered is how many connections on this server it was queued to.
	Delivered int `json:"delivered"`
}

func (s *Server) handlePostEvent(w http.ResponseWriter, r *http.Request) {
	id, pol, ok := s.roomID(w, r)
	if !ok {
		return
	}
	if perr := pol.MayEvent(); perr != nil {
		s.fail(w, statusOf(perr), perr)
		return
	}
	if !s.mayPost(w, r, id, pol) {
		return
	}
	// The room's run-time post rule (SPEC §11 configure) holds for
	// events as for messages, by the caller's role (see handlePostMessage).
	if err := s.reg.MayPostEvent(r.Context(), id, pol, s.actor(r, id).Role); err != nil {
		if pe, ok := errors.AsType[*protocol.Error](err); ok && pe.Code != protocol.CodeStoreUnavailable {
			s.fail(w, statusOf(pe), pe)
		} else {
			s.storeFailed(w, err)
		}
		return
	}
	var p PostEvent
	if !s.readBody(w, r, &p) {
		return
	}
	if perr := s.limits.CheckEventName("name", p.Name); perr != nil {
		s.fail(w, http.StatusBadRequest, perr)
		return
	}
	if perr := s.limits.CheckEventData("data", p.Data); perr != nil {
		s.fail(w, http.StatusBadRequest, perr)
		return
	}
	n := s.reg.PostEvent(id, p.Name, p.Data)
	writeJSON(w, http.StatusAccepted, EventPosted{RoomID: id, Name: p.Name, Delivered: n})
}

// post wraps the handler of a state-changing endpoint (SPEC §5): a
// browser request from an origin that is not allowed gets 403, so that no
// web page can make its visitors' browsers post here; during shutdown,
// 503.
func (s *Server) post(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.originAllowed(r) {
			s.fail(w, http.StatusForbidden, protocol.Errorf(protocol.CodeForbiddenOrigin, "requests from origin %q are not allowed", truncate(r.Header.Get("Origin"), 100)))
			return
		}
		if s.shutting.Load() {
			s.fail(w, http.StatusServiceUnavailable, errShuttingDown)
			return
		}
		r, ok := s.authorize(w, r)
		if !ok {
			return
		}
		h(w, r)
	}
}

// originAllowed applies the WebSocket upgrade's Origin rule to HTTP: no
// Origin (scripts, curl) or the server's own host is allowed, and so is an
// origin matching one of Config.Origins — a host pattern, or a full origin
// when the pattern has a scheme — as coder/websocket's Accept does.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range s.cfg.Origins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// readBody reads and decodes a JSON request body into v, answering the
// request itself when it cannot: 429 past the per-address rate, 415 for
// a body that is not application/json, 413 over MaxFrame, 400 for bad
// JSON.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ok, wait := s.postLimit.allow(addrKey(s.clientAddr(r)), time.Now()); !ok {
		s.refuse(w, http.StatusTooManyRequests, wait, protocol.Errorf(protocol.CodeRateLimited, "too many requests; the limit is %g per second", s.limits.Rate))
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		s.fail(w, http.StatusUnsupportedMediaType, protocol.Errorf(protocol.CodeUnsupportedType, "the body must be JSON, sent with Content-Type: application/json"))
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.limits.MaxFrame))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			s.fail(w, http.StatusRequestEntityTooLarge, protocol.Errorf(protocol.CodeTooLarge, "the body exceeds %d bytes", s.limits.MaxFrame))
			return false
		}
		s.fail(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeBadJSON, "could not read the body"))
		return false
	}
	if perr := decodeBody(body, v); perr != nil {
		s.fail(w, http.StatusBadRequest, perr)
		return false
	}
	return true
}

// decodeBody decodes a JSON request body with the frame rules: unique,
// case-sensitive keys, and an object at the top.
func decodeBody(body []byte, v any) *protocol.Error {
	env := protocol.Envelope{Type: "body", Payload: body}
	if len(body) == 0 {
		return protocol.Errorf(protocol.CodeBadJSON, "the body must be a JSON object")
	}
	if err := json.Unmarshal(body, new(map[string]any)); err != nil {
		if _, ok := errors.AsType[*json.SemanticError](err); ok {
			return protocol.Errorf(protocol.CodeBadJSON, "the body must be a JSON object")
		}
		return protocol.Errorf(protocol.CodeBadJSON, "the body is not valid JSON (or has a duplicated key)")
	}
	return protocol.DecodePayload(env, v)
}

func (s *Server) storeFailed(w http.ResponseWriter, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		s.log.Error("store", "err", err)
		pe = protocol.ErrStoreUnavailable
	}
	s.fail(w, http.StatusServiceUnavailable, pe)
}

// fail writes an HTTP error and counts it.
func (s *Server) fail(w http.ResponseWriter, status int, e *protocol.Error) {
	s.metrics.errors.WithLabelValues(e.Code).Inc()
	writeError(w, status, e)
}

func writeError(w http.ResponseWriter, status int, e *protocol.Error) {
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.MarshalWrite(w, v)
	io.WriteString(w, "\n")
}

// refuse answers a request that a limit turns away: status, a
// Retry-After header of wait in whole seconds (at least 1), and e.
func (s *Server) refuse(w http.ResponseWriter, status int, wait time.Duration, e *protocol.Error) {
	w.Header().Set("Retry-After", strconv.FormatInt(max(1, int64(math.Ceil(wait.Seconds()))), 10))
	s.fail(w, status, e)
}
