package server_test

// Namespaces and room policy (SPEC §9), over real WebSocket connections
// and the HTTP API, under a configuration file written to t.TempDir():
// every field against every action it governs. Without a file the v1
// tests elsewhere in this package keep every room as in §4–§8.

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/identity"
	"github.com/roomchat/roomchat/internal/identity/identitytest"
	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
)

// testAPIKey is the HTTP API key of the servers built by startAccess.
const testAPIKey = "test-api-key-0123456789abcdef"

// matrixConfig is the file of the policy matrix: one namespace per rule.
const matrixConfig = `
[auth]
mode = "optional"
algorithms = ["HS256"]
hmac_secret_env = "TEST_JWT_SECRET"
api_keys_env = "TEST_API_KEYS"

[namespace.open]

[namespace.news]
post = "moderators"

[namespace.bots]
post = "api"

[namespace.staff]
join = "token"

[namespace.eph]
history = { size = 0 }

[namespace.hidden]
presence = false

[namespace.quiet]
join_leave = false

[namespace.still]
typing = false
events = false

[namespace.small]
capacity = 2

[namespace.slow]
rate = 0.01
burst = 3
`

// access is a server under a configuration file, with what a test needs
// to sign tokens for it.
type access struct {
	*chattest.InProcess
	file string
}

