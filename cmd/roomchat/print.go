package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/mattn/go-isatty"

	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
)

// typingQuiet is how long a "… is typing" notice stays valid: the web
// client repeats typing every few seconds while a key is pressed, and one
// notice per burst is enough.
const typingQuiet = 10 * time.Second

// printer writes a session's events to stdout: raw JSON lines with --json,
// otherwise "HH:MM name: text" lines and notices.
type printer struct {
	w       io.Writer
	stderr  io.Writer
	json    bool
	tty     bool // stdout is a terminal: notices are dim, typing is shown
	color   bool // ANSI dim is allowed (a terminal, and NO_COLOR unset)
	lastSeq int64
	typing  map[string]time.Time // userID → when its notice was printed
	post    string               // the room's run-time post rule as last printed ("": none)
}

func newPrinter(e *env) *printer {
	p := &printer{w: e.stdout, stderr: e.stderr, json: e.json, typing: map[string]time.Time{}}
	if f, ok := e.stdout.(*os.File); ok {
		p.tty = isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
	}
	p.color = p.tty && os.Getenv("NO_COLOR") == ""
	return p
}

// print writes one event of the session: with --json its frame as sent,
// otherwise the lines of each kind of event (messages, custom events,
// notices); an event it does not show is skipped.
func (p *printer) print(ev client.Event) error {
	for _, m := range ev.Messages() {
		p.lastSeq = max(p.lastSeq, m.Seq)
	}
	if p.json {
		return writeLine(p.w, ev.Raw)
	}
	switch {
	case ev.Joined != nil:
		return p.joined(ev)
	case ev.History != nil:
		for _, m := range ev.History.Messages {
			if err := p.message(m); err != nil {
				return err
			}
		}
	case ev.Msg != nil:
		delete(p.typing, ev.Msg.From.UserID)
		return p.message(*ev.Msg)
	case ev.Event != nil:
		return p.event(*ev.Event)
	case ev.Kicked != nil:
		p.kicked(ev.Kicked)
	case ev.Muted != nil:
		m := ev.Muted
		if m.Lifted {
			p.notice("you may post in " + m.RoomID + " again")
		} else {
			p.notice("you are muted in " + m.RoomID + " " + untilText(m.Until) + ": your messages are refused")
		}
	case ev.Configured != nil:
		c := ev.Configured
		by := clean(c.By.Name)
		if by == "" {
			by = "a moderator"
		}
		p.notice(by + " set posting in " + c.RoomID + " to " + postText(c.Post))
		p.post = c.Post
	case ev.Type == protocol.TypePresence:
		p.presence(ev)
	case ev.Type == protocol.TypeTyping:
		p.typingNotice(ev)
	case ev.Type == protocol.TypeError:
		var pe protocol.Error
		if protocol.DecodePayload(ev.Envelope, &pe) == nil {
			fmt.Fprintf(p.stderr, "roomchat: server: %s (%s)\n", pe.Message, pe.Code)
		}
	}
	return nil
}

// joined prints a joined event: notices for a lost history, the join
// itself (not on a reconnect) and missed messages, then the history.
func (p *printer) joined(ev client.Event) error {
	j := ev.Joined
	if ev.EpochChanged {
		p.notice("the server lost this room's stored history; message numbers restarted")
	}
	if !ev.Reconnected {
		p.notice(fmt.Sprintf("joined %s as %s · %d here", j.RoomID, clean(j.You.Name), j.Count))
	}
	if j.Truncated {
		p.notice("some earlier messages are no longer stored and were missed")
	}
	if p.post != j.Post {
		// The room's post rule in force (SPEC §9, §11): lines typed now
		// are refused, so say it before they are (once, not again on
		// each reconnect).
		switch j.Post {
		case "moderators":
			p.notice("posting in " + j.RoomID + " is set to " + postText(j.Post) + ": members' messages are refused")
		case "api":
			p.notice(j.RoomID + " is read-only here: only the server's HTTP API posts to it")
		}
	}
	p.post = j.Post
	for _, m := range j.History {
		if err := p.message(m); err != nil {
			return err
		}
	}
	return nil
}

