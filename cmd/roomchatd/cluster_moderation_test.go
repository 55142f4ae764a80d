package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// SPEC §11 in a cluster: the owner key made on node 1 works on node 2; a
// mute set on node 1 refuses the guest's very next msg on node 2; a ban
// set on node 2 refuses a join on node 1; a redaction is a room event
// with the next seq that both nodes deliver in order.
func TestClusterModeration(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	nodes := startNodes(t, srv, 2, "-rate", "0")

	roomID, key, owner := chattest.OwnedRoom(t, nodes[0].URL)
	// The key is the store's: the owner is the owner on node 2 too.
	owner2 := chattest.Dial(t, nodes[1].URL, "")
	owner2.Sendf(t, `{"type":"join","payload":{"roomID":%q,"name":"owner2","key":%q}}`, roomID, key)
	owner2.Expect(t, protocol.TypeJoined)

	guest, j := member(t, nodes[1], roomID)
	uid := j.You.UserID
	// A kick on node 1 takes the guest out on node 2.
	owner.Sendf(t, `{"type":"kick","id":"k","payload":{"roomID":%q,"userID":%q}}`, roomID, uid)
	awaitType(t, owner, protocol.TypeDone)
	awaitType(t, guest, protocol.TypeKicked)
	guest.Sendf(t, `{"type":"msg","payload":{"roomID":%q,"message":"in?"}}`, roomID)
	if e := awaitErr(t, guest); e.Code != protocol.CodeNotInRoom {
		t.Fatalf("msg after a kick from the other node: %+v", e)
	}
	guest.Join(t, roomID)
	spam := guest.SendAck(t, "s1", "spam spam")

	owner.Sendf(t, `{"type":"mute","id":"m","payload":{"roomID":%q,"userID":%q}}`, roomID, uid)
	awaitType(t, owner, protocol.TypeDone)
	awaitType(t, guest, protocol.TypeMuted) // told on its own node
	guest.Sendf(t, `{"type":"typing","payload":{"roomID":%q}}`, roomID)
	if e := awaitErr(t, guest); e.Code != protocol.CodeMuted {
		t.Fatalf("typing on node 2 after a mute on node 1: %+v, want muted (the cache forgot)", e)
	}
	guest.Sendf(t, `{"type":"msg","id":"s2","payload":{"roomID":%q,"message":"more spam"}}`, roomID)
	if e := awaitErr(t, guest); e.Code != protocol.CodeMuted {
		t.Fatalf("msg on node 2 right after a mute on node 1: %+v, want muted", e)
	}
	owner.Sendf(t, `{"type":"unmute","id":"u","payload":{"roomID":%q,"userID":%q}}`, roomID, uid)
	awaitType(t, owner, protocol.TypeDone)
	awaitType(t, guest, protocol.TypeMuted) // lifted, told on its own node
	after := guest.SendAck(t, "s3", "sorry")
	if after.Seq != spam.Seq+1 {
		t.Fatalf("the refused msg used a seq: %d after %d", after.Seq, spam.Seq)
	}

	owner.Sendf(t, `{"type":"redact","id":"r","payload":{"roomID":%q,"seq":%d}}`, roomID, spam.Seq)
	var d protocol.Done
	chattest.Decode(t, awaitType(t, owner, protocol.TypeDone), &d)
	if d.Seq != after.Seq+1 {
		t.Fatalf("redaction seq %d, want %d", d.Seq, after.Seq+1)
	}
	for i, c := range []*chattest.Client{owner2, guest} {
		for {
			m := chattest.MsgOf(t, c.Await(t, protocol.TypeMsg))
			if m.Seq == d.Seq {
				if m.Redacts != spam.Seq {
					t.Fatalf("client %d got seq %d as %+v, want the redaction", i, d.Seq, m)
				}
				break
			}
		}
	}

	owner2.Sendf(t, `{"type":"ban","id":"b","payload":{"roomID":%q,"userID":%q,"for":"1h"}}`, roomID, uid)
	awaitType(t, owner2, protocol.TypeDone)
	awaitType(t, guest, protocol.TypeKicked) // the guest is on node 2
	guest.Sendf(t, `{"type":"join","payload":{"roomID":%q}}`, roomID)
	if e := awaitErr(t, guest); e.Code != protocol.CodeBanned {
		t.Fatalf("join on node 2 after a ban: %+v", e)
	}
	// The banned user, resumed on node 1 (the same userID), cannot join
	// there either.
	token := guest.Welcome.Resume
	guest.Close()
	back := chattest.Dial(t, nodes[0].URL, "?resume="+token)
	if back.Welcome.UserID != uid {
		t.Fatalf("resume on node 1 gave user %s, want %s", back.Welcome.UserID, uid)
	}
	back.Sendf(t, `{"type":"join","payload":{"roomID":%q}}`, roomID)
	if e := awaitErr(t, back); e.Code != protocol.CodeBanned {
		t.Fatalf("join on node 1 after a ban on node 2: %+v", e)
	}
	_, lj := member(t, nodes[0], roomID)
	for _, m := range lj.History {
		if m.Seq == spam.Seq && (m.Message != "" || m.Redacted == nil) {
			t.Fatalf("a joiner on node 1 sees seq %d as %+v, want a tombstone", spam.Seq, m)
		}
	}
}

func awaitType(t *testing.T, c *chattest.Client, typ string) chattest.Frame {
	t.Helper()
	for {
		f := c.Next(t)
		if f.Type == typ {
			return f
		}
		if f.Type == protocol.TypeError {
			t.Fatalf("waiting for %s: %s", typ, f)
		}
	}
}

func awaitErr(t *testing.T, c *chattest.Client) protocol.Error {
	t.Helper()
	var e protocol.Error
	chattest.Decode(t, c.Await(t, protocol.TypeError), &e)
	return e
}

