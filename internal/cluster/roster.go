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

	"github.com/roomchat/roomchat/internal/protocol"
)

var (
	//go:embed lua/presence.lua
	presenceLua    string
	presenceScript = rueidis.NewLuaScript(presenceLua)
)

// Presence timing (SPEC §8: a dead node's members leave every list
// within 30 s, and a Redis outage of any length announces no leave). A
// node's entries live as long as the node: it beats (a key that lapses
// nodeTTL after its last beat) every nodeBeat, and every rosterSweep a
// node evicts the entries of the nodes whose beat lapsed, in every room
// they had members in. A node sweeps only once Redis has answered its
// beats for nodeTTL without a break and found its own beat in place: by
// then every live node has beaten again after an outage, so the beats
// that lapsed while Redis was away are not taken for deaths. Every
// rosterRefresh, and at once after an outage, a node asserts its entries
// again, restoring what Redis lost.
const (
	nodeBeat      = 3 * time.Second
	nodeTTL       = 12 * time.Second
	rosterSweep   = 5 * time.Second
	rosterRefresh = 30 * time.Second
)

// Roster is room.Roster on Redis: each room's members across the cluster,
// a hash (userID → owning node and name) and their order under the room's
// hash tag. Each node keeps a beat key (prefix:node:ID), its ID in the
// set of nodes (prefix:nodes) and the set of rooms it has members in
// (prefix:node:ID:rooms), so that any node can evict a dead node's
// entries, also in rooms no live node holds, and announce their leaves
// through left.
//
// Goroutines: run (started by Start, ended by Close) beats, asserts and
// sweeps; the other methods are called by the registry without its locks.
type Roster struct {
	st    *Store
	owner string
	left  func(roomID string, u protocol.User, count int)

	mu    sync.Mutex                   // guards local, adding, started and closed
	local map[string]map[string]string // room → userID → name: the entries this node owns
	// adding counts the entries of local whose Add is on its way: an
	// assertion leaves them out, for the Add may yet be refused (the room
	// is full) and an assertion does not check capacity. Keyed by
	// room "\n" userID.
	adding  map[string]int
	started bool // Start ran: run must be waited for
	closed  bool

	// healthy is when Redis last began answering every beat, found with
	// this node's beat in place; zero while it does not. Owned by run.
	healthy time.Time

	stop chan struct{}
	done chan struct{}
}

// NewRoster returns a roster on st's Redis. It starts nothing: Start
// hands it left and starts it.
func NewRoster(st *Store) *Roster {
	return &Roster{
		st:     st,
		owner:  gonanoid.Must(12),
		local:  make(map[string]map[string]string),
		adding: make(map[string]int),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// Start starts beating, asserting this node's entries and sweeping;
// left (a room.Registry's AnnounceLeave) announces the leave of a member
// whose entry lapsed (its node died), or that Close removed, with the
// room's count after. Call it once, before the first Add; after Close it
// does nothing.
func (r *Roster) Start(left func(roomID string, u protocol.User, count int)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return
	}
	r.started = true
	r.left = left
	r.st.mu.Lock()
	r.st.reassert = r.reassert
	r.st.mu.Unlock()
	go r.run()
}

func (r *Roster) keys(room string) []string {
	return []string{r.st.prefix + ":{" + room + "}:p", r.st.prefix + ":{" + room + "}:pe"}
}

func nowMS() string { return strconv.FormatInt(time.Now().UnixMilli(), 10) }

// Keys of the nodes' liveness, outside any room's hash tag.
func (r *Roster) nodesKey() string            { return r.st.prefix + ":nodes" }
func (r *Roster) beatKey(node string) string  { return r.st.prefix + ":node:" + node }
func (r *Roster) roomsKey(node string) string { return r.st.prefix + ":node:" + node + ":rooms" }

// Add implements room.Roster: u joins room's list unless the room has
// capacity members already (0: no bound) and u is not among them; it
// returns the count and at most max members after, whether u was listed
// already, and full when it was refused. The check and the entry are one
// script: two nodes cannot both take the last place.
func (r *Roster) Add(ctx context.Context, room string, u protocol.User, capacity, max int) (count int, members []protocol.User, listed, full bool, err error) {
	r.mu.Lock()
	if r.local[room] == nil {
		r.local[room] = make(map[string]string)
	}
	r.local[room][u.UserID] = u.Name
	pending := room + "\n" + u.UserID
	r.adding[pending]++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.adding[pending]--; r.adding[pending] <= 0 {
			delete(r.adding, pending)
		}
		r.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, r.st.timeout)
	defer cancel()
	// The room goes into this node's set first, so that the entry is
	// never where an eviction of this node would not look.
	c := r.st.client
	err = c.Do(ctx, c.B().Sadd().Key(r.roomsKey(r.owner)).Member(room).Build()).Error()
	var arr []rueidis.RedisMessage
	if err == nil {
		arr, err = presenceScript.Exec(ctx, c, r.keys(room),
			[]string{"add", nowMS(), u.UserID, r.owner + "\n" + u.Name, strconv.Itoa(max), strconv.Itoa(capacity)}).ToArray()
	}
	if err != nil || len(arr) != 5 {
		r.forget(room, u.UserID)
		return 0, nil, false, false, unavailable(errOr(err, "presence add"))
	}
	count, members = parseList(arr[0], arr[1])
	was, _ := arr[3].AsInt64()
	refused, _ := arr[4].AsInt64()
	if refused == 1 {
		// Nothing was written; the room stays in this node's set until
		// the node's last entry there goes (an eviction finds nothing).
		r.forget(room, u.UserID)
		return count, nil, false, true, nil
	}
	return count, members, was == 1, false, nil
}