// postText words a room's post rule for a notice.
func postText(post string) string {
	switch post {
	case "moderators":
		return "moderators only"
	case "members":
		return "every member"
	}
	return clean(post)
}

// kicked prints the notice of a kick or a ban (SPEC §11): the session
// ends after it, and roomchat exits saying why.
func (p *printer) kicked(k *protocol.Kicked) {
	what := "you were kicked out of " + k.RoomID
	if k.Banned {
		what = "you were banned from " + k.RoomID + " " + untilText(k.Until)
	}
	if k.By.Name != "" {
		what += " by " + clean(k.By.Name)
	}
	if k.Reason != "" {
		what += ": " + clean(k.Reason)
	}
	p.notice(what)
}

// presence prints "name joined · N here" or "name left · N here"; a user
// who left is no longer typing. A payload that does not decode is skipped.
func (p *printer) presence(ev client.Event) {
	var pr protocol.Presence
	if protocol.DecodePayload(ev.Envelope, &pr) != nil {
		return
	}
	verb := "joined"
	if pr.Event == protocol.PresenceLeave {
		verb = "left"
		delete(p.typing, pr.User.UserID)
	}
	p.notice(fmt.Sprintf("%s %s · %d here", clean(pr.User.Name), verb, pr.Count))
}

// typingNotice prints "name is typing…" on a terminal, at most once per
// typingQuiet for each user.
func (p *printer) typingNotice(ev client.Event) {
	if !p.tty {
		return // a stream of typing lines is noise in a file or pipe
	}
	var t protocol.Typing
	if protocol.DecodePayload(ev.Envelope, &t) != nil {
		return
	}
	if at, ok := p.typing[t.User.UserID]; ok && time.Since(at) < typingQuiet {
		return
	}
	p.typing[t.User.UserID] = time.Now()
	p.notice(clean(t.User.Name) + " is typing…")
}

// message prints a chat message as "HH:MM name: text"; a redaction
// (SPEC §11) as a notice "name removed message SEQ"; a message whose text
// a redaction removed as "HH:MM name: (removed by a moderator)" or, when
// its author removed it, "(removed)".
func (p *printer) message(m protocol.Message) error {
	if m.Redacts != 0 {
		p.notice(fmt.Sprintf("%s removed message %d", clean(m.From.Name), m.Redacts))
		return nil
	}
	text := clean(m.Message)
	if r := m.Redacted; r != nil {
		text = "(removed by a moderator)"
		if r.By.UserID != "" && r.By.UserID == m.From.UserID {
			text = "(removed)"
		}
	}
	_, err := fmt.Fprintf(p.w, "%s %s: %s\n", m.TS.Local().Format("15:04"), clean(m.From.Name), text)
	return err
}

// event prints a custom event as "* alice reaction {"emoji":"👍"}": the
// sender's name (for an event posted through the HTTP API, which has no
// sender, "server"), the event's name and its data as compact JSON, left
// out when null.
func (p *printer) event(e protocol.Event) error {
	from := e.From.Name
	if from == "" {
		from = "server"
	}
	line := "* " + clean(from) + " " + clean(e.Name)
	if d := e.Data; len(d) > 0 && d.Kind() != 'n' {
		d = d.Clone()
		if d.Compact() != nil {
			d = e.Data // not valid JSON: shown as sent, on one line by clean
		}
		line += " " + clean(string(d))
	}
	_, err := fmt.Fprintln(p.w, line)
	return err
}

func (p *printer) notice(s string) {
	if p.color {
		fmt.Fprintf(p.w, "\x1b[2m-- %s\x1b[0m\n", s)
		return
	}
	fmt.Fprintf(p.w, "-- %s\n", s)
}

// clean makes user text safe for one line of a terminal: control
// characters (newlines, escape sequences that could restyle or rewrite
// the screen) are shown escaped, e.g. \n and \x1b.
func clean(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\t':
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case unicode.IsControl(r):
			if r < 0x100 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
