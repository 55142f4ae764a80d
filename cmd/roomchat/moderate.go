package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
)

// The moderation commands (SPEC §11) are one HTTP API request each. They
// act with the room's owner key (--key, $ROOMCHAT_KEY) or, without one,
// with --token (a user token whose role in the room suffices, or an API
// key).

const moderationAuth = `
Credentials: --key KEY is the room's owner key (printed by 'roomchat create',
also $ROOMCHAT_KEY); without it --token is used: a user token whose role in
the room is moderator or owner, or an API key (also $ROOMCHAT_TOKEN).
`

const userHelp = `
USER is a userID; when no member of the room has that userID but exactly
one member present has that display name, that member is meant.
`

var redactCmd = &command{
	name:     "redact",
	synopsis: "redact ROOM SEQ [--reason R] [--key KEY | --token T]",
	help: `Removes the text of message SEQ from ROOM: the server stores a redaction
as the room's next event, members see "<name> removed message SEQ", and from
then on every page serves the message without its text. Prints the seq of
the redaction (with --json, the server's answer).
` + moderationAuth + `
Examples:
  roomchat redact abc123 42 --key "$KEY" --reason spam
`,
	setup: func(fs *flag.FlagSet) runFunc {
		m := modFlags(fs, true, false)
		return func(ctx context.Context, e *env, args []string) error { return runRedact(ctx, e, args, m) }
	},
}

var kickCmd = &command{
	name:     "kick",
	synopsis: "kick ROOM USER [--reason R] [--key KEY | --token T]",
	help: `Puts USER out of ROOM: every connection of theirs leaves it and is told
why. They may join again (ban keeps them out).
` + userHelp + moderationAuth + `
Examples:
  roomchat kick abc123 mallory --key "$KEY" --reason "calm down"
`,
	setup: func(fs *flag.FlagSet) runFunc {
		m := modFlags(fs, true, false)
		return func(ctx context.Context, e *env, args []string) error {
			return runRestrict(ctx, e, args, m, protocol.TypeKick)
		}
	},
}

var banCmd = &command{
	name:     "ban",
	synopsis: "ban ROOM USER [--for D] [--reason R] [--key KEY | --token T]",
	help: `Kicks USER out of ROOM and refuses their joins until the ban ends: after
--for D (such as 10m, 1h, 720h), or until 'roomchat unban'. A ban binds the
userID: an anonymous user who comes back without resuming is a new user.
` + userHelp + moderationAuth + `
Examples:
  roomchat ban abc123 mallory --for 1h --key "$KEY"
`,
	setup: func(fs *flag.FlagSet) runFunc {
		m := modFlags(fs, true, true)
		return func(ctx context.Context, e *env, args []string) error {
			return runRestrict(ctx, e, args, m, protocol.TypeBan)
		}
	},
}

var unbanCmd = &command{
	name:     "unban",
	synopsis: "unban ROOM USER [--key KEY | --token T]",
	help: `Lifts USER's ban in ROOM.
` + moderationAuth,
	setup: func(fs *flag.FlagSet) runFunc {
		m := modFlags(fs, false, false)
		return func(ctx context.Context, e *env, args []string) error {
			return runRestrict(ctx, e, args, m, protocol.TypeUnban)
		}
	},
}

var muteCmd = &command{
	name:     "mute",
	synopsis: "mute ROOM USER [--for D] [--reason R] [--key KEY | --token T]",
	help: `Refuses USER's messages, events and typing in ROOM until the mute ends:
after --for D (such as 10m), or until 'roomchat unmute'. They stay in the
room and are told until when.
` + userHelp + moderationAuth + `
Examples:
  roomchat mute abc123 mallory --for 10m --key "$KEY"
`,
	setup: func(fs *flag.FlagSet) runFunc {
		m := modFlags(fs, true, true)
		return func(ctx context.Context, e *env, args []string) error {
			return runRestrict(ctx, e, args, m, protocol.TypeMute)
		}
	},
}

