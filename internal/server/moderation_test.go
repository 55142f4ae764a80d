package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

// done reads c's events up to the next done (or error, which fails t).
func done(t *testing.T, c *chattest.Client, action string) protocol.Done {
	t.Helper()
	for {
		f := c.Next(t)
		switch f.Type {
		case protocol.TypeDone:
			var d protocol.Done
			chattest.Decode(t, f, &d)
			if d.Action != action {
				t.Fatalf("done %+v, want action %s", d, action)
			}
			return d
		case protocol.TypeError:
			t.Fatalf("%s: %s", action, f)
		}
	}
}

// SPEC §11: the room's key, and only it, makes a connection the owner.
func TestOwnerKey(t *testing.T) {
	s := chattest.StartInProcess(t)
	roomID, key, _ := chattest.OwnedRoom(t, s.URL)
	other, otherKey, _ := chattest.OwnedRoom(t, s.URL)
	c := chattest.Dial(t, s.URL, "")
	for _, k := range []string{"k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", otherKey, "nonsense", key + "x"} {
		c.Sendf(t, `{"type":"join","payload":{"roomID":%q,"key":%q}}`, roomID, k)
		denied(t, "join with key "+k, c.ExpectError(t, protocol.CodeForbidden), protocol.CodeForbidden, "owner key")
	}
	// A member without the key may not moderate.
	c.Join(t, roomID)
	c.Sendf(t, `{"type":"configure","payload":{"roomID":%q,"post":"moderators"}}`, roomID)
	denied(t, "configure by a member", c.ExpectError(t, protocol.CodeForbidden), protocol.CodeForbidden, "only moderators and owners")
	// POST /api/rooms returns a key too, which works over HTTP.
	var cr protocol.Created
	json.Unmarshal(wantStatus(t, http.StatusCreated, "", "POST", s.URL+"/api/rooms", "", ""), &cr)
	if !strings.HasPrefix(cr.OwnerKey, "k1.") || cr.OwnerKey == key {
		t.Fatalf("POST /api/rooms ownerKey %q", cr.OwnerKey)
	}
	wantStatus(t, http.StatusOK, "", "PATCH", s.URL+"/api/rooms/"+cr.RoomID, cr.OwnerKey, `{"post":"moderators"}`)
	wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "PATCH", s.URL+"/api/rooms/"+other, cr.OwnerKey, `{"post":"moderators"}`)
}

// A redaction is a room event with the next seq; every page serves the
// target as a tombstone from then on (SPEC §11).
func TestRedact(t *testing.T) {
	s := chattest.StartInProcess(t, chattest.NoRate)
	roomID, key, owner := chattest.OwnedRoom(t, s.URL)
	guest := chattest.Dial(t, s.URL, "")
	guest.Join(t, roomID)
	ack := guest.SendAck(t, "m1", "buy cheap pills")
	guest.SendAck(t, "m2", "hello")
	// A guest may not remove another's message; its own it may.
	other := chattest.Dial(t, s.URL, "")
	other.Join(t, roomID)
	other.Sendf(t, `{"type":"redact","payload":{"roomID":%q,"seq":%d}}`, roomID, ack.Seq)
	denied(t, "redact another's message", other.ExpectError(t, protocol.CodeForbidden), protocol.CodeForbidden, "only moderators and owners")

	owner.Sendf(t, `{"type":"redact","id":"r","payload":{"roomID":%q,"seq":%d,"reason":"spam"}}`, roomID, ack.Seq)
	d := done(t, owner, protocol.TypeRedact)
	if d.Seq != ack.Seq+2 {
		t.Fatalf("done %+v: the redaction's seq should be %d", d, ack.Seq+2)
	}
	// Everyone sees it live as a msg with redacts.
	var live protocol.Message
	for {
		m := chattest.MsgOf(t, guest.Await(t, protocol.TypeMsg))
		if m.Redacts != 0 {
			live = m
			break
		}
	}
	if live.Redacts != ack.Seq || live.Seq != d.Seq || live.From.Name != "owner" || !strings.HasPrefix(live.Message, "removed a message") {
		t.Fatalf("live redaction %+v", live)
	}
	// A later joiner, a history page and the HTTP page serve the tombstone.
	late := chattest.Dial(t, s.URL, "")
	j := late.Join(t, roomID)
	checkTombstone(t, "joined", j.History, ack.Seq, d.Seq)
	var page server.MessagePage
	json.Unmarshal(wantStatus(t, http.StatusOK, "", "GET", s.URL+"/api/rooms/"+roomID+"/messages?after=0", "", ""), &page)
	checkTombstone(t, "GET messages", page.Messages, ack.Seq, d.Seq)
	late.Sendf(t, `{"type":"history","id":"h","payload":{"roomID":%q,"after":0}}`, roomID)
	var h protocol.History
	chattest.Decode(t, late.Await(t, protocol.TypeHistory), &h)
	checkTombstone(t, "history", h.Messages, ack.Seq, d.Seq)
	// Again: not_found; a redaction itself: bad_payload; none: not_found.
	owner.Sendf(t, `{"type":"redact","payload":{"roomID":%q,"seq":%d}}`, roomID, ack.Seq)
	owner.ExpectError(t, protocol.CodeNotFound)
	owner.Sendf(t, `{"type":"redact","payload":{"roomID":%q,"seq":%d}}`, roomID, d.Seq)
	owner.ExpectError(t, protocol.CodeBadPayload)
	owner.Sendf(t, `{"type":"redact","payload":{"roomID":%q,"seq":999}}`, roomID)
	owner.ExpectError(t, protocol.CodeNotFound)
	// Over HTTP, no credential is a member (forbidden); the owner key
	// removes; the author removes its own (redact_own = always by default).
	path := fmt.Sprintf("%s/api/rooms/%s/messages/%d/redact", s.URL, roomID, ack.Seq+1)
	wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "POST", path, "", "")
	wantStatus(t, http.StatusCreated, "", "POST", path, key, `{"reason":"off topic"}`)
	wantStatus(t, http.StatusNotFound, protocol.CodeNotFound, "POST", path, key, "")
	own := guest.SendAck(t, "m3", "typo")
	guest.Sendf(t, `{"type":"redact","payload":{"roomID":%q,"seq":%d}}`, roomID, own.Seq)
	done(t, guest, protocol.TypeRedact)
}

