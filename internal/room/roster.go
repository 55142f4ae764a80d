package room

import (
	"context"

	"github.com/roomchat/roomchat/internal/protocol"
)

// Roster is each room's members across a cluster. Its calls are I/O: the
// registry makes them without locks.
type Roster interface {
	// Add lists who in roomID and returns the count and at most max
	// members after; listed reports that who was listed already (by
	// another node, which it left without a leave: a resume there), so
	// that its join is not announced again. If who is not listed and
	// the room has capacity members across the cluster already (0: no
	// bound), Add lists nothing and reports full, with the count; the
	// check and the listing are one atomic step.
	Add(ctx context.Context, roomID string, who protocol.User, capacity, max int) (count int, members []protocol.User, listed, full bool, err error)
	// Remove takes userID out of roomID's list, if this node listed it,
	// and returns the count after; removed is false when another node
	// lists the user now (it resumed there), whose leave is not this
	// node's to announce.
	Remove(ctx context.Context, roomID, userID string) (count int, removed bool, err error)
	// List returns the count and at most max members of roomID.
	List(ctx context.Context, roomID string, max int) (count int, members []protocol.User, err error)
}

// presence returns a presence event and its encoding.
func presence(roomID, event string, who protocol.User, count int) (protocol.Presence, []byte) {
	p := protocol.Presence{RoomID: roomID, Event: event, User: who, Count: count}
	return p, protocol.Encode(protocol.TypePresence, "", p)
}

// AnnounceLeave announces, in a cluster, that who left roomID (leaving
// count members): to this node's members and, through the broker, the
// other nodes'. The roster calls it for members of a node that died, and
// for this node's members when it closes. It does not block.
func (reg *Registry) AnnounceLeave(roomID string, who protocol.User, count int) {
	p, frame := presence(roomID, protocol.PresenceLeave, who, count)
	if r := reg.lookup(roomID); r != nil {
		r.mu.Lock()
		r.announce(p, frame)
		r.mu.Unlock()
	}
	reg.broker.Relay(roomID, who.UserID, true, frame)
}

// listing is what joined says of the room's members: in a cluster, the
// roster's view (list), else the room's own.
type listing struct {
	members []protocol.User
	count   int
}

// list adds new member m to the roster and announces its join, or, for a
// member already there, reads the roster: joined's members and count.
// nil on a single node.
func (reg *Registry) list(ctx context.Context, r *Room, m *member, fresh bool) (*listing, error) {
	if reg.roster == nil {
		return nil, nil
	}
	r.mu.Lock()
	who := protocol.User{UserID: m.user.id, Name: m.name}
	listed := m.listed && !m.relist
	r.mu.Unlock()
	if !fresh && listed {
		count, members, err := reg.roster.List(ctx, r.id, reg.limits.MaxMembers)
		if err != nil {
			return nil, reg.storeError("list members", err)
		}
		return &listing{members, count}, nil
	}
	// A new member needs a place within the room's capacity across the
	// cluster (enter checked this node's members only); one back from its
	// grace period keeps the place it had.
	capacity := 0
	if fresh {
		p, perr := reg.policyOf(r)
		if perr != nil {
			return nil, perr
		}
		capacity = p.Capacity
	}
	count, members, already, full, err := reg.roster.Add(ctx, r.id, who, capacity, reg.limits.MaxMembers)
	if err != nil {
		return nil, reg.storeError("add member", err)
	}
	if full {
		return nil, protocol.Errorf(protocol.CodeRoomFull, "room %s is full (%d members)", r.id, count)
	}
	// A member listed already (it resumed here from another node within
	// the grace period, or came back from its own) joins silently.
	announce := fresh && !already
	p, frame := presence(r.id, protocol.PresenceJoin, who, count)
	r.mu.Lock()
	in := r.member(m.user) == m
	if in {
		m.listed, m.relist = true, false
		if announce {
			r.announce(p, frame)
		}
	}
	r.mu.Unlock()
	if !in {
		// Gone while being listed: take the entry out again.
		if count, removed, err := reg.roster.Remove(ctx, r.id, who.UserID); err == nil && removed {
			reg.AnnounceLeave(r.id, who, count)
		}
		return nil, protocol.Errorf(protocol.CodeNotInRoom, "left room %s while joining", r.id)
	}
	if announce {
		reg.broker.Relay(r.id, who.UserID, true, frame)
	}
	return &listing{members, count}, nil
}

// Members describes a live room for the HTTP API: at most
// Limits.MaxMembers of its members, and how many it has.
//
// In a cluster they come from the roster (ctx bounds the call).
func (reg *Registry) Members(ctx context.Context, roomID string) (members []protocol.User, count int, err error) {
	if reg.roster != nil {
		count, members, err := reg.roster.List(ctx, roomID, reg.limits.MaxMembers)
		if err != nil {
			return nil, 0, reg.storeError("list members", err)
		}
		return members, count, nil
	}
	r := reg.lookup(roomID)
	if r == nil {
		return []protocol.User{}, 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.users(reg.limits.MaxMembers), len(r.members), nil
}