// Remove implements room.Roster: userID leaves room's list, if this node
// owns its entry; it returns the count after.
func (r *Roster) Remove(ctx context.Context, room, userID string) (int, bool, error) {
	emptied := r.forget(room, userID)
	ctx, cancel := context.WithTimeout(ctx, r.st.timeout)
	defer cancel()
	if emptied {
		// Best effort: a room left in the set costs an eviction nothing.
		r.st.client.Do(ctx, r.st.client.B().Srem().Key(r.roomsKey(r.owner)).Member(room).Build())
	}
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

// forget drops userID's entry in room from this node's; it reports
// whether that left the node no entry in room.
func (r *Roster) forget(room, userID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := r.local[room]; m != nil {
		delete(m, userID)
		if len(m) == 0 {
			delete(r.local, room)
			return true
		}
	}
	return false
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

// run beats, asserts this node's entries and sweeps until Close.
func (r *Roster) run() {
	defer close(r.done)
	r.beat()
	beat := time.NewTicker(nodeBeat)
	defer beat.Stop()
	refresh := time.NewTicker(rosterRefresh)
	defer refresh.Stop()
	sweep := time.NewTicker(rosterSweep)
	defer sweep.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-beat.C:
			r.beat()
		case <-refresh.C:
			r.refresh(r.snapshot(false))
		case <-sweep.C:
			if !r.healthy.IsZero() && time.Since(r.healthy) >= nodeTTL {
				r.sweep()
			}
		}
	}
}

// beat renews this node's beat key and its place in the set of nodes. A
// beat that fails, or finds the key gone (it lapsed while Redis was away,
// or Redis lost it), starts the wait before the next sweep over, and the
// latter asserts every entry of this node's again at once: after an
// outage, before any sweep.
func (r *Roster) beat() {
	c := r.st.client
	ctx, cancel := context.WithTimeout(context.Background(), r.st.timeout)
	res := c.DoMulti(ctx,
		c.B().Set().Key(r.beatKey(r.owner)).Value("1").Get().Px(nodeTTL).Build(),
		c.B().Sadd().Key(r.nodesKey()).Member(r.owner).Build(),
		c.B().Pexpire().Key(r.nodesKey()).Milliseconds(time.Hour.Milliseconds()).Build())
	cancel()
	for _, x := range res[1:] {
		if err := x.Error(); err != nil {
			r.healthy = time.Time{}
			return
		}
	}
	lost := rueidis.IsRedisNil(res[0].Error())
	if err := res[0].Error(); err != nil && !lost {
		r.healthy = time.Time{}
		return
	}
	if lost || r.healthy.IsZero() {
		if !r.refresh(r.snapshot(false)) {
			r.healthy = time.Time{}
			return
		}
		r.healthy = time.Now()
	}
}

// snapshot copies the rooms and entries this node owns, with the ones
// whose Add is on its way if all.
func (r *Roster) snapshot(all bool) map[string]map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]map[string]string, len(r.local))
	for room := range r.local {
		if users := r.entries(room, all); len(users) > 0 {
			out[room] = users
		}
	}
	return out
}

// entries copies this node's entries in room, with the ones whose Add is
// on its way if all. Guarded by r.mu.
func (r *Roster) entries(room string, all bool) map[string]string {
	users := maps.Clone(r.local[room])
	if !all {
		for id := range users {
			if r.adding[room+"\n"+id] > 0 {
				delete(users, id)
			}
		}
	}
	return users
}