func checkTombstone(t *testing.T, where string, msgs []protocol.Message, seq, by int64) {
	t.Helper()
	for _, m := range msgs {
		if m.Seq == seq {
			if m.Message != "" || m.Redacted == nil || m.Redacted.Seq != by {
				t.Fatalf("%s serves seq %d as %+v, want a tombstone redacted by seq %d", where, seq, m, by)
			}
			return
		}
	}
	t.Fatalf("%s lacks seq %d: %+v", where, seq, msgs)
}

// kick, ban (with for), unban, mute, unmute, and the run-time post rule
// over the WebSocket (SPEC §11).
func TestKickBanMute(t *testing.T) {
	s := chattest.StartInProcess(t, chattest.NoRate)
	roomID, _, owner := chattest.OwnedRoom(t, s.URL)
	guest := chattest.Dial(t, s.URL, "")
	j := guest.Join(t, roomID)
	uid := j.You.UserID

	owner.Sendf(t, `{"type":"kick","payload":{"roomID":%q,"userID":%q,"reason":"calm down"}}`, roomID, uid)
	done(t, owner, protocol.TypeKick)
	var k protocol.Kicked
	chattest.Decode(t, guest.Await(t, protocol.TypeKicked), &k)
	if k.RoomID != roomID || k.By.Name != "owner" || k.Reason != "calm down" || k.Banned {
		t.Fatalf("kicked %+v", k)
	}
	guest.Sendf(t, `{"type":"msg","payload":{"roomID":%q,"message":"still here?"}}`, roomID)
	guest.ExpectError(t, protocol.CodeNotInRoom)
	guest.Join(t, roomID) // a kick is not a ban

	owner.Sendf(t, `{"type":"ban","payload":{"roomID":%q,"userID":%q,"for":"1h"}}`, roomID, uid)
	d := done(t, owner, protocol.TypeBan)
	if d.Until.IsZero() {
		t.Fatalf("ban done %+v lacks until", d)
	}
	chattest.Decode(t, guest.Await(t, protocol.TypeKicked), &k)
	if !k.Banned || k.Until.IsZero() {
		t.Fatalf("banned user told %+v", k)
	}
	guest.Sendf(t, `{"type":"join","payload":{"roomID":%q}}`, roomID)
	denied(t, "join while banned", guest.ExpectError(t, protocol.CodeBanned), protocol.CodeBanned, roomID, "until")
	owner.Sendf(t, `{"type":"unban","payload":{"roomID":%q,"userID":%q}}`, roomID, uid)
	done(t, owner, protocol.TypeUnban)
	owner.Sendf(t, `{"type":"unban","payload":{"roomID":%q,"userID":%q}}`, roomID, uid)
	owner.ExpectError(t, protocol.CodeNotFound)
	guest.Join(t, roomID)

	owner.Sendf(t, `{"type":"mute","payload":{"roomID":%q,"userID":%q}}`, roomID, uid)
	done(t, owner, protocol.TypeMute)
	var mu protocol.Muted
	chattest.Decode(t, guest.Await(t, protocol.TypeMuted), &mu)
	if mu.RoomID != roomID || !mu.Until.IsZero() || mu.Lifted {
		t.Fatalf("muted %+v", mu)
	}
	for _, f := range []string{
		`{"type":"msg","payload":{"roomID":%q,"message":"hi"}}`,
		`{"type":"typing","payload":{"roomID":%q}}`,
		`{"type":"event","payload":{"roomID":%q,"name":"wave"}}`,
	} {
		guest.Sendf(t, f, roomID)
		guest.ExpectError(t, protocol.CodeMuted)
	}
	owner.Sendf(t, `{"type":"unmute","payload":{"roomID":%q,"userID":%q}}`, roomID, uid)
	done(t, owner, protocol.TypeUnmute)
	chattest.Decode(t, guest.Await(t, protocol.TypeMuted), &mu)
	if !mu.Lifted {
		t.Fatalf("unmute told %+v", mu)
	}
	guest.SendAck(t, "after", "thanks")

	owner.Sendf(t, `{"type":"configure","payload":{"roomID":%q,"post":"moderators"}}`, roomID)
	done(t, owner, protocol.TypeConfigure)
	guest.Sendf(t, `{"type":"msg","payload":{"roomID":%q,"message":"hi"}}`, roomID)
	denied(t, "msg under a moderators post rule", awaitError(t, guest), protocol.CodeForbidden, "moderators")
	owner.SendAck(t, "o1", "announcement")
	owner.Sendf(t, `{"type":"configure","payload":{"roomID":%q,"post":"everyone"}}`, roomID)
	awaitErrorCode(t, owner, protocol.CodeBadPayload)

	// Nobody acts on an equal or higher role: the owner cannot be
	// kicked by a member, nor ban itself.
	guest.Sendf(t, `{"type":"kick","payload":{"roomID":%q,"userID":%q}}`, roomID, j.You.UserID)
	awaitErrorCode(t, guest, protocol.CodeForbidden)
	owner.Sendf(t, `{"type":"ban","payload":{"roomID":%q,"userID":"x","for":"soon"}}`, roomID)
	awaitErrorCode(t, owner, protocol.CodeBadPayload)
}