// startAccess writes toml to a file, loads it over the built-in layer as
// roomchatd does, builds its verifier (HS256 with identitytest.Secret,
// the API key testAPIKey) and serves a server that decides by both; mods
// apply before the registry is built.
func startAccess(t *testing.T, toml string, mods ...func(*server.Config)) *access {
	t.Helper()
	file := filepath.Join(t.TempDir(), "roomchat.toml")
	if err := os.WriteFile(file, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	pc, err := policy.Load(file, policy.Builtin(protocol.DefaultLimits(), store.DefaultMaxMessages, 0))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TEST_JWT_SECRET": identitytest.Secret, "TEST_API_KEYS": testAPIKey}
	v, err := identity.New(context.Background(), pc.Auth, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	src := policy.NewSource(pc)
	all := append(mods, func(c *server.Config) {
		// The store keeps each namespace's history as the file says
		// (roomchatd wires the same: policy.Source.RoomRetention).
		c.Store = store.NewMemory(store.Retention{Room: src.RoomRetention})
		withRoom(c, room.Options{Policy: src})
		c.Verifier = func() *identity.Verifier { return v }
	})
	return &access{InProcess: chattest.StartInProcess(t, all...), file: file}
}

// token signs a token for sub with rooms (pattern → role; nil: none),
// valid for an hour.
func token(t *testing.T, sub string, rooms map[string]string) string {
	t.Helper()
	c := identitytest.Claims(sub)
	if rooms != nil {
		c["rooms"] = rooms
	}
	return identitytest.SignHS256(t, identitytest.Secret, c)
}

// dialToken connects with tok in the Authorization header and reads the
// welcome.
func dialToken(t *testing.T, base, tok string) *chattest.Client {
	t.Helper()
	c := chattest.DialNoWelcome(t, base, "", http.Header{"Authorization": {"Bearer " + tok}})
	chattest.Decode(t, c.Expect(t, protocol.TypeWelcome), &c.Welcome)
	return c
}

// call makes an HTTP request with an optional bearer credential and JSON
// body and returns the status and the decoded error body (zero unless
// the answer is an error).
func call(t *testing.T, method, u, bearer, body string) (int, protocol.Error, []byte) {
	t.Helper()
	code, b := chattest.Request(t, method, u, bearer, body)
	var e protocol.Error
	if code >= 400 {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s %s: %d with body %q: %v", method, u, code, b, err)
		}
	}
	return code, e, b
}

// awaitError reads c's events up to the next error, skipping the live
// msg, event and presence frames of its rooms, and returns it.
func awaitError(t *testing.T, c *chattest.Client) protocol.Error {
	t.Helper()
	var e protocol.Error
	chattest.Decode(t, c.Await(t, protocol.TypeError), &e)
	return e
}

// denied fails t unless e has code and a message naming every one of
// names (the namespace and the rule).
func denied(t *testing.T, what string, e protocol.Error, code string, names ...string) {
	t.Helper()
	if e.Code != code {
		t.Fatalf("%s: error %+v, want code %q", what, e, code)
	}
	for _, n := range names {
		if !strings.Contains(e.Message, n) {
			t.Fatalf("%s: message %q does not name %s", what, e.Message, n)
		}
	}
}

// wantStatus is call that fails t unless the answer has status (and, for
// an error, code).
func wantStatus(t *testing.T, status int, code, method, u, bearer, body string, names ...string) []byte {
	t.Helper()
	got, e, b := call(t, method, u, bearer, body)
	if got != status {
		t.Fatalf("%s %s (bearer %.12q): %d %s, want %d", method, u, bearer, got, b, status)
	}
	if code != "" {
		denied(t, method+" "+u, e, code, names...)
	}
	return b
}

// join = open | token: a token's rooms claim, exact or prefix, lets its
// holder in; anyone else is forbidden with the namespace and the rule
// named. An unknown namespace is unknown_namespace, and 404 over HTTP.
func TestPolicyJoin(t *testing.T) {
	s := startAccess(t, matrixConfig)
	chattest.Dial(t, s.URL, "").Join(t, "open:r")

	const rule = `join = "token"`
	refused := func(c *chattest.Client, roomID, what string) {
		t.Helper()
		c.Sendf(t, `{"type":"join","payload":{"roomID":%q}}`, roomID)
		denied(t, what, c.ExpectError(t, protocol.CodeForbidden), protocol.CodeForbidden, `namespace "staff"`, rule)
	}
	refused(chattest.Dial(t, s.URL, ""), "staff:r1", "anonymous")
	refused(dialToken(t, s.URL, token(t, "no-rooms", nil)), "staff:r1", "a token without rooms")
	refused(dialToken(t, s.URL, token(t, "other-room", map[string]string{"staff:r2": "owner"})), "staff:r1", "a token for another room")
	refused(dialToken(t, s.URL, token(t, "other-ns", map[string]string{"news:*": "owner"})), "staff:r1", "a token for another namespace")

	exact := dialToken(t, s.URL, token(t, "exact", map[string]string{"staff:r1": "member"}))
	if j := exact.Join(t, "staff:r1"); j.You.UserID != "exact" {
		t.Fatalf("joined as %+v, want userID exact", j.You)
	}
	refused(exact, "staff:r2", "an exact grant, another room")

	prefix := dialToken(t, s.URL, token(t, "prefix", map[string]string{"staff:r*": "member"}))
	prefix.Join(t, "staff:r1")
	prefix.Join(t, "staff:r99")
	refused(prefix, "staff:x", "a prefix grant that does not match")

	all := dialToken(t, s.URL, token(t, "all", map[string]string{"staff:*": "member"}))
	all.Join(t, "staff:anything")

	// An unknown namespace.
	c := chattest.Dial(t, s.URL, "")
	c.Send(t, `{"type":"join","payload":{"roomID":"nope:r"}}`)
	denied(t, "join nope:r", c.ExpectError(t, protocol.CodeUnknownNamespace), protocol.CodeUnknownNamespace, `"nope"`)
	for _, u := range []string{"/api/rooms/nope:r", "/api/rooms/nope:r/messages", "/r/nope:r"} {
		wantStatus(t, http.StatusNotFound, protocol.CodeUnknownNamespace, "GET", s.URL+u, "", "", `"nope"`)
	}
	for _, u := range []string{"/api/rooms/nope:r/messages", "/api/rooms/nope:r/events"} {
		wantStatus(t, http.StatusNotFound, protocol.CodeUnknownNamespace, "POST", s.URL+u, testAPIKey, `{"name":"x","message":"hi"}`, `"nope"`)
	}

	// Private rooms are read over HTTP with credentials only.
	wantStatus(t, http.StatusUnauthorized, protocol.CodeUnauthorized, "GET", s.URL+"/api/rooms/staff:r1/messages", "", "", `namespace "staff"`)
	wantStatus(t, http.StatusUnauthorized, protocol.CodeUnauthorized, "GET", s.URL+"/api/rooms/staff:r1", "", "")
	wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "GET", s.URL+"/api/rooms/staff:r1/messages", token(t, "nobody", nil), "", `namespace "staff"`, rule)
	wantStatus(t, http.StatusUnauthorized, protocol.CodeUnauthorized, "GET", s.URL+"/api/rooms/staff:r1/messages", "wrong-key-0123456789", "")
	wantStatus(t, http.StatusOK, "", "GET", s.URL+"/api/rooms/staff:r1/messages", testAPIKey, "")
	wantStatus(t, http.StatusOK, "", "GET", s.URL+"/api/rooms/staff:r1", token(t, "exact", map[string]string{"staff:r1": "member"}), "")
	// Open rooms are read by anyone, as in §5.
	wantStatus(t, http.StatusOK, "", "GET", s.URL+"/api/rooms/open:r/messages", "", "")
}

