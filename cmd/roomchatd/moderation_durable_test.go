package main

import (
	"bytes"
	"encoding/json"
	"io"
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
		Bans []struct{ UserID, Reason string } `json:"bans"`
	}
	httpJSON(t, "GET", base+"/bans", cr.OwnerKey, "", http.StatusOK, &bans)
	if len(bans.Bans) != 1 || bans.Bans[0].UserID != "banned-user" || bans.Bans[0].Reason != "spam" {
		t.Fatalf("bans after restart: %+v", bans)
	}
	var mutes struct {
		Mutes []struct{ UserID string } `json:"mutes"`
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

// httpJSON makes a request (bearer and body optional), fails t unless it
// answers status, and decodes the body into v (if not nil).
func httpJSON(t *testing.T, method, u, bearer, body string, status int, v any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != status {
		t.Fatalf("%s %s: %d %s, want %d", method, u, res.StatusCode, b, status)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, u, err, b)
		}
	}
}