// The HTTP side: bans and mutes by PUT/DELETE/GET, kick, clear, and
// disconnect with an API key (SPEC §11).
func TestModerationHTTP(t *testing.T) {
	s := startAccess(t, matrixConfig)
	roomID, key, _ := chattest.OwnedRoom(t, s.URL)
	guest := chattest.Dial(t, s.URL, "")
	uid := guest.Join(t, roomID).You.UserID
	guest.SendAck(t, "1", "one")
	base := s.URL + "/api/rooms/" + roomID

	wantStatus(t, http.StatusUnauthorized, protocol.CodeUnauthorized, "PUT", base+"/mutes/"+uid, "", "")
	wantStatus(t, http.StatusOK, "", "PUT", base+"/mutes/"+uid, key, `{"for":"10m","reason":"flood"}`)
	var list struct {
		Mutes []server.RestrictionInfo `json:"mutes"`
	}
	json.Unmarshal(wantStatus(t, http.StatusOK, "", "GET", base+"/mutes", key, ""), &list)
	if len(list.Mutes) != 1 || list.Mutes[0].UserID != uid || list.Mutes[0].Reason != "flood" || list.Mutes[0].Until.IsZero() {
		t.Fatalf("GET mutes: %+v", list)
	}
	guest.Sendf(t, `{"type":"msg","payload":{"roomID":%q,"message":"hi"}}`, roomID)
	awaitErrorCode(t, guest, protocol.CodeMuted)
	wantStatus(t, http.StatusOK, "", "DELETE", base+"/mutes/"+uid, testAPIKey, "")
	wantStatus(t, http.StatusNotFound, protocol.CodeNotFound, "DELETE", base+"/mutes/"+uid, key, "")

	wantStatus(t, http.StatusOK, "", "POST", base+"/kick", key, `{"userID":"`+uid+`"}`)
	guest.Await(t, protocol.TypeKicked)
	wantStatus(t, http.StatusNotFound, protocol.CodeNotFound, "POST", base+"/kick", key, `{"userID":"`+uid+`"}`)
	wantStatus(t, http.StatusOK, "", "PUT", base+"/bans/"+uid, key, "")
	guest.Sendf(t, `{"type":"join","payload":{"roomID":%q}}`, roomID)
	awaitErrorCode(t, guest, protocol.CodeBanned)

	// clear keeps lastSeq; an older since is truncated.
	wantStatus(t, http.StatusOK, "", "DELETE", base+"/messages", key, "")
	var page server.MessagePage
	json.Unmarshal(wantStatus(t, http.StatusOK, "", "GET", base+"/messages?after=0", "", ""), &page)
	if len(page.Messages) != 0 || page.LastSeq != 1 {
		t.Fatalf("after clear: %+v", page)
	}
	c := chattest.Dial(t, s.URL, "")
	since := int64(0)
	if j := c.JoinSince(t, roomID, &since); !j.Truncated || j.LastSeq != 1 {
		t.Fatalf("joined since 0 after clear: %+v", j)
	}

	// disconnect: an API key's action; the user's connection closes 4003.
	victim := chattest.Dial(t, s.URL, "")
	vid := victim.Join(t, "open:x").You.UserID
	wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "POST", s.URL+"/api/users/"+vid+"/disconnect", key, "")
	wantStatus(t, http.StatusOK, "", "POST", s.URL+"/api/users/"+vid+"/disconnect", testAPIKey, `{"reason":"abuse"}`)
	victim.ExpectClose(t, 4003)
}