// SPEC §11 disconnect in a cluster: the API key's call on node 1 closes
// the user's connection on node 2 with 4003.
func TestClusterDisconnect(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	file := filepath.Join(t.TempDir(), "roomchat.toml")
	writeConfig(t, file, "[auth]\nmode = \"optional\"\nalgorithms = [\"HS256\"]\nhmac_secret_env = \"TEST_JWT_SECRET\"\napi_keys_env = \"TEST_API_KEYS\"\n")
	env := append(chattest.Environ(), "TEST_JWT_SECRET="+strings.Repeat("s", 32), "TEST_API_KEYS=cluster-api-key-0123456789")
	var nodes []*chattest.Server
	for range 2 {
		nodes = append(nodes, chattest.StartEnv(t, env, "-addr", "127.0.0.1:0", "-rate", "0", "-redis", srv.URL(), "-config", file))
	}
	victim, j := member(t, nodes[1], "r")
	httpJSON(t, "POST", nodes[0].URL+"/api/users/"+j.You.UserID+"/disconnect", "cluster-api-key-0123456789", `{"reason":"abuse"}`, http.StatusOK, nil)
	victim.ExpectClose(t, 4003)
}

// SPEC §11 configure in a cluster: the post rule set through node 1 refuses
// a member's very next msg on node 2 (the store checks it as it stores the
// msg), every member on both nodes is told with configured, event on node
// 2 follows once the notice is there, and the switch back to members holds
// for the next msg at once, whatever node 2 still has cached.
func TestClusterPostRule(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	nodes := startNodes(t, srv, 2, "-rate", "0")

	roomID, _, owner := chattest.OwnedRoom(t, nodes[0].URL)
	guest, _ := member(t, nodes[1], roomID)
	// Node 2 has read (and cached) the room's moderation state.
	guest.SendAck(t, "g0", "hello")
	guest.Sendf(t, `{"type":"event","payload":{"roomID":%q,"name":"wave"}}`, roomID)
	awaitType(t, owner, protocol.TypeEvent)

	owner.Sendf(t, `{"type":"configure","id":"cf1","payload":{"roomID":%q,"post":"moderators"}}`, roomID)
	awaitType(t, owner, protocol.TypeDone)
	var notices []protocol.Configured // configured frames the guest got
	guest.Sendf(t, `{"type":"msg","id":"g1","payload":{"roomID":%q,"message":"right after"}}`, roomID)
	if f := outcome(t, guest, "g1", &notices); f.Type != protocol.TypeError {
		t.Fatalf("a member's msg on node 2 right after moderators on node 1: %s, want forbidden", f)
	} else {
		var e protocol.Error
		chattest.Decode(t, f, &e)
		if e.Code != protocol.CodeForbidden || !strings.Contains(e.Message, `post = "moderators"`) {
			t.Fatalf("msg under moderators: %+v, want forbidden naming the rule", e)
		}
	}
	c := awaitNotice(t, guest, &notices)
	if c.RoomID != roomID || c.Post != "moderators" || c.By.Name != "owner" {
		t.Fatalf("configured on node 2: %+v", c)
	}
	// A join on node 2 says the rule set through node 1.
	if j := chattest.Dial(t, nodes[1].URL, "").Join(t, roomID); j.Post != "moderators" {
		t.Fatalf("joined.post on node 2 under moderators: %q", j.Post)
	}
	// The notice has dropped node 2's cache: event is refused too.
	guest.Sendf(t, `{"type":"event","payload":{"roomID":%q,"name":"wave"}}`, roomID)
	if e := awaitErr(t, guest); e.Code != protocol.CodeForbidden {
		t.Fatalf("event on node 2 after the notice: %+v, want forbidden", e)
	}
	owner.SendAck(t, "o1", "announcement") // the owner still posts

	owner.Sendf(t, `{"type":"configure","id":"cf2","payload":{"roomID":%q,"post":"members"}}`, roomID)
	awaitType(t, owner, protocol.TypeDone)
	guest.Sendf(t, `{"type":"msg","id":"g2","payload":{"roomID":%q,"message":"back"}}`, roomID)
	if f := outcome(t, guest, "g2", &notices); f.Type != protocol.TypeAck {
		t.Fatalf("a member's msg on node 2 right after members on node 1: %s, want an ack", f)
	}
	if c := awaitNotice(t, guest, &notices); c.Post != "members" {
		t.Fatalf("second configured on node 2: %+v", c)
	}
	guest.Sendf(t, `{"type":"event","payload":{"roomID":%q,"name":"wave"}}`, roomID)
	awaitType(t, owner, protocol.TypeEvent)
}

// outcome reads c's frames until the ack or error of request id, keeping
// the configured frames it passes in notices.
func outcome(t *testing.T, c *chattest.Client, id string, notices *[]protocol.Configured) chattest.Frame {
	t.Helper()
	for {
		f := c.Next(t)
		switch {
		case f.Type == protocol.TypeConfigured:
			var n protocol.Configured
			chattest.Decode(t, f, &n)
			*notices = append(*notices, n)
		case (f.Type == protocol.TypeAck || f.Type == protocol.TypeError) && f.ID == id:
			return f
		}
	}
}

// awaitNotice returns the first configured frame of notices, or reads c
// until one arrives.
func awaitNotice(t *testing.T, c *chattest.Client, notices *[]protocol.Configured) protocol.Configured {
	t.Helper()
	if len(*notices) > 0 {
		n := (*notices)[0]
		*notices = (*notices)[1:]
		return n
	}
	var n protocol.Configured
	chattest.Decode(t, awaitType(t, c, protocol.TypeConfigured), &n)
	return n
}