// post = members | moderators | api, for msg and event over WebSocket and
// for POST …/messages and …/events over HTTP.
func TestPolicyPost(t *testing.T) {
	s := startAccess(t, matrixConfig)
	member := map[string]string{"news:*": "member", "bots:*": "member", "open:*": "member"}
	moderator := map[string]string{"news:*": "moderator", "bots:*": "moderator", "open:*": "moderator"}

	// A listener in each room sees what was allowed, and only that.
	listen := func(roomID string) *chattest.Client {
		l := chattest.Dial(t, s.URL, "")
		l.Join(t, roomID)
		return l
	}
	newsL, botsL, openL := listen("news:r"), listen("bots:r"), listen("open:r")

	wsRefused := func(c *chattest.Client, roomID, what string, names ...string) {
		t.Helper()
		c.Sendf(t, `{"type":"msg","id":"m","payload":{"roomID":%q,"message":"hi"}}`, roomID)
		denied(t, what+" msg", awaitError(t, c), protocol.CodeForbidden, names...)
		c.Sendf(t, `{"type":"event","payload":{"roomID":%q,"name":"wave"}}`, roomID)
		denied(t, what+" event", awaitError(t, c), protocol.CodeForbidden, names...)
	}
	wsAllowed := func(c *chattest.Client, roomID string, l *chattest.Client) {
		t.Helper()
		c.Sendf(t, `{"type":"msg","id":"m","payload":{"roomID":%q,"message":"from %s"}}`, roomID, c.Welcome.UserID)
		c.AwaitAck(t, "m")
		if m := chattest.MsgOf(t, l.Await(t, protocol.TypeMsg)); m.From.UserID != c.Welcome.UserID {
			t.Fatalf("%s: listener got %+v", roomID, m)
		}
		c.Sendf(t, `{"type":"event","payload":{"roomID":%q,"name":"wave"}}`, roomID)
		var ev protocol.Event
		chattest.Decode(t, l.Await(t, protocol.TypeEvent), &ev)
		if ev.From.UserID != c.Welcome.UserID || ev.Name != "wave" {
			t.Fatalf("%s: listener got event %+v", roomID, ev)
		}
	}

	anon := chattest.Dial(t, s.URL, "")
	mem := dialToken(t, s.URL, token(t, "mem", member))
	mod := dialToken(t, s.URL, token(t, "mod", moderator))
	for _, c := range []*chattest.Client{anon, mem, mod} {
		for _, r := range []string{"news:r", "bots:r", "open:r"} {
			c.JoinSince(t, r, nil)
		}
	}
	drain := func(cs ...*chattest.Client) {
		for _, c := range cs {
			for {
				if _, err := c.Read(200 * time.Millisecond); err != nil {
					break
				}
			}
		}
	}
	drain(anon, mem, mod, newsL, botsL, openL)

	moderators := []string{`namespace "news"`, `post = "moderators"`}
	wsRefused(anon, "news:r", "anonymous in news", moderators...)
	wsRefused(mem, "news:r", "a member token in news", moderators...)
	wsAllowed(mod, "news:r", newsL)

	api := []string{`namespace "bots"`, `post = "api"`}
	wsRefused(anon, "bots:r", "anonymous in bots", api...)
	wsRefused(mem, "bots:r", "a member in bots", api...)
	wsRefused(mod, "bots:r", "a moderator in bots", api...)

	drain(anon, mem, mod)
	wsAllowed(anon, "open:r", openL)
	drain(mem, mod)
	wsAllowed(mem, "open:r", openL)
	drain(anon, mod, newsL, botsL)

	// Over HTTP, a state-changing request needs credentials (auth is on).
	memTok, modTok := token(t, "mem", member), token(t, "mod", moderator)
	// A news room's owner key (SPEC §11) is its owner's: it posts where
	// moderators post.
	anon.Send(t, `{"type":"create","id":"c","payload":{"namespace":"news"}}`)
	var owned protocol.Created
	chattest.Decode(t, anon.Await(t, protocol.TypeCreated), &owned)
	for _, ep := range []struct{ path, body string }{
		{"/messages", `{"name":"bot","message":"hi"}`},
		{"/events", `{"name":"wave","data":1}`},
	} {
		ok := http.StatusCreated
		if ep.path == "/events" {
			ok = http.StatusAccepted
		}
		for _, r := range []string{"news:r", "bots:r", "open:r"} {
			u := s.URL + "/api/rooms/" + r + ep.path
			wantStatus(t, http.StatusUnauthorized, protocol.CodeUnauthorized, "POST", u, "", ep.body)
			wantStatus(t, http.StatusUnauthorized, protocol.CodeUnauthorized, "POST", u, "not-the-api-key-012345", ep.body)
			wantStatus(t, ok, "", "POST", u, testAPIKey, ep.body)
			wantStatus(t, ok, "", "POST", u, modTok, ep.body)
		}
		// A member token: forbidden where moderators post; the HTTP API is
		// the one way into an api room; members post in open rooms.
		wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "POST", s.URL+"/api/rooms/news:r"+ep.path, memTok, ep.body, moderators...)
		wantStatus(t, ok, "", "POST", s.URL+"/api/rooms/"+owned.RoomID+ep.path, owned.OwnerKey, ep.body)
		wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "POST", s.URL+"/api/rooms/news:r"+ep.path, owned.OwnerKey, ep.body, moderators...)
		wantStatus(t, ok, "", "POST", s.URL+"/api/rooms/bots:r"+ep.path, memTok, ep.body)
		wantStatus(t, ok, "", "POST", s.URL+"/api/rooms/open:r"+ep.path, memTok, ep.body)
	}
	// What the HTTP API posted reached the api room's members live.
	if m := chattest.MsgOf(t, botsL.Await(t, protocol.TypeMsg)); m.Message != "hi" {
		t.Fatalf("bots listener got %+v", m)
	}
}