// refresh asserts the entries of rooms, which this node owns: the rooms
// go into this node's set, then one script per room, all in one
// pipeline. An entry removed meanwhile (Remove, while the pipeline was on
// its way) is removed again, so that it cannot come back. It reports
// whether every room was asserted.
func (r *Roster) refresh(rooms map[string]map[string]string) bool {
	if len(rooms) == 0 {
		return true
	}
	execs := make([]rueidis.LuaExec, 0, len(rooms))
	names := make([]string, 0, len(rooms))
	for room, users := range rooms {
		args := []string{"refresh", nowMS()}
		for id, name := range users {
			args = append(args, id, r.owner+"\n"+name)
		}
		execs = append(execs, rueidis.LuaExec{Keys: r.keys(room), Args: args})
		names = append(names, room)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*r.st.timeout)
	defer cancel()
	c := r.st.client
	if err := c.Do(ctx, c.B().Sadd().Key(r.roomsKey(r.owner)).Member(names...).Build()).Error(); err != nil {
		r.st.log.Warn("redis: asserting presence failed", "err", err)
		return false
	}
	ok := true
	for _, res := range presenceScript.ExecMulti(ctx, c, execs...) {
		if err := res.Error(); err != nil {
			r.st.log.Warn("redis: asserting presence failed", "err", err)
			ok = false
			break
		}
	}
	now := r.snapshot(true)
	var undo []rueidis.LuaExec
	for room, users := range rooms {
		for id := range users {
			if _, still := now[room][id]; !still {
				undo = append(undo, rueidis.LuaExec{Keys: r.keys(room), Args: []string{"remove", nowMS(), id, r.owner}})
			}
		}
	}
	if len(undo) > 0 {
		presenceScript.ExecMulti(ctx, c, undo...)
	}
	return ok
}

// reassert asserts this node's entries in room at once: the room starts
// over at a new epoch (Broker.reset), maybe because Redis lost its keys,
// and the new joined must list its members.
func (r *Roster) reassert(room string) {
	r.mu.Lock()
	users := r.entries(room, false)
	r.mu.Unlock()
	if len(users) > 0 {
		r.refresh(map[string]map[string]string{room: users})
	}
}

// sweep evicts the entries of every node whose beat lapsed, in every room
// it had members in, and announces their leaves; then forgets the node.
func (r *Roster) sweep() {
	c := r.st.client
	ctx, cancel := context.WithTimeout(context.Background(), 4*r.st.timeout)
	defer cancel()
	nodes, err := c.Do(ctx, c.B().Smembers().Key(r.nodesKey()).Build()).AsStrSlice()
	if err != nil {
		return
	}
	for _, node := range nodes {
		if node == r.owner {
			continue
		}
		n, err := c.Do(ctx, c.B().Exists().Key(r.beatKey(node)).Build()).AsInt64()
		if err != nil {
			return
		}
		if n == 1 {
			continue
		}
		rooms, err := c.Do(ctx, c.B().Smembers().Key(r.roomsKey(node)).Build()).AsStrSlice()
		if err != nil {
			return
		}
		execs := make([]rueidis.LuaExec, 0, len(rooms))
		for _, room := range rooms {
			execs = append(execs, rueidis.LuaExec{Keys: r.keys(room), Args: []string{"evict", nowMS(), node}})
		}
		failed := false
		for i, res := range presenceScript.ExecMulti(ctx, c, execs...) {
			arr, err := res.ToArray()
			if err != nil || len(arr) != 2 {
				failed = true
				continue
			}
			count, gone := parseList(arr[0], arr[1])
			for _, g := range gone {
				r.left(rooms[i], g, count)
			}
		}
		if failed {
			return // the next sweep evicts the rest
		}
		c.DoMulti(ctx,
			c.B().Del().Key(r.roomsKey(node)).Build(),
			c.B().Srem().Key(r.nodesKey()).Member(node).Build())
		r.st.log.Info("presence: a node's beat lapsed; its members left", "node", node, "rooms", len(rooms))
	}
}

// Close stops beating and removes every entry this node owns, at once
// (a clean stop: SPEC §8), in one pipeline, announcing each leave, then
// its beat and set of rooms. If Redis cannot be reached, another node
// evicts the entries once the beat lapses. It returns nil.
func (r *Roster) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	started := r.started
	r.mu.Unlock()
	close(r.stop)
	if !started {
		return nil
	}
	<-r.done
	type entry struct{ room, id, name string }
	var entries []entry
	var execs []rueidis.LuaExec
	for room, users := range r.snapshot(true) {
		for id, name := range users {
			entries = append(entries, entry{room, id, name})
			execs = append(execs, rueidis.LuaExec{Keys: r.keys(room), Args: []string{"remove", nowMS(), id, r.owner}})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*r.st.timeout)
	defer cancel()
	defer func() {
		// Stopped: no node needs to look for this one's entries.
		c := r.st.client
		c.DoMulti(ctx,
			c.B().Srem().Key(r.nodesKey()).Member(r.owner).Build(),
			c.B().Del().Key(r.beatKey(r.owner), r.roomsKey(r.owner)).Build())
	}()
	if len(execs) == 0 {
		return nil
	}
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
	return nil
}
