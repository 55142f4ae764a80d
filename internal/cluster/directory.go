package cluster

import (
	"context"
	_ "embed"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"
	"github.com/redis/rueidis"
)

var (
	//go:embed lua/directory.lua
	directoryLua    string
	directoryScript = rueidis.NewLuaScript(directoryLua)
)

// Directory is room.Directory on Redis: a hash per user (prefix:user:ID)
// says the user is connected on some node or dropped less than the
// resume window ago, and holds the issue time of its newest resume token,
// so that only that token (SPEC §8) resumes the user, on every node. A
// node refreshes its connected users' records every refresh interval;
// when it dies, they lapse one window after its last refresh, as a drop
// would. A resume publishes a notice on prefix:users, on which every
// node's directory listens, so that the node holding the user's older
// connection closes it.
//
// Goroutines: run (started by NewDirectory, ended by Close) writes the
// records; listen (likewise) receives the notices and calls the watcher.
// Online and Offline only record and wake run.
type Directory struct {
	st      *Store
	node    string // this node's ID in the records and notices
	window  time.Duration
	refresh time.Duration
	overlap time.Duration // the registry's, for a token renewed here

	mu           sync.Mutex       // guards the fields below
	online       map[string]int64 // users connected here → their newest token's issue time (Unix ms)
	peak         int              // online's size at its largest, to shrink it (see compact in internal/room)
	changes      map[string]int64 // user → issue time (online), or -1 (offline), not yet written
	replaced     func(string, time.Time)
	disconnected func(string)
	closed       bool
	wake         chan struct{}
	done         chan struct{}

	stopListen context.CancelFunc
	listening  chan struct{} // closed when listen has ended
}

// NewDirectory starts a directory whose dropped users stay known for
// window (the registry's resume window).
func NewDirectory(st *Store, window time.Duration) *Directory {
	d := &Directory{
		st:        st,
		node:      gonanoid.Must(12),
		window:    window,
		refresh:   30 * time.Second,
		overlap:   min(30*time.Second, window/4),
		online:    make(map[string]int64),
		changes:   make(map[string]int64),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		listening: make(chan struct{}),
	}
	var ctx context.Context
	ctx, d.stopListen = context.WithCancel(context.Background())
	go d.run()
	go d.listen(ctx)
	return d
}

func (d *Directory) key(userID string) string { return d.st.prefix + ":user:" + userID }
func (d *Directory) channel() string          { return d.st.prefix + ":users" }

// connectedTTL is the lifetime of a connected user's record: two
// refreshes and a window.
func (d *Directory) connectedTTL() string { return ms(d.window + 2*d.refresh) }

func ms(t time.Duration) string { return strconv.FormatInt(t.Milliseconds(), 10) }

// Online implements room.Directory.
func (d *Directory) Online(userID string, issued time.Time) {
	d.record(userID, issued.UnixMilli())
}

// Offline implements room.Directory.
func (d *Directory) Offline(userID string) { d.record(userID, -1) }

func (d *Directory) record(userID string, issued int64) {
	d.mu.Lock()
	if issued >= 0 {
		d.online[userID] = issued
		d.peak = max(d.peak, len(d.online))
	} else {
		delete(d.online, userID)
		if len(d.online) < d.peak/4 {
			d.online, d.peak = maps.Collect(maps.All(d.online)), len(d.online)
		}
	}
	d.changes[userID] = issued
	d.mu.Unlock()
	signal(d.wake)
}

// Resume implements room.Directory. Besides the user's newest token and
// the one it replaced (within overlap), it takes a token newer than any
// the record knows, and, when there is no record, one issued less than
// the window ago, writing the record back: Redis lost the write that
// made it the newest, or the whole record (a failover to a replica that
// had not got it), and such a token is the client's newest, not a
// replay. Only a user without a record and a token older than the window
// is unknown.
func (d *Directory) Resume(ctx context.Context, userID string, issued, next time.Time, overlap time.Duration) (known, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, d.st.timeout)
	defer cancel()
	n, err := directoryScript.Exec(ctx, d.st.client, []string{d.key(userID)}, []string{
		"resume", d.node, strconv.FormatInt(next.UnixMilli(), 10),
		strconv.FormatInt(issued.UnixMilli(), 10), strconv.FormatInt(next.UnixMilli(), 10),
		d.connectedTTL(), ms(overlap), d.channel(), userID, ms(d.window),
	}).AsInt64()
	if err != nil {
		return false, false, err
	}
	return n > 0, n == 2, nil
}

