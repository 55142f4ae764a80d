package cluster

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// roomState is run's view of one subscribed room. Owned by run.
type roomState struct {
	last   int64  // last seq delivered
	lastID string // the ID of the message at last ("" when not known)
	epoch  string // the epoch of last
	// past are the epochs the room had before (the newest last, at most
	// maxPast): a message published in one of them reaches pub/sub after
	// the node has moved on, and is no reason to move back.
	past []string
	// verify is set when the pub/sub connection was lost: the room's
	// position is checked (checkRooms) before anything newer is delivered, as
	// Redis may have lost writes meanwhile.
	verify bool
	// early holds messages that came before the subscription's position
	// was known (Subscribe reads it after SUBSCRIBE is confirmed);
	// applying evSubscribe replays them.
	early   []event
	started bool // the position is known
	// served is the highest seq past last that a read of this node's
	// told a reader of (joined's lastSeq, a history page), in epoch, and
	// servedID the message ID there ("" when not known). A client skips
	// seqs it has been told of, so until the node has delivered served
	// itself, Redis must still have that message there: a seq that went
	// back below it, or another message at it, means Redis lost writes
	// that a reader saw (a failover before the replicas had them), and
	// the room gets a new epoch as when delivered messages are lost.
	served   int64
	servedID string
}

// apply runs one event on run's goroutine.
func (b *Broker) apply(states map[string]*roomState, e event) {
	switch e.kind {
	case evSubscribe:
		b.applySubscribe(states, e)
	case evForget:
		b.applyForget(states, e.room)
	case evMessage:
		b.applyMessage(states, e)
	case evServed:
		if st := states[e.room]; st != nil && st.started && e.epoch == st.epoch && e.seq > st.last && e.seq > st.served {
			st.served, st.servedID = e.seq, e.id
		}
	case evRelay:
		if st := states[e.room]; st != nil && st.started {
			b.h.Relayed(e.room, e.about, e.presence, []byte(e.body))
		}
	case evCatchUp:
		b.catchingUp = true
		fallthrough
	case evCheck:
		if b.checkRooms(states, nil) && b.catchingUp {
			b.catchingUp = false
			b.mu.Lock()
			if b.conn != nil {
				b.ready = nil
			}
			b.mu.Unlock()
		}
	}
}

// applySubscribe starts tracking a room at the position its first
// Subscribe read, replays the messages that came before it, and lets
// that Subscribe return.
func (b *Broker) applySubscribe(states map[string]*roomState, e event) {
	st := states[e.room]
	if st == nil {
		st = &roomState{}
		states[e.room] = st
	}
	if !st.started {
		st.started, st.last, st.lastID, st.epoch = true, e.seq, e.id, e.epoch
		early := st.early
		st.early = nil
		for _, m := range early {
			b.apply(states, m)
		}
	}
	close(e.applied)
}

// applyForget stops tracking room and UNSUBSCRIBEs its channel, unless a
// new Subscribe took it up again meanwhile.
func (b *Broker) applyForget(states map[string]*roomState, room string) {
	b.mu.Lock()
	_, again := b.rooms[room]
	conn := b.conn
	b.mu.Unlock()
	if again {
		return
	}
	delete(states, room)
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.st.timeout)
	conn.Do(ctx, conn.B().Unsubscribe().Channel(b.st.channel(room)).Build())
	// A new first Subscribe may have sent its SUBSCRIBE just
	// before this UNSUBSCRIBE: subscribe again (it is
	// idempotent); what came in between is filled from the
	// stream like any gap.
	b.mu.Lock()
	_, again = b.rooms[room]
	b.mu.Unlock()
	if again {
		conn.Do(ctx, conn.B().Subscribe().Channel(b.st.channel(room)).Build())
	}
	cancel()
}

// applyMessage delivers a pub/sub message in seq order: it is held until
// the room's position is known, checked against the room's epoch and
// position, and preceded by what pub/sub missed.
func (b *Broker) applyMessage(states map[string]*roomState, e event) {
	st := b.messageState(states, e)
	if st == nil || !b.currentEpoch(states, st, e) || !b.next(st, e) {
		return
	}
	m, err := decodeMessage(strconv.FormatInt(e.seq, 10), e.body)
	if err != nil {
		b.log.Error("redis pub/sub: bad message", "room", e.room, "err", err)
		return
	}
	if b.overtaken(e.room, st, m) {
		return
	}
	b.h.Deliver(m)
	st.last, st.lastID = e.seq, m.ID
}

