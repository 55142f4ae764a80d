package main

// The Centrifugo target of idle: the same connect + join as roomchat's,
// spoken in Centrifugo's JSON client protocol (github.com/centrifugal/protocol,
// client.proto; Centrifugo v6):
//
//	client → {"id":1,"connect":{"token":"JWT"}}    (no token: anonymous)
//	server ← {"id":1,"connect":{"client":"…","version":"…","ping":25,"pong":true}}
//	client → {"id":2,"subscribe":{"channel":"rooms:ROOM"}}
//	server ← {"id":2,"subscribe":{…}}
//
// A frame in either direction may carry several commands or replies, one
// JSON object per line. Pushes (join/leave of other members, publications)
// have no id and are skipped. The server's ping is an empty object {} and
// the client answers it with {} (protocol v2's bidirectional ping).

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/coder/websocket"
)

// Centrifugo's command ids of the handshake.
const (
	cfConnectID   = 1
	cfSubscribeID = 2
)

// cfCommand is the part of Centrifugo's Command the bench sends.
type cfCommand struct {
	ID        uint32       `json:"id"`
	Connect   *cfConnect   `json:"connect,omitempty"`
	Subscribe *cfSubscribe `json:"subscribe,omitempty"`
}

type cfConnect struct {
	Token string `json:"token,omitempty"`
}

type cfSubscribe struct {
	Channel string `json:"channel"`
}

// cfReply is the part of Centrifugo's Reply the bench reads.
type cfReply struct {
	ID        uint32          `json:"id"`
	Error     *cfError        `json:"error"`
	Push      json.RawMessage `json:"push"`
	Connect   json.RawMessage `json:"connect"`
	Subscribe json.RawMessage `json:"subscribe"`
}

// cfError is a Centrifugo error reply.
type cfError struct {
	Code      uint32 `json:"code"`
	Message   string `json:"message"`
	Temporary bool   `json:"temporary"`
}

func (e *cfError) Error() string {
	return fmt.Sprintf("centrifugo error %d: %s", e.Code, e.Message)
}

// cfConnectFrame is connection i's connect command: with an HS256 token for
// user "u<i>" when secret is set (so that every connection is a distinct
// user, as in roomchat), else none (anonymous).
func cfConnectFrame(secret []byte, i int) []byte {
	cmd := cfCommand{ID: cfConnectID, Connect: &cfConnect{}}
	if len(secret) > 0 {
		cmd.Connect.Token = cfToken(secret, "u"+strconv.Itoa(i))
	}
	b, _ := json.Marshal(cmd) // plain strings: cannot fail
	return b
}

// cfSubscribeFrame subscribes to channel.
func cfSubscribeFrame(channel string) []byte {
	b, _ := json.Marshal(cfCommand{ID: cfSubscribeID, Subscribe: &cfSubscribe{Channel: channel}})
	return b
}

// cfToken returns a JWT for user sub signed with HS256 and secret, the form
// Centrifugo's client.token.hmac_secret_key verifies. It carries no exp: the
// benchmark's connections never refresh.
func cfToken(secret []byte, sub string) string {
	enc := base64.RawURLEncoding
	claims, _ := json.Marshal(struct {
		Sub string `json:"sub"`
	}{sub})
	s := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(s))
	return s + "." + enc.EncodeToString(m.Sum(nil))
}

// cfFrameResult is what one server frame says to a client waiting for the
// reply to command id.
type cfFrameResult struct {
	found bool // the reply to id arrived (without error)
	pings int  // server pings in the frame, each to be answered with {}
}

// cfScan reads one server frame (one or more replies, newline-delimited)
// while waiting for the reply to command id. A reply to id with an error, or
// a line that is not a JSON object, fails.
func cfScan(frame []byte, id uint32) (cfFrameResult, error) {
	var res cfFrameResult
	for line := range bytes.SplitSeq(frame, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if bytes.Equal(line, []byte("{}")) {
			res.pings++
			continue
		}
		var r cfReply
		if err := json.Unmarshal(line, &r); err != nil {
			return res, fmt.Errorf("bad centrifugo reply %.200q: %w", line, err)
		}
		if r.ID == 0 || r.ID != id {
			continue // a push, or the reply to another command
		}
		if r.Error != nil {
			return res, r.Error
		}
		res.found = true
	}
	return res, nil
}

// cfPong answers a server ping.
var cfPong = []byte("{}")

// cfExpect reads frames until the reply to command id arrives, answering
// the server's pings and skipping pushes on the way.
func (c *conn) cfExpect(ctx context.Context, id uint32) error {
	for range 100000 { // bounded: a subscribe into a busy room may see many join pushes
		f, err := c.readFrame(ctx)
		if err != nil {
			return fmt.Errorf("waiting for the reply to command %d: %w", id, err)
		}
		res, err := cfScan(f, id)
		if err != nil {
			return fmt.Errorf("waiting for the reply to command %d: %w", id, err)
		}
		for range res.pings {
			if err := c.ws.Write(ctx, websocket.MessageText, cfPong); err != nil {
				return fmt.Errorf("answer ping: %w", err)
			}
		}
		if res.found {
			return nil
		}
	}
	return fmt.Errorf("waiting for the reply to command %d: too many other replies", id)
}

// cfHandshake sends connect, waits for its reply, subscribes to room's
// channel and waits for that reply: Centrifugo's connect + join.
func (c *conn) cfHandshake(ctx context.Context, t *target, i int) error {
	if err := c.ws.Write(ctx, websocket.MessageText, cfConnectFrame(t.cfSecret, i)); err != nil {
		return fmt.Errorf("send connect: %w", err)
	}
	if err := c.cfExpect(ctx, cfConnectID); err != nil {
		return err
	}
	if err := c.ws.Write(ctx, websocket.MessageText, cfSubscribeFrame(t.cfChannel(c.room))); err != nil {
		return fmt.Errorf("send subscribe: %w", err)
	}
	return c.cfExpect(ctx, cfSubscribeID)
}

// cfIdle handles a frame an idle Centrifugo client reads after joining:
// it answers the server's pings, which Centrifugo requires within
// pong_timeout (8 s by default) of each ping (every 25 s).
func (c *conn) cfIdle(ctx context.Context, frame []byte) error {
	res, err := cfScan(frame, 0)
	if err != nil {
		return err
	}
	for range res.pings {
		if err := c.ws.Write(ctx, websocket.MessageText, cfPong); err != nil {
			return err
		}
	}
	return nil
}

// cfChannel is room's Centrifugo channel: in t's namespace, if any.
func (t *target) cfChannel(room string) string {
	if t.cfNamespace == "" {
		return room
	}
	return t.cfNamespace + ":" + room
}