// history = {size = 0}: joined.history empty, a history request is
// history_disabled, GET messages is 403, and messages still get seqs.
func TestPolicyHistoryOff(t *testing.T) {
	s := startAccess(t, matrixConfig)
	a := chattest.Dial(t, s.URL, "")
	a.Join(t, "eph:r")
	for i, id := range []string{"1", "2", "3"} {
		if ack := a.SendAck(t, id, "gone "+id); ack.Seq != int64(i+1) {
			t.Fatalf("ack %+v, want seq %d: seqs are still counted", ack, i+1)
		}
	}
	b := chattest.Dial(t, s.URL, "")
	j := b.Join(t, "eph:r")
	if j.LastSeq != 3 {
		t.Fatalf("joined.lastSeq = %d, want 3", j.LastSeq)
	}
	if len(j.History) != 0 || j.More {
		t.Errorf("joined under history.size = 0: history %+v, more %v; want none", j.History, j.More)
	}
	b.Send(t, `{"type":"history","id":"h","payload":{"roomID":"eph:r","after":0}}`)
	f := b.Await(t, protocol.TypeError)
	if f.ID != "h" {
		t.Fatalf("error %s, want id h", f)
	}
	var e protocol.Error
	chattest.Decode(t, f, &e)
	denied(t, "history", e, protocol.CodeHistoryDisabled, `namespace "eph"`, "history.size = 0")
	wantStatus(t, http.StatusForbidden, protocol.CodeHistoryDisabled, "GET", s.URL+"/api/rooms/eph:r/messages", "", "", `namespace "eph"`, "history.size = 0")
	// A room without a namespace keeps its history.
	chattest.Fill(t, s.URL, "kept", 2, func(i int) string { return "kept" })
	if j := chattest.Dial(t, s.URL, "").Join(t, "kept"); len(j.History) != 2 {
		t.Fatalf("kept: history %+v, want 2 messages", j.History)
	}
}