// messageState returns the state of e's room, or nil when e is not to be
// applied now: the room is not subscribed (any more), or its position is
// not known yet, and e waits in early for it.
func (b *Broker) messageState(states map[string]*roomState, e event) *roomState {
	st := states[e.room]
	if st == nil {
		b.mu.Lock()
		_, subscribing := b.rooms[e.room]
		b.mu.Unlock()
		if !subscribing {
			return nil // not subscribed (any more)
		}
		st = &roomState{}
		states[e.room] = st
	}
	if !st.started {
		st.early = append(st.early, e)
		return nil
	}
	return st
}

// currentEpoch reports whether e belongs to st's epoch, moving the room
// to e's epoch when its history was lost or replaced, and checking the
// room's position first when pub/sub has come back since the last
// message.
func (b *Broker) currentEpoch(states map[string]*roomState, st *roomState, e event) bool {
	if e.epoch != st.epoch {
		if slices.Contains(st.past, e.epoch) {
			return false // published before the room moved on; the stream has it
		}
		// The room's history was lost or replaced: its members start
		// over from the new epoch.
		b.reset(e.room, st, e.epoch)
	}
	if st.verify {
		// The first message since pub/sub came back: Redis may have
		// lost writes meanwhile, and this one may stand in the place
		// of one delivered already (checkRooms).
		if !b.checkRooms(states, []string{e.room}) {
			return false // the check failed: the next one fills
		}
		if e.epoch != st.epoch {
			return false // the room moved on: the stream has the message
		}
	}
	return true
}

// next reports whether e is the room's next seq, filling the gap from
// the stream first when pub/sub missed messages before it. A repeat is
// dropped, unless it shows that Redis lost the message delivered at its
// seq.
func (b *Broker) next(st *roomState, e event) bool {
	switch {
	case e.seq < st.last:
		return false // a repeat
	case e.seq == st.last:
		// A repeat, unless Redis lost the message at st.last and
		// this one took its seq (SPEC §8: loss is found by identity).
		if id := messageID(e.body); st.lastID != "" && id != "" && id != st.lastID {
			b.log.Warn("room's message at its last seq changed in Redis: messages delivered here were lost by Redis (a failover or a restart); the room starts a new epoch", "room", e.room, "seq", st.last)
			b.rotate(e.room, st)
		}
		return false
	case e.seq > st.last+1:
		b.fill(e.room, st, e.seq-1)
		if e.seq != st.last+1 {
			return false // the fill failed or moved on; the next check retries
		}
	}
	return true
}

// maxPast bounds roomState.past.
const maxPast = 4

// reset starts a room over at a new epoch.
func (b *Broker) reset(room string, st *roomState, epoch string) {
	b.log.Warn("room has a new epoch: its history in Redis was lost or replaced", "room", room, "old", st.epoch, "new", epoch)
	if st.epoch != "" {
		st.past = append(st.past, st.epoch)
		if len(st.past) > maxPast {
			st.past = slices.Delete(st.past, 0, len(st.past)-maxPast)
		}
	}
	st.epoch, st.last, st.lastID = epoch, 0, ""
	st.served, st.servedID = 0, ""
	// The room's presence may have gone with its history (a FLUSHALL):
	// the new joined lists this node's members, and counts them, only
	// once they are back.
	b.st.mu.Lock()
	reassert := b.st.reassert
	b.st.mu.Unlock()
	if reassert != nil {
		reassert(room)
	}
	b.h.Reset(room, epoch)
}

// messageID reads the ID of a stored message's JSON without decoding the
// rest: the JSON starts with it (protocol.Message).
func messageID(body string) string {
	rest, ok := strings.CutPrefix(body, `{"id":"`)
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, `"`)
	return id
}

