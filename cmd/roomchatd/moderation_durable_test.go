package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
)

// SPEC §11 "Durable": a redaction, a ban, a mute and the post rule
// survive a restart of the built binary, and the redacted text is nowhere
// in the database files.
func TestModerationSurvivesRestart(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "chat.db")
	srv := chattest.Start(t, "-db", db, "-rate", "0")
	var cr protocol.Created
	httpJSON(t, "POST", srv.URL+"/api/rooms", "", "", http.StatusCreated, &cr)
	base := srv.URL + "/api/rooms/" + cr.RoomID
	const secret = "the-secret-text-7f3a9c"
	var m protocol.Message
	httpJSON(t, "POST", base+"/messages", "", `{"message":"`+secret+`"}`, http.StatusCreated, &m)
	httpJSON(t, "POST", base+"/messages", "", `{"message":"kept"}`, http.StatusCreated, nil)
	httpJSON(t, "POST", base+"/messages/1/redact", cr.OwnerKey, `{"reason":"leak"}`, http.StatusCreated, nil)
	httpJSON(t, "PUT", base+"/bans/banned-user", cr.OwnerKey, `{"reason":"spam"}`, http.StatusOK, nil)
	httpJSON(t, "PUT", base+"/mutes/muted-user", cr.OwnerKey, `{"for":"1h"}`, http.StatusOK, nil)
	httpJSON(t, "PATCH", base, cr.OwnerKey, `{"post":"moderators"}`, http.StatusOK, nil)
	srv.Stop(t)

	for _, f := range []string{db, db + "-wal"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the WAL is gone after a clean stop
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Fatalf("%s still holds the redacted text", f)
		}
	}

	srv.Restart(t, false)
	base = srv.URL + "/api/rooms/" + cr.RoomID
	var page struct {
		Messages []protocol.Message `json:"messages"`
	}
	httpJSON(t, "GET", base+"/messages?after=0", "", "", http.StatusOK, &page)
	if len(page.Messages) != 3 || page.Messages[0].Message != "" || page.Messages[0].Redacted == nil || page.Messages[2].Redacts != 1 {
		t.Fatalf("after restart: %+v", page.Messages)
	}
	var bans struct {
		Bans []struct {
			UserID string `json:"userID"`
			Reason string `json:"reason"`
		} `json:"bans"`
	}
	httpJSON(t, "GET", base+"/bans", cr.OwnerKey, "", http.StatusOK, &bans)
	if len(bans.Bans) != 1 || bans.Bans[0].UserID != "banned-user" || bans.Bans[0].Reason != "spam" {
		t.Fatalf("bans after restart: %+v", bans)
	}
	var mutes struct {
		Mutes []struct {
			UserID string `json:"userID"`
		} `json:"mutes"`
	}
	httpJSON(t, "GET", base+"/mutes", cr.OwnerKey, "", http.StatusOK, &mutes)
	if len(mutes.Mutes) != 1 || mutes.Mutes[0].UserID != "muted-user" {
		t.Fatalf("mutes after restart: %+v", mutes)
	}
	// The post rule holds: a member's msg is forbidden.
	c := chattest.Dial(t, srv.URL, "")
	c.Join(t, cr.RoomID)
	c.Sendf(t, `{"type":"msg","payload":{"roomID":%q,"message":"hi"}}`, cr.RoomID)
	if e := c.ExpectError(t, protocol.CodeForbidden); !strings.Contains(e.Message, "moderators") {
		t.Fatalf("msg under the restored post rule: %+v", e)
	}
}