// history = {size = 0} stores nothing: what is sent is not in the store.
func TestPolicyHistoryOffStoresNothing(t *testing.T) {
	s := startAccess(t, matrixConfig)
	a := chattest.Dial(t, s.URL, "")
	a.Join(t, "eph:r")
	a.SendAck(t, "1", "gone")
	_, msgs, err := s.Store.Page(context.Background(), "eph:r", store.Query{After: 0, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 0 {
		t.Fatalf("a room of history.size = 0 keeps %d messages in the store", len(msgs))
	}
}

// presence = false: joined lists no members but counts them, and so does
// GET /api/rooms/{id}. join_leave = false: no presence frames.
func TestPolicyPresence(t *testing.T) {
	s := startAccess(t, matrixConfig)
	a := chattest.Dial(t, s.URL, "")
	a.Join(t, "hidden:r")
	b := chattest.Dial(t, s.URL, "")
	j := b.Join(t, "hidden:r")
	if len(j.Members) != 0 || j.Count != 2 {
		t.Fatalf("joined under presence = false: members %+v, count %d; want none and 2", j.Members, j.Count)
	}
	var info server.RoomInfo
	if err := json.Unmarshal(wantStatus(t, http.StatusOK, "", "GET", s.URL+"/api/rooms/hidden:r", "", ""), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Members) != 0 || info.Count != 2 {
		t.Fatalf("GET under presence = false: %+v; want no members, count 2", info)
	}

	// join_leave: the same comings and goings in a room that announces
	// them and in one that does not; a ping after them shows that
	// nothing came before its pong.
	for _, tc := range []struct {
		room     string
		announce bool
	}{{"open:r", true}, {"quiet:r", false}} {
		a := chattest.Dial(t, s.URL, "")
		a.Join(t, tc.room)
		b := chattest.Dial(t, s.URL, "")
		b.Join(t, tc.room)
		// Presence is coalesced for 50 ms (a join then a leave nets out):
		// each change is waited for, or waited well past, before the next.
		if tc.announce {
			a.Await(t, protocol.TypePresence)
		} else {
			a.Quiet(t, 500*time.Millisecond)
		}
		b.Sendf(t, `{"type":"leave","payload":{"roomID":%q}}`, tc.room)
		b.Expect(t, protocol.TypeLeft)
		if tc.announce {
			a.Await(t, protocol.TypePresence)
			continue
		}
		a.Quiet(t, 500*time.Millisecond)
		if j := chattest.Dial(t, s.URL, "").Join(t, tc.room); j.Count != 2 || len(j.Members) != 2 {
			t.Fatalf("quiet:r: joined %+v; want a count of 2 with members listed (presence stays on)", j)
		}
		a.Quiet(t, 500*time.Millisecond)
	}
}

// typing = false and events = false: those frames are forbidden, naming
// the namespace and the rule; an HTTP event too.
func TestPolicyTypingEventsOff(t *testing.T) {
	s := startAccess(t, matrixConfig)
	a := chattest.Dial(t, s.URL, "")
	a.Join(t, "still:r")
	b := chattest.Dial(t, s.URL, "")
	b.Join(t, "still:r")
	a.Await(t, protocol.TypePresence)
	b.Send(t, `{"type":"typing","payload":{"roomID":"still:r"}}`)
	denied(t, "typing", b.ExpectError(t, protocol.CodeForbidden), protocol.CodeForbidden, `namespace "still"`, "typing = false")
	b.Send(t, `{"type":"event","payload":{"roomID":"still:r","name":"wave"}}`)
	denied(t, "event", b.ExpectError(t, protocol.CodeForbidden), protocol.CodeForbidden, `namespace "still"`, "events = false")
	wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "POST", s.URL+"/api/rooms/still:r/events", testAPIKey, `{"name":"wave"}`, `namespace "still"`, "events = false")
	// msg is still allowed, and a is told of it and of nothing refused.
	b.SendAck(t, "m", "hello")
	if m := chattest.MsgOf(t, a.Next(t)); m.Message != "hello" {
		t.Fatalf("a got %+v, want the msg (nothing of the refused frames)", m)
	}
}

// capacity is per namespace: room_full at the namespace's capacity, while
// a room without a namespace takes more.
func TestPolicyCapacity(t *testing.T) {
	s := startAccess(t, matrixConfig)
	for range 2 {
		chattest.Dial(t, s.URL, "").Join(t, "small:r")
		chattest.Dial(t, s.URL, "").Join(t, "big")
	}
	c := chattest.Dial(t, s.URL, "")
	c.Send(t, `{"type":"join","payload":{"roomID":"small:r"}}`)
	c.ExpectError(t, protocol.CodeRoomFull)
	c.Join(t, "big")
}

// rate and burst are per namespace: the burst+1th msg is rate_limited,
// naming the namespace; rooms without one keep the server's rate.
func TestPolicyRate(t *testing.T) {
	s := startAccess(t, matrixConfig)
	c := chattest.Dial(t, s.URL, "")
	c.Join(t, "slow:r")
	c.JoinSince(t, "fast", nil)
	for i := range 3 {
		c.Send(t, string(protocol.Encode(protocol.TypeMsg, "s", protocol.Send{RoomID: "slow:r", Message: "x"})))
		if _, err := c.AckOf("s"); err != nil {
			t.Fatalf("msg %d of the burst: %v", i+1, err)
		}
	}
	c.Send(t, `{"type":"msg","payload":{"roomID":"slow:r","message":"one too many"}}`)
	denied(t, "burst+1", c.ExpectError(t, protocol.CodeRateLimited), protocol.CodeRateLimited, `namespace "slow"`, "rate", "burst")
	for i := range 5 {
		id := "f" + string(rune('0'+i))
		c.Send(t, string(protocol.Encode(protocol.TypeMsg, id, protocol.Send{RoomID: "fast", Message: "x"})))
		c.AwaitAck(t, id)
	}
}

// create and POST /api/rooms take a namespace: ns:<21 characters>, link
// /r/ns:…; an unknown namespace is refused.
func TestPolicyCreate(t *testing.T) {
	s := startAccess(t, matrixConfig)
	c := chattest.Dial(t, s.URL, "")
	c.Send(t, `{"type":"create","id":"c","payload":{"namespace":"news"}}`)
	var cr protocol.Created
	chattest.Decode(t, c.Expect(t, protocol.TypeCreated), &cr)
	checkCreated(t, s.URL, "news", cr)
	c.Send(t, `{"type":"create","id":"c2","payload":{"namespace":"nope"}}`)
	denied(t, "create nope", c.ExpectError(t, protocol.CodeUnknownNamespace), protocol.CodeUnknownNamespace, `"nope"`)

	b := wantStatus(t, http.StatusCreated, "", "POST", s.URL+"/api/rooms", testAPIKey, `{"namespace":"staff"}`)
	if err := json.Unmarshal(b, &cr); err != nil {
		t.Fatal(err)
	}
	checkCreated(t, s.URL, "staff", cr)
	wantStatus(t, http.StatusNotFound, protocol.CodeUnknownNamespace, "POST", s.URL+"/api/rooms", testAPIKey, `{"namespace":"nope"}`, `"nope"`)
	wantStatus(t, http.StatusBadRequest, protocol.CodeBadPayload, "POST", s.URL+"/api/rooms", testAPIKey, `{"namespace":"x"}`, "namespace")
	wantStatus(t, http.StatusUnauthorized, protocol.CodeUnauthorized, "POST", s.URL+"/api/rooms", "", `{"namespace":"news"}`)
	// The share link opens.
	wantStatus(t, http.StatusOK, "", "GET", cr.URL, "", "")
}

func checkCreated(t *testing.T, base, ns string, cr protocol.Created) {
	t.Helper()
	id, ok := strings.CutPrefix(cr.RoomID, ns+":")
	if !ok || len(id) != 21 || strings.Contains(id, ":") {
		t.Fatalf("created %q, want %s:<21 characters>", cr.RoomID, ns)
	}
	if cr.URL != base+"/r/"+cr.RoomID {
		t.Fatalf("created url %q, want %s/r/%s", cr.URL, base, cr.RoomID)
	}
}

// TestJoinedSaysPostRule: joined carries the post rule in force when not
// every member may post (SPEC §9 post, §11), so that a client can disable
// its input from the join on: the namespace's moderators or api, none in a
// members namespace.
func TestJoinedSaysPostRule(t *testing.T) {
	s := startAccess(t, matrixConfig)
	c := chattest.Dial(t, s.URL, "")
	for roomID, want := range map[string]string{"news:r": "moderators", "bots:r": "api", "open:r": ""} {
		if j := c.Join(t, roomID); j.Post != want {
			t.Errorf("joined %s: post %q, want %q", roomID, j.Post, want)
		}
	}
}