// fill delivers room's messages from its stream, from st.last+1 up to
// through (0: everything there is). It stops at the first failure. Its
// first read starts at st.last itself, to compare the message there with
// the one delivered (SPEC §8: lost writes are found by identity): another
// one, or none while the stream keeps what is around it, means Redis lost
// acknowledged writes, and the room gets a new epoch (rotate).
func (b *Broker) fill(room string, st *roomState, through int64) {
	verified := st.last == 0 || st.lastID == ""
	for through == 0 || st.last < through {
		info, msgs, err := b.fillPage(room, st, through, verified)
		if err != nil {
			b.log.Warn("redis: filling a gap failed; retrying at the next check", "room", room, "err", err)
			return
		}
		if info.Epoch != st.epoch {
			b.reset(room, st, info.Epoch)
			verified = true
			continue
		}
		if !verified {
			verified = true
			var ok bool
			if msgs, ok = b.verifyLast(room, st, info, msgs); !ok {
				return
			}
		}
		if !b.deliverFilled(room, st, msgs) {
			return
		}
		if len(msgs) == 0 {
			b.fillEnd(room, st, info, through)
			return
		}
	}
}

// fillPage reads the next page of room's stream for fill: after st.last
// (from st.last itself while the message there is not verified), up to
// through.
func (b *Broker) fillPage(room string, st *roomState, through int64, verified bool) (store.RoomInfo, []protocol.Message, error) {
	q := store.Query{After: st.last, Limit: 500}
	if !verified {
		q.After = st.last - 1
	}
	if through > 0 {
		q.Before = through + 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.st.timeout)
	defer cancel()
	return b.st.Page(ctx, room, q)
}

// verifyLast compares the message at st.last in a page read from st.last
// itself with the one delivered, and returns the page without it. It
// reports false, having rotated the room's epoch, when the message there
// is another one or is gone while retention keeps st.last.
func (b *Broker) verifyLast(room string, st *roomState, info store.RoomInfo, msgs []protocol.Message) ([]protocol.Message, bool) {
	switch {
	case len(msgs) > 0 && msgs[0].Seq == st.last:
		if msgs[0].ID != st.lastID {
			b.log.Warn("room's message at the last seq delivered changed in Redis: messages delivered here were lost by Redis (a failover or a restart); the room starts a new epoch", "room", room, "seq", st.last)
			b.rotate(room, st)
			return msgs, false
		}
		msgs = msgs[1:]
	case info.FirstSeq > 0 && info.FirstSeq <= st.last:
		// Retention keeps st.last, and it is gone.
		b.log.Warn("room's message at the last seq delivered is gone from Redis: messages delivered here were lost by Redis (a failover or a restart); the room starts a new epoch", "room", room, "seq", st.last)
		b.rotate(room, st)
		return msgs, false
	}
	return msgs, true
}

// deliverFilled delivers msgs, read from room's stream, in order. It
// reports false when one of them overtook a seq a reader was told of
// (the room's epoch is rotated then).
func (b *Broker) deliverFilled(room string, st *roomState, msgs []protocol.Message) bool {
	if len(msgs) > 0 && msgs[0].Seq != st.last+1 {
		// Retention dropped what was missed: deliver from what is kept.
		b.log.Warn("redis: messages missed on pub/sub are gone from the stream", "room", room, "from", st.last+1, "to", msgs[0].Seq-1)
	}
	for _, m := range msgs {
		if b.overtaken(room, st, m) {
			return false
		}
		b.h.Deliver(m)
		st.last, st.lastID = m.Seq, m.ID
	}
	b.fills.Add(uint64(len(msgs)))
	return true
}

// fillEnd is fill's last step, once the stream has nothing more after
// st.last: a seq that went back rotates the room's epoch, and seqs up to
// through (or the room's last) that are not stored are skipped.
func (b *Broker) fillEnd(room string, st *roomState, info store.RoomInfo, through int64) {
	target := through
	if target == 0 {
		target = info.LastSeq
	}
	switch {
	case info.LastSeq < st.last:
		b.rotate(room, st)
	case target > st.last && info.LastSeq >= target:
		// The messages missed are not kept (a room whose policy
		// stores nothing, SPEC §9, or retention dropped them):
		// there is nothing to deliver for them, and later ones
		// must not wait for them.
		b.log.Warn("redis: messages missed on pub/sub are not stored; going on without them", "room", room, "from", st.last+1, "to", target)
		st.last, st.lastID = target, ""
	}
}

// overtaken reports whether m, about to be delivered, stands at the seq
// a reader was told of (served) but is another message than the one it
// was told of: Redis lost that one and m took its seq. It rotates the
// room's epoch then (SPEC §8), which delivers the new epoch's history.
func (b *Broker) overtaken(room string, st *roomState, m protocol.Message) bool {
	if m.Seq != st.served || st.servedID == "" || m.ID == st.servedID {
		return false
	}
	b.log.Warn("room's message at a seq a reader was told of changed in Redis: writes it saw were lost", "room", room, "seq", m.Seq)
	b.rotate(room, st)
	return true
}

