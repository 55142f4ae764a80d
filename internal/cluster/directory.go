package cluster

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// Directory is room.Directory on Redis: a key per user (prefix:u:ID)
// says the user is connected on some node or dropped less than the
// resume window ago, so that a resume token works on every node. A node
// refreshes its connected users' keys every refresh interval; when it
// dies, they lapse one window after its last refresh, as a drop would.
//
// Goroutines: run (started by NewDirectory, ended by Close) writes the
// keys; Online and Offline only record and wake it.
type Directory struct {
	st      *Store
	window  time.Duration
	refresh time.Duration

	mu      sync.Mutex          // guards the fields below
	online  map[string]struct{} // users connected here
	peak    int                 // online's size at its largest, to shrink it (see compact in internal/room)
	changes map[string]bool     // user → online, not yet written
	closed  bool
	wake    chan struct{}
	done    chan struct{}
}

// NewDirectory starts a directory whose dropped users stay known for
// window (the registry's resume window).
func NewDirectory(st *Store, window time.Duration) *Directory {
	d := &Directory{
		st:      st,
		window:  window,
		refresh: 30 * time.Second,
		online:  make(map[string]struct{}),
		changes: make(map[string]bool),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	go d.run()
	return d
}

func (d *Directory) key(userID string) string { return d.st.prefix + ":u:" + userID }

// Online implements room.Directory.
func (d *Directory) Online(userID string) { d.record(userID, true) }

// Offline implements room.Directory.
func (d *Directory) Offline(userID string) { d.record(userID, false) }

func (d *Directory) record(userID string, on bool) {
	d.mu.Lock()
	if on {
		d.online[userID] = struct{}{}
		d.peak = max(d.peak, len(d.online))
	} else {
		delete(d.online, userID)
		if len(d.online) < d.peak/4 {
			d.online, d.peak = maps.Collect(maps.All(d.online)), len(d.online)
		}
	}
	d.changes[userID] = on
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Known implements room.Directory.
func (d *Directory) Known(ctx context.Context, userID string) (bool, error) {
	d.mu.Lock()
	_, here := d.online[userID]
	d.mu.Unlock()
	if here {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.st.timeout)
	defer cancel()
	n, err := d.st.client.Do(ctx, d.st.client.B().Exists().Key(d.key(userID)).Build()).AsInt64()
	return n == 1, err
}

// run writes changes as they come and refreshes every online user's key
// each refresh interval. A connected user's key lives two refreshes and a
// window; a dropped one's, the window.
func (d *Directory) run() {
	defer close(d.done)
	tick := time.NewTicker(d.refresh)
	defer tick.Stop()
	for {
		var writes map[string]bool
		select {
		case <-d.wake:
			d.mu.Lock()
			if d.closed {
				d.mu.Unlock()
				return
			}
			writes = d.changes
			d.changes = make(map[string]bool)
			d.mu.Unlock()
		case <-tick.C:
			d.mu.Lock()
			writes = make(map[string]bool, len(d.online))
			for u := range d.online {
				writes[u] = true
			}
			d.mu.Unlock()
		}
		d.write(writes)
	}
}

func (d *Directory) write(writes map[string]bool) {
	if len(writes) == 0 {
		return
	}
	cmds := make(rueidis.Commands, 0, len(writes))
	for u, on := range writes {
		ttl := d.window
		if on {
			ttl += 2 * d.refresh
		}
		cmds = append(cmds, d.st.client.B().Set().Key(d.key(u)).Value("1").Ex(ttl).Build())
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.st.timeout)
	defer cancel()
	for _, r := range d.st.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			d.st.log.Warn("redis: recording connected users failed; resumes on other nodes may give new users", "err", err)
			return
		}
	}
}

// Close stops the directory. Users connected here keep their keys until
// they lapse. It returns nil.
func (d *Directory) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	<-d.done
	return nil
}