func awaitErrorCode(t *testing.T, c *chattest.Client, code string) {
	t.Helper()
	if e := awaitError(t, c); e.Code != code {
		t.Fatalf("error %+v, want %s", e, code)
	}
}

// A mute binds the userID, which a resume keeps (SPEC §11): the resumed
// connection's msg is refused too; a new connection without resume is a
// new user, whom the mute does not bind (the docs say so).
func TestMuteSurvivesResume(t *testing.T) {
	s := chattest.StartInProcess(t, chattest.NoRate)
	roomID, _, owner := chattest.OwnedRoom(t, s.URL)
	guest := chattest.Dial(t, s.URL, "")
	uid := guest.Join(t, roomID).You.UserID
	owner.Sendf(t, `{"type":"mute","payload":{"roomID":%q,"userID":%q,"for":"1h"}}`, roomID, uid)
	done(t, owner, protocol.TypeMute)
	guest.Await(t, protocol.TypeMuted)
	token := guest.Welcome.Resume
	guest.Close()

	back := chattest.Dial(t, s.URL, "?resume="+token)
	if back.Welcome.UserID != uid {
		t.Fatalf("resumed as %s, want %s", back.Welcome.UserID, uid)
	}
	back.Join(t, roomID)
	back.Sendf(t, `{"type":"msg","id":"m","payload":{"roomID":%q,"message":"back"}}`, roomID)
	awaitErrorCode(t, back, protocol.CodeMuted)

	fresh := chattest.Dial(t, s.URL, "")
	fresh.Join(t, roomID)
	fresh.SendAck(t, "f", "a new user is not muted")
}