// disconnectNotice is a notice's second line for a disconnect (SPEC §11),
// where a resume notice has its token's issue time.
const disconnectNotice = "disconnect"

// Disconnect implements room.Directory: a notice on the users channel,
// which every other node's listen takes to its watcher.
func (d *Directory) Disconnect(ctx context.Context, userID string) error {
	ctx, cancel := context.WithTimeout(ctx, d.st.timeout)
	defer cancel()
	c := d.st.client
	return c.Do(ctx, c.B().Publish().Channel(d.channel()).Message(userID+"\n"+disconnectNotice+"\n"+d.node).Build()).Error()
}

// WatchDisconnect implements room.Directory.
func (d *Directory) WatchDisconnect(disconnected func(userID string)) {
	d.mu.Lock()
	d.disconnected = disconnected
	d.mu.Unlock()
}

// Watch implements room.Directory.
func (d *Directory) Watch(replaced func(userID string, issued time.Time)) {
	d.mu.Lock()
	d.replaced = replaced
	d.mu.Unlock()
}

// listen receives the resume notices until Close, subscribing again
// after a lost connection. A notice lost meanwhile leaves an older
// connection open, whose token resumes nobody any more.
func (d *Directory) listen(ctx context.Context) {
	defer close(d.listening)
	c := d.st.client
	for ctx.Err() == nil {
		err := c.Receive(ctx, c.B().Subscribe().Channel(d.channel()).Build(), func(m rueidis.PubSubMessage) {
			user, rest, _ := strings.Cut(m.Message, "\n")
			at, node, _ := strings.Cut(rest, "\n")
			if node == d.node {
				return
			}
			d.mu.Lock()
			replaced, disconnected := d.replaced, d.disconnected
			d.mu.Unlock()
			if at == disconnectNotice {
				if disconnected != nil {
					disconnected(user)
				}
				return
			}
			issued, err := strconv.ParseInt(at, 10, 64)
			if err == nil && replaced != nil {
				replaced(user, time.UnixMilli(issued))
			}
		})
		if ctx.Err() != nil {
			return
		}
		d.st.log.Warn("redis: resume notices lost; subscribing again", "err", errString(err))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// run writes changes as they come and refreshes every online user's
// record each refresh interval (which restores one Redis lost). A
// connected user's record lives two refreshes and a window; a dropped
// one's, the window.
func (d *Directory) run() {
	defer close(d.done)
	tick := time.NewTicker(d.refresh)
	defer tick.Stop()
	for {
		var writes map[string]int64
		select {
		case <-d.wake:
			d.mu.Lock()
			if d.closed {
				d.mu.Unlock()
				return
			}
			writes = d.changes
			d.changes = make(map[string]int64)
			d.mu.Unlock()
		case <-tick.C:
			d.mu.Lock()
			writes = maps.Clone(d.online)
			d.mu.Unlock()
		}
		d.write(writes)
	}
}

func (d *Directory) write(writes map[string]int64) {
	if len(writes) == 0 {
		return
	}
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	execs := make([]rueidis.LuaExec, 0, len(writes))
	for u, issued := range writes {
		args := []string{"offline", d.node, now, ms(d.window)}
		if issued >= 0 {
			args = []string{"online", d.node, now, strconv.FormatInt(issued, 10), d.connectedTTL(), ms(d.overlap)}
		}
		execs = append(execs, rueidis.LuaExec{Keys: []string{d.key(u)}, Args: args})
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.st.timeout)
	defer cancel()
	for _, r := range directoryScript.ExecMulti(ctx, d.st.client, execs...) {
		if err := r.Error(); err != nil {
			d.st.log.Warn("redis: recording connected users failed; resumes on other nodes may give new users", "err", err)
			return
		}
	}
}

// Close stops the directory. Users connected here keep their records
// until they lapse. It returns nil.
func (d *Directory) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	signal(d.wake)
	<-d.done
	d.stopListen()
	<-d.listening
	return nil
}
