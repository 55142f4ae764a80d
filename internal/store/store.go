package store

import (
	"context"
	"errors"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

// ErrUnavailable wraps every failure to read or write the store's data. The
// server answers it with store_unavailable.
var ErrUnavailable = errors.New("store unavailable")

// ErrClosed is returned (wrapping ErrUnavailable) after Close.
var ErrClosed = errors.New("store closed")

// DedupWindow is how long a (user, client id) key de-duplicates a retried
// msg (SPEC §4: 5 minutes).
const DedupWindow = 5 * time.Minute

// DoneFunc receives the outcome of an Append. stored is the message as
// kept, with its seq; dup is true when the key matched an earlier message,
// in which case stored is that earlier message and nothing new was stored.
// err is nil when stored is durable, else it wraps ErrUnavailable.
type DoneFunc func(stored protocol.Message, dup bool, err error)

// Store is the history contract. Methods are safe for concurrent use.
type Store interface {
	// Moderation keeps bans, mutes and the post rule (SPEC §11); Append
	// refuses a muted user's message (see Moderation).
	Moderation

	// Append stores m in room m.RoomID, setting m.Seq to the room's next
	// sequence number: 1 for a room's first message, then one more per
	// message, with no gap and no reuse, also across restarts. The caller
	// sets m.ID, m.From, m.Message and m.TS (UTC, milliseconds).
	//
	// When key is not empty and a message appended with the same key less
	// than DedupWindow ago exists, nothing is stored and done gets that
	// message with dup = true. Keys are kept atomically with their message.
	//
	// A message with Redacts > 0 is a redaction (SPEC §11): it is stored
	// like any other and, atomically with it, the room's message with seq
	// Redacts, if retention still keeps it and it is not redacted yet,
	// loses its text: every later read returns it with Message "" and
	// Redacted {By: m.From, Seq: m.Seq}. The text is gone from the store's
	// data, not hidden. A redaction of a message that is gone or already
	// redacted is stored and changes nothing else.
	//
	// Append does not wait for I/O. done is called exactly once, either
	// before Append returns or later from the store's own goroutine, once m
	// is durable or has failed. For one room, successful done calls happen
	// in seq order, and two Appends made in order by one goroutine get seqs
	// in that order. done must not block and must not call the Store.
	Append(m protocol.Message, key string, done DoneFunc)

	// Messages returns stored messages of room roomID, oldest first; see
	// Query. An unknown room has none.
	Messages(ctx context.Context, roomID string, q Query) ([]protocol.Message, error)

	// Room describes the stored history of roomID. An unknown room has
	// no messages and the store's epoch.
	Room(ctx context.Context, roomID string) (RoomInfo, error)

	// Page returns the room's info and the messages q selects, both read
	// from one snapshot of the store, so that the messages and LastSeq
	// agree even while Appends and retention go on.
	Page(ctx context.Context, roomID string, q Query) (RoomInfo, []protocol.Message, error)

	// Clear drops every stored message of room roomID (SPEC §11 clear
	// history). LastSeq and Epoch stay, FirstSeq becomes LastSeq+1, and
	// the next Append continues the seqs. Appends made before Clear are
	// dropped with the rest once they are stored.
	Clear(ctx context.Context, roomID string) error

	// TokenKey returns the secret that resume tokens are signed with: at
	// least 32 random bytes, created with the store's data and kept with
	// it, so that tokens stay valid across restarts for as long as the
	// history does. It does no I/O.
	TokenKey() []byte

	// Flush returns once every Append made before it was called has
	// called its done, or when ctx ends (with ctx's error).
	Flush(ctx context.Context) error

	// Ready returns nil when the store can serve reads and writes, else an
	// error wrapping ErrUnavailable. A public endpoint (/readyz) asks it,
	// so however often it is called it must cost a bounded amount of I/O,
	// never a write per call: it may answer from the outcome of recent
	// writes and probe only when that is stale (sqlite.Store.Ready).
	Ready(ctx context.Context) error

	// Close waits for pending Appends to finish (their done is called),
	// then releases the store. Appends after Close fail with ErrClosed.
	Close() error
}

// Query selects messages with After < seq < Before (a zero Before means no
// upper bound), at most Limit of them (Limit ≤ 0 means no limit). When
// Newest is set, the newest Limit of the range are returned, else the
// oldest; either way the result is oldest first.
type Query struct {
	After  int64
	Before int64
	Limit  int
	Newest bool
	// MaxBytes, when > 0, ends the result early: once the texts of the
	// messages so far (taken in the query's order, oldest or newest first)
	// add up to more than MaxBytes, no more are read. The encoded page a
	// caller cuts to a byte budget is never longer than the texts, so it
	// loses nothing, and a store reads a page's worth, not Limit messages
	// of up to 4000 characters each.
	MaxBytes int
}

// Full reports whether a result of messages whose texts add up to n bytes
// has reached q.MaxBytes.
func (q Query) Full(n int) bool { return q.MaxBytes > 0 && n > q.MaxBytes }

// RoomInfo describes a room's stored history.
type RoomInfo struct {
	// LastSeq is the seq of the room's last message, 0 if none.
	LastSeq int64
	// FirstSeq is the seq of the oldest message retention still keeps, 0
	// if none. A client whose last seen seq is below FirstSeq-1 missed
	// messages that are gone. When retention or Clear has dropped every
	// message of a room, it is LastSeq+1, so that Truncated is true for
	// every older since; a room that keeps nothing (Retention.Room) has 0.
	FirstSeq int64
	// Epoch names this incarnation of the room's history: it changes only
	// when the stored history is lost or reset, so that a seq from another
	// epoch means nothing. It is never empty: a room without messages has
	// the epoch its first message will get (the store's own).
	Epoch string
}

// Retention bounds what a store keeps.
type Retention struct {
	// MaxMessages is the most messages kept per room; 0 means 10,000.
	MaxMessages int
	// MaxAge drops messages older than this; 0 keeps them regardless of age.
	MaxAge time.Duration
	// Room, when set, gives each room its own retention (SPEC §9 history,
	// per namespace) in place of MaxMessages and MaxAge: the caller has
	// resolved every default, so maxMessages == 0 means the room keeps no
	// message at all, and maxAge == 0 keeps messages regardless of age. It
	// must be fast and must not block (a map lookup); its answer may change
	// between calls (a reload), and a store applies the answer it gets when
	// it reads or trims.
	//
	// A room that keeps nothing still numbers its messages: Append assigns
	// the next seq (no gap, no reuse, also across restarts), de-duplicates
	// by key (keeping the seq and message ID, never the text) and gives
	// done the message with its seq; Messages and Page return none,
	// RoomInfo.LastSeq counts, and FirstSeq is 0 (nothing is truncated).
	Room func(roomID string) (maxMessages int, maxAge time.Duration)
}

// For returns room roomID's retention: Room's answer when Room is set,
// else Limit() and MaxAge.
func (r Retention) For(roomID string) (maxMessages int, maxAge time.Duration) {
	if r.Room != nil {
		maxMessages, maxAge = r.Room(roomID)
		return max(maxMessages, 0), max(maxAge, 0)
	}
	return r.Limit(), r.MaxAge
}

// DefaultMaxMessages is Retention.MaxMessages's default.
const DefaultMaxMessages = 10000

// Limit returns MaxMessages with its default applied.
func (r Retention) Limit() int {
	if r.MaxMessages <= 0 {
		return DefaultMaxMessages
	}
	return r.MaxMessages
}

// Truncated reports whether a client that last saw seq since missed
// messages that retention dropped.
func (ri RoomInfo) Truncated(since int64) bool {
	return ri.FirstSeq > 0 && since < ri.FirstSeq-1
}

// DedupKey joins a user, a room and a client request id into one Append
// key (SPEC §4: the same id sent to another room is another request).
// Client ids are at most 64 characters (protocol.Limits.MaxID), so a key is
// short.
func DedupKey(userID, roomID, clientID string) string {
	if clientID == "" {
		return ""
	}
	return userID + "\x00" + roomID + "\x00" + clientID
}

// More reports whether stored messages between the end of page and
// info.LastSeq were left out of page. Stored seqs are consecutive, so that
// is the case exactly when the page ends below LastSeq.
func More(info RoomInfo, page []protocol.Message) bool {
	return len(page) > 0 && page[len(page)-1].Seq < info.LastSeq
}