var unmuteCmd = &command{
	name:     "unmute",
	synopsis: "unmute ROOM USER [--key KEY | --token T]",
	help: `Lifts USER's mute in ROOM.
` + moderationAuth,
	setup: func(fs *flag.FlagSet) runFunc {
		m := modFlags(fs, false, false)
		return func(ctx context.Context, e *env, args []string) error {
			return runRestrict(ctx, e, args, m, protocol.TypeUnmute)
		}
	},
}

var configureCmd = &command{
	name:     "configure",
	synopsis: "configure ROOM --post members|moderators [--key KEY | --token T]",
	help: `Switches who may post in ROOM, at once and without a restart: every
member (members), or only moderators and owners (moderators), which stops
a flood.
` + moderationAuth + `
Examples:
  roomchat configure abc123 --post moderators --key "$KEY"
`,
	setup: func(fs *flag.FlagSet) runFunc {
		m := modFlags(fs, false, false)
		post := fs.String("post", "", "who may post: `members` or moderators")
		return func(ctx context.Context, e *env, args []string) error { return runConfigure(ctx, e, args, m, *post) }
	},
}

// modOpts are a moderation command's own flags.
type modOpts struct {
	key    *string
	reason *string
	dur    *string
}

func modFlags(fs *flag.FlagSet, reason, dur bool) *modOpts {
	m := &modOpts{key: fs.String("key", os.Getenv("ROOMCHAT_KEY"), "the room's owner `KEY` (also $ROOMCHAT_KEY)")}
	if reason {
		m.reason = fs.String("reason", "", "why, for the log and the user (at most 200 characters)")
	}
	if dur {
		m.dur = fs.String("for", "", "how long, a `duration` such as 10m or 1h (default: until lifted)")
	}
	return m
}

func (m *modOpts) body() map[string]string {
	b := map[string]string{}
	if m.reason != nil && *m.reason != "" {
		b["reason"] = *m.reason
	}
	if m.dur != nil && *m.dur != "" {
		b["for"] = *m.dur
	}
	return b
}

// bearer is the credential of a moderation request: the owner key, else
// the token.
func (m *modOpts) bearer(e *env) string {
	if *m.key != "" {
		return *m.key
	}
	return e.token
}

func runRedact(ctx context.Context, e *env, args []string, m *modOpts) error {
	if len(args) != 2 {
		return usageError{"want ROOM SEQ"}
	}
	room, err := roomArg(e, args[0])
	if err != nil {
		return err
	}
	seq, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil || seq < 1 {
		return usageError{fmt.Sprintf("SEQ %q must be a message's seq, a whole number ≥ 1", args[1])}
	}
	var red protocol.Message
	raw, err := apiCall(ctx, e, m.bearer(e), http.MethodPost, "/api/rooms/"+url.PathEscape(room)+"/messages/"+strconv.FormatInt(seq, 10)+"/redact", m.body(), &red)
	if err != nil {
		return err
	}
	if e.json {
		return writeLine(e.stdout, raw)
	}
	_, err = fmt.Fprintf(e.stdout, "removed message %d from %s (redaction seq %d)\n", seq, room, red.Seq)
	return err
}

// runRestrict is kick, ban, unban, mute and unmute.
func runRestrict(ctx context.Context, e *env, args []string, m *modOpts, action string) error {
	if len(args) != 2 {
		return usageError{"want ROOM USER"}
	}
	room, err := roomArg(e, args[0])
	if err != nil {
		return err
	}
	if args[1] == "" {
		return usageError{"USER is empty"}
	}
	if m.dur != nil && *m.dur != "" {
		if d, err := time.ParseDuration(*m.dur); err != nil || d <= 0 {
			return usageError{fmt.Sprintf("--for %q: want a duration such as 10m, 1h or 720h", *m.dur)}
		}
	}
	bearer := m.bearer(e)
	user, shown := resolveUser(ctx, e, bearer, room, args[1])
	base := "/api/rooms/" + url.PathEscape(room)
	var method, path string
	body := m.body()
	switch action {
	case protocol.TypeKick:
		method, path = http.MethodPost, base+"/kick"
		body["userID"] = user
	case protocol.TypeBan, protocol.TypeMute:
		method, path = http.MethodPut, base+"/"+action+"s/"+url.PathEscape(user)
	case protocol.TypeUnban, protocol.TypeUnmute:
		method, path = http.MethodDelete, base+"/"+strings.TrimPrefix(action, "un")+"s/"+url.PathEscape(user)
	}
	var d protocol.Done
	raw, err := apiCall(ctx, e, bearer, method, path, body, &d)
	if err != nil {
		return err
	}
	if e.json {
		return writeLine(e.stdout, raw)
	}
	line := fmt.Sprintf("%s %s", pastTense[action], shown)
	switch action {
	case protocol.TypeKick:
		line += " out of " + room
	case protocol.TypeBan:
		line += " from " + room + " " + untilText(d.Until)
	case protocol.TypeMute:
		line += " in " + room + " " + untilText(d.Until)
	default:
		line += " in " + room
	}
	_, err = fmt.Fprintln(e.stdout, line)
	return err
}

