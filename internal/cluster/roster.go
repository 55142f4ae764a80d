package cluster

import (
	"context"
	_ "embed"
	"strconv"
	"strings"
	"sync"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"
	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/protocol"
)

var (
	//go:embed lua/presence.lua
	presenceLua    string
	presenceScript = rueidis.NewLuaScript(presenceLua)
)

// Presence timing: each node refreshes its members' entries every
// rosterRefresh; an entry lapses rosterTTL after its last refresh, and
// every node sweeps its rooms every rosterSweep. So the members of a node
// that died leave every list within rosterTTL + rosterSweep (25 s) of its
// last refresh, inside SPEC §8's 30 s.
const (
	rosterRefresh = 10 * time.Second
	rosterTTL     = 20 * time.Second
	rosterSweep   = 5 * time.Second
)

// Roster is room.Roster on Redis: each room's members across the cluster,
// a hash (userID → owning node and name) and a set of expiries under the
// room's hash tag. A node refreshes the entries it owns, and sweeps its
// rooms for lapsed entries (a dead node's members), whose leaves it
// announces through left.
//
// Goroutines: run (started by NewRoster, ended by Close) refreshes and
// sweeps; the other methods are called by the registry without its locks.
type Roster struct {
	st    *Store
	owner string
	left  func(roomID string, u protocol.User, count int)

	mu     sync.Mutex                   // guards local and closed
	local  map[string]map[string]string // room → userID → name: the entries this node owns
	closed bool

	stop chan struct{}
	done chan struct{}
}

// NewRoster starts a roster; left announces the leave of a member whose
// entry lapsed (its node died), with the room's count after.
func NewRoster(st *Store, left func(roomID string, u protocol.User, count int)) *Roster {
	r := &Roster{
		st:    st,
		owner: gonanoid.Must(12),
		left:  left,
		local: make(map[string]map[string]string),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go r.run()
	return r
}

func (r *Roster) keys(room string) []string {
	return []string{r.st.prefix + ":{" + room + "}:p", r.st.prefix + ":{" + room + "}:pe"}
}

func nowMS() string { return strconv.FormatInt(time.Now().UnixMilli(), 10) }

func expiry() string { return strconv.FormatInt(time.Now().Add(rosterTTL).UnixMilli(), 10) }

// Add implements room.Roster: u joins room's list; it returns the count
// and at most max members after, and announces (left) any lapsed entries
// it swept.
func (r *Roster) Add(ctx context.Context, room string, u protocol.User, max int) (int, []protocol.User, bool, error) {
	r.mu.Lock()
	if r.local[room] == nil {
		r.local[room] = make(map[string]string)
	}
	r.local[room][u.UserID] = u.Name
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.st.timeout)
	defer cancel()
	arr, err := presenceScript.Exec(ctx, r.st.client, r.keys(room),
		[]string{"add", nowMS(), u.UserID, r.owner + "\n" + u.Name, expiry(), strconv.Itoa(max)}).ToArray()
	if err != nil || len(arr) != 4 {
		r.forget(room, u.UserID)
		return 0, nil, false, unavailable(errOr(err, "presence add"))
	}
	count, members := parseList(arr[0], arr[1])
	_, gone := parseList(arr[0], arr[2])
	for _, g := range gone {
		r.left(room, g, count)
	}
	listed, _ := arr[3].AsInt64()
	return count, members, listed == 1, nil
}

// Remove implements room.Roster: userID leaves room's list, if this node
// owns its entry; it returns the count after.
func (r *Roster) Remove(ctx context.Context, room, userID string) (int, bool, error) {
	r.forget(room, userID)
	ctx, cancel := context.WithTimeout(ctx, r.st.timeout)
	defer cancel()
	arr, err := presenceScript.Exec(ctx, r.st.client, r.keys(room), []string{"remove", nowMS(), userID, r.owner}).ToArray()
	if err != nil || len(arr) != 2 {
		return 0, false, unavailable(errOr(err, "presence remove"))
	}
	count, _ := arr[0].AsInt64()
	removed, _ := arr[1].AsInt64()
	return int(count), removed == 1, nil
}

// List implements room.Roster: the count and at most max members of
// room, read-only.
func (r *Roster) List(ctx context.Context, room string, max int) (int, []protocol.User, error) {
	ctx, cancel := context.WithTimeout(ctx, r.st.timeout)
	defer cancel()
	arr, err := presenceScript.Exec(ctx, r.st.client, r.keys(room), []string{"list", nowMS(), strconv.Itoa(max)}).ToArray()
	if err != nil || len(arr) != 2 {
		return 0, nil, unavailable(errOr(err, "presence list"))
	}
	count, members := parseList(arr[0], arr[1])
	return count, members, nil
}