// rotate gives a room that lost acknowledged writes (its seq went
// backwards, or the message at a seq delivered changed: an AOF that lost
// its last second, a failover to a replica that lagged) a new epoch, so
// that clients start over instead of taking new messages for ones they
// saw; it is what an empty Redis does to every room. The script rotates
// only if the room still has the epoch this node saw, so that the nodes
// that notice agree on one new epoch.
func (b *Broker) rotate(room string, st *roomState) {
	ctx, cancel := context.WithTimeout(context.Background(), b.st.timeout)
	defer cancel()
	epoch, err := rotateScript.Exec(ctx, b.st.client, []string{b.st.metaKey(room)}, []string{st.epoch, newEpoch()}).ToString()
	if err != nil {
		b.log.Warn("redis: rotating an epoch failed", "room", room, "err", err)
		return
	}
	b.log.Warn("room lost acknowledged writes in Redis; new epoch", "room", room, "seen", st.last)
	b.reset(room, st, epoch)
	b.fill(room, st, 0)
}

// recreate answers a room that has no keys any more while this node has
// members there (a FLUSHALL, a Redis restart without persistence): as a
// join would, it gives the room keys and a new epoch, or takes those
// another node or a write gave it first, and the members start over.
func (b *Broker) recreate(room string, st *roomState) {
	ctx, cancel := context.WithTimeout(context.Background(), b.st.timeout)
	p, err := b.st.join(ctx, room)
	cancel()
	if err != nil {
		b.log.Warn("redis: recreating a lost room failed; retrying at the next check", "room", room, "err", err)
		return
	}
	if p.epoch != st.epoch {
		b.reset(room, st, p.epoch)
		b.fill(room, st, 0)
	}
}

// checkRooms compares rooms' positions (every room when rooms is nil) with
// Redis, one pipeline of position.lua per 500 rooms, and acts on what it
// finds: a room without keys is recreated, another epoch is taken, a
// message at the last seq delivered that is not the one delivered (or
// gone) rotates the epoch, and what pub/sub lost is filled. Each check
// also keeps the room's keys alive while the node has members there. It
// reports whether every room was checked.
func (b *Broker) checkRooms(states map[string]*roomState, rooms []string) bool {
	if rooms == nil {
		rooms = make([]string, 0, len(states))
		for room, st := range states {
			if st.started {
				rooms = append(rooms, room)
			}
		}
	}
	failed := false
	execs := make([]rueidis.LuaExec, 0, min(len(rooms), 500))
	for i := 0; i < len(rooms); i += 500 {
		j := min(i+500, len(rooms))
		execs = execs[:0]
		for _, room := range rooms[i:j] {
			execs = append(execs, b.st.positionExec(room, false, states[room].last))
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.st.timeout)
		res := positionScript.ExecMulti(ctx, b.st.client, execs...)
		cancel()
		for k, r := range res {
			room := rooms[i+k]
			st := states[room]
			p, err := parsePosition(r)
			if err != nil {
				failed = true
				continue
			}
			st.verify = false
			switch {
			case p.epoch == "":
				b.recreate(room, st)
			case p.epoch != st.epoch:
				b.reset(room, st, p.epoch)
				b.fill(room, st, 0)
			case st.last > 0 && st.lastID != "" && p.id != "" && p.id != st.lastID:
				b.log.Warn("room's message at the last seq delivered changed in Redis: messages delivered here were lost by Redis (a failover or a restart); the room starts a new epoch", "room", room, "seq", st.last)
				b.rotate(room, st)
			case st.last > 0 && st.lastID != "" && p.id == "" && p.head > 0 && p.head <= st.last:
				b.log.Warn("room's message at the last seq delivered is gone from Redis: messages delivered here were lost by Redis (a failover or a restart); the room starts a new epoch", "room", room, "seq", st.last)
				b.rotate(room, st)
			case p.last < st.last:
				b.rotate(room, st)
			case st.served > st.last && p.last < st.served:
				b.log.Warn("room's seq went back below one a reader was told of: writes it saw were lost", "room", room, "seq", st.served)
				b.rotate(room, st)
			case p.last > st.last:
				b.fill(room, st, p.last)
			case st.lastID == "":
				st.lastID = p.id
			}
		}
	}
	return !failed
}