// SPEC §11 configure: joined says the room's run-time post rule to whoever
// joins while it is set (a first join, a join again, a join after a
// resume), and POST /api/rooms/{id}/messages is held to it: a caller below
// moderator (anonymous, a member's token) gets 403 forbidden naming the
// rule and nothing is stored; an API key, the room's owner key and a
// moderator's token post.
func TestPostRuleJoinedAndHTTP(t *testing.T) {
	s := startAccess(t, matrixConfig)
	roomID, key, owner := chattest.OwnedRoom(t, s.URL)
	guest := chattest.Dial(t, s.URL, "")
	if j := guest.Join(t, roomID); j.Post != "" {
		t.Fatalf("joined.post %q before any configure, want none", j.Post)
	}
	msgs := s.URL + "/api/rooms/" + roomID + "/messages"
	memberTok := token(t, "tok-member", map[string]string{roomID: "member"})
	modTok := token(t, "tok-mod", map[string]string{roomID: "moderator"})
	wantStatus(t, http.StatusCreated, "", "POST", msgs, memberTok, `{"message":"before"}`)
	guest.Await(t, protocol.TypeMsg)

	owner.Sendf(t, `{"type":"configure","payload":{"roomID":%q,"post":"moderators"}}`, roomID)
	done(t, owner, protocol.TypeConfigure)
	guest.Await(t, protocol.TypeConfigured)

	late := chattest.Dial(t, s.URL, "")
	if j := late.Join(t, roomID); j.Post != "moderators" {
		t.Fatalf("joined.post %q of a join under moderators", j.Post)
	}
	if j := guest.Join(t, roomID); j.Post != "moderators" {
		t.Fatalf("joined.post %q of a join again under moderators", j.Post)
	}
	resume := guest.Welcome.Resume
	guest.Close()
	back := chattest.Dial(t, s.URL, "?resume="+resume)
	if j := back.Join(t, roomID); j.Post != "moderators" {
		t.Fatalf("joined.post %q of a join after a resume under moderators", j.Post)
	}

	wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "POST", msgs, memberTok, `{"message":"refused"}`, `post = "moderators"`)
	for _, bearer := range []string{testAPIKey, key, modTok} {
		wantStatus(t, http.StatusCreated, "", "POST", msgs, bearer, `{"message":"announcement"}`)
	}
	// Events over HTTP are held to the rule too, by the caller's role.
	events := s.URL + "/api/rooms/" + roomID + "/events"
	wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "POST", events, memberTok, `{"name":"wave"}`, `post = "moderators"`)
	for _, bearer := range []string{testAPIKey, key, modTok} {
		wantStatus(t, http.StatusAccepted, "", "POST", events, bearer, `{"name":"wave"}`)
	}
	var page server.MessagePage
	json.Unmarshal(wantStatus(t, http.StatusOK, "", "GET", msgs+"?after=0", "", ""), &page)
	if len(page.Messages) != 4 || page.LastSeq != 4 {
		t.Fatalf("page after the posts: %+v, want before and three announcements", page)
	}
	for _, m := range page.Messages {
		if m.Message == "refused" {
			t.Fatalf("a refused post was stored: %+v", m)
		}
	}

	owner.Sendf(t, `{"type":"configure","payload":{"roomID":%q,"post":"members"}}`, roomID)
	done(t, owner, protocol.TypeConfigure)
	if j := chattest.Dial(t, s.URL, "").Join(t, roomID); j.Post != "members" {
		t.Fatalf("joined.post %q after the switch back, want members", j.Post)
	}
	wantStatus(t, http.StatusCreated, "", "POST", msgs, memberTok, `{"message":"after"}`)
	wantStatus(t, http.StatusAccepted, "", "POST", events, memberTok, `{"name":"wave"}`)
}

// With auth off an HTTP post without credentials is a member's: refused
// under the run-time post rule of moderators (SPEC §11), in the words of
// the namespace's rule; the room's owner key posts.
func TestPostRuleHTTPAnonymous(t *testing.T) {
	s := chattest.StartInProcess(t)
	roomID, key, owner := chattest.OwnedRoom(t, s.URL)
	msgs := s.URL + "/api/rooms/" + roomID + "/messages"
	owner.Sendf(t, `{"type":"configure","payload":{"roomID":%q,"post":"moderators"}}`, roomID)
	done(t, owner, protocol.TypeConfigure)
	wantStatus(t, http.StatusForbidden, protocol.CodeForbidden, "POST", msgs, "", `{"name":"bot","message":"refused"}`, "rooms without a namespace", `post = "moderators"`)
	wantStatus(t, http.StatusCreated, "", "POST", msgs, key, `{"message":"announcement"}`)
	owner.Sendf(t, `{"type":"configure","payload":{"roomID":%q,"post":"members"}}`, roomID)
	done(t, owner, protocol.TypeConfigure)
	wantStatus(t, http.StatusCreated, "", "POST", msgs, "", `{"message":"after"}`)
	var page server.MessagePage
	json.Unmarshal(wantStatus(t, http.StatusOK, "", "GET", msgs+"?after=0", "", ""), &page)
	if len(page.Messages) != 2 || page.Messages[0].Message != "announcement" || page.Messages[1].Message != "after" {
		t.Fatalf("page: %+v, want the announcement and the post after", page)
	}
}