func (r *Roster) forget(room, userID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := r.local[room]; m != nil {
		delete(m, userID)
		if len(m) == 0 {
			delete(r.local, room)
		}
	}
}

func errOr(err error, what string) error {
	if err != nil {
		return err
	}
	return errorString(what + ": unexpected reply")
}

type errorString string

func (e errorString) Error() string { return string(e) }

// parseList reads a count and a flat {userID, owner "\n" name, …} list.
func parseList(countMsg rueidis.RedisMessage, listMsg rueidis.RedisMessage) (int, []protocol.User) {
	count, _ := countMsg.AsInt64()
	flat, _ := listMsg.AsStrSlice()
	users := make([]protocol.User, 0, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		_, name, _ := strings.Cut(flat[i+1], "\n")
		users = append(users, protocol.User{UserID: flat[i], Name: name})
	}
	return int(count), users
}

// run refreshes this node's entries and sweeps its rooms until Close.
func (r *Roster) run() {
	defer close(r.done)
	refresh := time.NewTicker(rosterRefresh)
	defer refresh.Stop()
	sweep := time.NewTicker(rosterSweep)
	defer sweep.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-refresh.C:
			r.refresh()
		case <-sweep.C:
			r.sweep()
		}
	}
}

// snapshot copies the rooms and entries this node owns.
func (r *Roster) snapshot() map[string]map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]map[string]string, len(r.local))
	for room, users := range r.local {
		m := make(map[string]string, len(users))
		for id, name := range users {
			m[id] = name
		}
		out[room] = m
	}
	return out
}

// refresh extends every entry this node owns, one script per room, all
// rooms in one pipeline.
func (r *Roster) refresh() {
	rooms := r.snapshot()
	execs := make([]rueidis.LuaExec, 0, len(rooms))
	for room, users := range rooms {
		args := []string{"refresh", nowMS(), r.owner, expiry()}
		for id, name := range users {
			args = append(args, id, r.owner+"\n"+name)
		}
		execs = append(execs, rueidis.LuaExec{Keys: r.keys(room), Args: args})
	}
	if len(execs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.st.timeout)
	defer cancel()
	for _, res := range presenceScript.ExecMulti(ctx, r.st.client, execs...) {
		if err := res.Error(); err != nil {
			r.st.log.Warn("redis: refreshing presence failed; this node's members may be taken for gone", "err", err)
			return
		}
	}
}

// sweep removes lapsed entries of this node's rooms and announces their
// leaves. The script removes each entry once, so one node announces it.
func (r *Roster) sweep() {
	rooms := r.snapshot()
	names := make([]string, 0, len(rooms))
	execs := make([]rueidis.LuaExec, 0, len(rooms))
	for room := range rooms {
		names = append(names, room)
		execs = append(execs, rueidis.LuaExec{Keys: r.keys(room), Args: []string{"sweep", nowMS()}})
	}
	if len(execs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.st.timeout)
	defer cancel()
	for i, res := range presenceScript.ExecMulti(ctx, r.st.client, execs...) {
		arr, err := res.ToArray()
		if err != nil || len(arr) != 2 {
			continue
		}
		count, gone := parseList(arr[0], arr[1])
		for _, g := range gone {
			r.left(names[i], g, count)
		}
	}
}

// Close stops refreshing and removes every entry this node owns, at once
// (a clean stop: SPEC §8), in one pipeline, announcing each leave. If
// Redis cannot be reached the entries lapse by themselves.
func (r *Roster) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	type entry struct{ room, id, name string }
	var entries []entry
	var execs []rueidis.LuaExec
	for room, users := range r.snapshot() {
		for id, name := range users {
			entries = append(entries, entry{room, id, name})
			execs = append(execs, rueidis.LuaExec{Keys: r.keys(room), Args: []string{"remove", nowMS(), id, r.owner}})
		}
	}
	if len(execs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*r.st.timeout)
	defer cancel()
	for i, res := range presenceScript.ExecMulti(ctx, r.st.client, execs...) {
		arr, err := res.ToArray()
		if err != nil || len(arr) != 2 {
			continue
		}
		count, _ := arr[0].AsInt64()
		if removed, _ := arr[1].AsInt64(); removed == 1 {
			e := entries[i]
			r.left(e.room, protocol.User{UserID: e.id, Name: e.name}, int(count))
		}
	}
}