var pastTense = map[string]string{
	protocol.TypeKick:   "kicked",
	protocol.TypeBan:    "banned",
	protocol.TypeUnban:  "unbanned",
	protocol.TypeMute:   "muted",
	protocol.TypeUnmute: "unmuted",
}

// untilText says when a ban or a mute ends.
func untilText(t time.Time) string {
	if t.IsZero() {
		return "until lifted"
	}
	return "until " + t.UTC().Format(time.RFC3339)
}

func runConfigure(ctx context.Context, e *env, args []string, m *modOpts, post string) error {
	if len(args) != 1 {
		return usageError{"want ROOM"}
	}
	room, err := roomArg(e, args[0])
	if err != nil {
		return err
	}
	if post != "members" && post != "moderators" {
		return usageError{"--post must be members or moderators"}
	}
	raw, err := apiCall(ctx, e, m.bearer(e), http.MethodPatch, "/api/rooms/"+url.PathEscape(room), map[string]string{"post": post}, nil)
	if err != nil {
		return err
	}
	if e.json {
		return writeLine(e.stdout, raw)
	}
	who := "every member"
	if post == "moderators" {
		who = "moderators and owners only"
	}
	_, err = fmt.Fprintf(e.stdout, "%s: %s may post\n", room, who)
	return err
}

// resolveUser turns USER into a userID: a member's userID as given, else
// the userID of the one member present with that name, else USER as
// given (a user who is not in the room may still be banned). shown names
// the user for the printed line.
func resolveUser(ctx context.Context, e *env, bearer, room, user string) (id, shown string) {
	var info struct {
		Members []protocol.User `json:"members"`
	}
	if _, err := apiCall(ctx, e, bearer, http.MethodGet, "/api/rooms/"+url.PathEscape(room), nil, &info); err != nil {
		return user, user
	}
	var named []protocol.User
	for _, u := range info.Members {
		if u.UserID == user {
			return user, user
		}
		if u.Name == user {
			named = append(named, u)
		}
	}
	if len(named) == 1 {
		return named[0].UserID, fmt.Sprintf("%s (%s)", clean(user), named[0].UserID)
	}
	return user, user
}

// apiCall makes one HTTP API request with bearer as its credential and a
// JSON body (none when body is nil), within e.timeout. It decodes a 2xx
// answer into out (when not nil) and returns its bytes; an error answer
// is the server's *protocol.Error.
func apiCall(ctx context.Context, e *env, bearer, method, path string, body any, out any) ([]byte, error) {
	base, err := client.APIURL(e.server)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base.String()+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.DeadlineExceeded
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach %s: %s", e.server, netReason(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the answer of %s: %w", e.server, err)
	}
	raw = bytes.TrimSpace(raw)
	if resp.StatusCode/100 != 2 {
		var pe protocol.Error
		if json.Unmarshal(raw, &pe) == nil && pe.Code != "" {
			return nil, &pe
		}
		return nil, fmt.Errorf("%s answered %s (is it a roomchat server?)", e.server, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s answered %s with %.80q: %w", e.server, resp.Status, raw, err)
		}
	}
	return raw, nil
}
