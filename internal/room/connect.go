package room

import (
	"context"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"
)

// Directory records, where every node can see it, which users are
// connected or dropped less than the resume window ago, and the issue
// time of each one's newest resume token, so that only the newest token
// resumes a user, on any node (SPEC §8). Online and Offline must not
// block; Resume may (it is called without locks).
type Directory interface {
	// Online records that userID has a connection here whose newest
	// token was issued at issued (a connect, or a token renewed).
	Online(userID string, issued time.Time)
	// Offline records that userID's connection here ended.
	Offline(userID string)
	// Resume decides whether a token of userID issued at issued resumes
	// it: only if it is the user's newest token, or the one the newest
	// replaced, within overlap of its replacement (or one newer than any
	// the Directory knows of: a write Redis lost). If so, next (the new
	// token's issue time) becomes the newest, and the node that holds an
	// older connection of the user is told (Watch). known is false when
	// no node knows the user: the caller falls back to its own rules.
	Resume(ctx context.Context, userID string, issued, next time.Time, overlap time.Duration) (known, ok bool, err error)
	// Watch sets what is called when userID resumed on another node with
	// a token issued at issued: a connection of the user's here, with an
	// older token, is closed.
	Watch(replaced func(userID string, issued time.Time))
	// Disconnect tells every other node to close userID's connections
	// (SPEC §11 disconnect); WatchDisconnect sets what is called here when
	// another node does.
	Disconnect(ctx context.Context, userID string) error
	WatchDisconnect(disconnected func(userID string))
}

// Disconnectable is a Conn that the registry can close for a moderator
// (SPEC §11 disconnect: 4003). Disconnected must not block.
type Disconnectable interface {
	Disconnected()
}

// Replaceable is a Conn that the registry can close when its user resumed
// on another node of a cluster (SPEC §8: the replaced connection is closed
// wherever it is). Replaced must not block.
type Replaceable interface {
	Replaced()
}

// Connect registers a new connection c. With a valid resume token (see
// token.go) it returns the token's user (resumed = true) with a fresh
// token, when that user's connection dropped less than ResumeWindow ago,
// or the token was issued before this registry started and ResumeWindow
// has not passed since (a restart or crash loses when connections ended).
// Either way the token must be younger than ResumeMaxAge. The presented
// token keeps working for tokenOverlap, for a client that lost the welcome
// carrying the new one. If the user's previous connection is still
// attached, it is returned as replaced: the caller closes it. An unknown,
// forged, superseded, too old or expired token gives a new user.
func (reg *Registry) Connect(c Conn, token string) (u *User, resumed bool, replaced Conn) {
	now := time.Now()
	if token != "" {
		if id, issued, ok := reg.signer.verify(token); ok && now.Sub(issued) <= reg.maxAge {
			// A verified identity's user is resumed only with its token
			// (ConnectAs), never by an anonymous connection.
			if u = reg.resumable(id, issued, token, now); u != nil && !u.Verified() {
				replaced = u.attach(c)
				reg.online(u)
				return u, true, replaced
			}
		}
	}
	reg.mu.Lock()
	u = reg.newUser(gonanoid.Must(), c, now)
	reg.mu.Unlock()
	reg.online(u)
	return u, false, nil
}

// ConnectAs registers connection c of a verified identity (SPEC §10):
// the user is userID (the token's sub), named name when the token fixes
// it, with grants' roles. A user already here under userID (a connection
// of the same identity, or one in its grace period) is taken over as a
// resume takes it over: its connection, if still attached, is returned as
// replaced, and the caller closes it.
func (reg *Registry) ConnectAs(c Conn, userID, name string, grants Grants) (u *User, resumed bool, replaced Conn) {
	now := time.Now()
	reg.mu.Lock()
	u = reg.users[userID]
	known := u != nil
	if !known {
		u = reg.newUser(userID, c, now)
	}
	reg.mu.Unlock()
	if known {
		replaced, resumed = u.attach(c), true
	}
	u.SetGrants(grants)
	u.mu.Lock()
	if name != "" {
		u.name, u.fixedName = name, true
	}
	u.mu.Unlock()
	reg.online(u)
	return u, resumed, replaced
}

// resumable returns the user a verified token of userID id may resume, or
// nil, and gives the user a fresh token. In a cluster the Directory
// decides: only the user's newest token (or the one it replaced, within
// the overlap) resumes it, on any node, this one included. Without a
// Directory, or when it does not know the user or cannot be asked, this
// node's rules apply: a user it knows, if token is its current one, the
// previous one within its overlap, or one issued after its current one
// (by another node the user went to); else a user it does not know, if
// the token comes from before the node started (a restart) or, when the
// Directory could not be asked (Redis away, a failover under way), was
// issued less than the resume window ago: the user came from another
// node, and a new userID would break de-duplication of its retried
// messages (SPEC §8). Once Redis answers again, the new token's record
// makes it the user's newest everywhere.
func (reg *Registry) resumable(id string, issued time.Time, token string, now time.Time) *User {
	now = time.UnixMilli(now.UnixMilli()) // a token holds milliseconds
	unasked := false
	if reg.dir != nil {
		// Asked without a lock: it is a network call.
		ctx, cancel := context.WithTimeout(reg.ctx, 2*time.Second)
		known, ok, err := reg.dir.Resume(ctx, id, issued, now, reg.overlap())
		cancel()
		switch {
		case err != nil:
			reg.log.Warn("directory", "op", "resume", "err", err)
			unasked = true
		case known && !ok:
			return nil
		case known:
			return reg.resumed(id, token, now)
		}
	}
	reg.mu.Lock()
	u := reg.users[id]
	if u != nil {
		u.mu.Lock()
		switch {
		case token == u.token:
			u.prevToken, u.prevUntil = token, now.Add(reg.overlap())
		case token == u.prevToken && now.Before(u.prevUntil):
			// Using the previous token again does not extend its
			// overlap: two clients cannot share an identity past it.
		case issued.UnixMilli() > u.issued.UnixMilli():
			// Newer than any token this node gave the user: another
			// node's, given after the user left here.
			u.prevToken, u.prevUntil = token, now.Add(reg.overlap())
		default:
			u.mu.Unlock()
			reg.mu.Unlock()
			return nil
		}
		u.token, u.issued = reg.signer.sign(id, now), now
		u.mu.Unlock()
		reg.mu.Unlock()
		return u
	}
	fresh := issued.Before(reg.started) && now.Before(reg.started.Add(reg.resumeWindow))
	reg.mu.Unlock()
	if !fresh && !(unasked && now.Sub(issued) <= reg.resumeWindow) {
		return nil
	}
	return reg.resumed(id, token, now)
}

// resumed gives user id, resumed with token, a new token issued now: the
// user this node holds, or a new one (it comes from another node, or from
// before a restart).
func (reg *Registry) resumed(id, token string, now time.Time) *User {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if u := reg.users[id]; u != nil {
		u.mu.Lock()
		if token != u.prevToken || !now.Before(u.prevUntil) {
			u.prevToken, u.prevUntil = token, now.Add(reg.overlap())
		}
		u.token, u.issued = reg.signer.sign(id, now), now
		u.returned = now
		u.mu.Unlock()
		return u
	}
	u := reg.newUser(id, nil, now)
	u.prevToken, u.prevUntil = token, now.Add(reg.overlap())
	u.returned = now
	return u
}

// replacedElsewhere is the Directory's news that userID resumed on another
// node with a token issued at issued: a connection here with an older
// token is let go as a drop would be (its rooms wait out the grace period,
// which a join there ends silently) and closed with 1000.
func (reg *Registry) replacedElsewhere(userID string, issued time.Time) {
	reg.mu.RLock()
	u := reg.users[userID]
	reg.mu.RUnlock()
	if u == nil {
		return
	}
	u.mu.Lock()
	c := u.conn
	older := u.issued.UnixMilli() < issued.UnixMilli()
	u.mu.Unlock()
	if c == nil || !older {
		return
	}
	reg.Disconnect(u, c, false)
	if rc, ok := c.(Replaceable); ok {
		rc.Replaced()
	}
}

// online and offline tell the Directory, if any, that u has a connection
// here, or no longer has one.
func (reg *Registry) online(u *User) {
	if reg.dir != nil {
		u.mu.Lock()
		issued := u.issued
		u.mu.Unlock()
		reg.dir.Online(u.id, issued)
	}
}

func (reg *Registry) offline(u *User) {
	if reg.dir != nil {
		reg.dir.Offline(u.id)
	}
}

// DefaultResumeMaxAge is Options.ResumeMaxAge's default. A resume token
// travels in URLs that proxies may log (GET /ws?resume=…, for scripts),
// so a token found in a log must stop working: a day is far longer than
// any reconnect needs (the resume window is 2 minutes), and a connection
// open longer gets a new token every 12 hours (Reissue).
const DefaultResumeMaxAge = 24 * time.Hour

// MaxAge is Options.ResumeMaxAge as in force (its default when it was 0).
func (reg *Registry) MaxAge() time.Duration { return reg.maxAge }

// Reissue gives u a new resume token, issued now, and returns it, when c
// is u's connection; otherwise it returns "" and changes nothing. The
// server calls it for a connection whose token is half ResumeMaxAge old,
// and sends the new token to the client (SPEC §4, the resume event), so a
// connection open for days can still be resumed after it drops. The token
// it replaces keeps working for tokenOverlap, for a client whose
// connection drops before the new one arrives; after that only the new
// one resumes u.
func (reg *Registry) Reissue(u *User, c Conn) string {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != c || c == nil {
		return ""
	}
	now = time.UnixMilli(now.UnixMilli())
	u.prevToken, u.prevUntil = u.token, now.Add(reg.overlap())
	u.token, u.issued = reg.signer.sign(u.id, now), now
	if reg.dir != nil {
		reg.dir.Online(u.id, now)
	}
	return u.token
}

// tokenOverlap is how long a token that was used to resume keeps working:
// long enough for a client whose connection died before the new welcome
// arrived to redial, short enough that two clients cannot share an
// identity for long. A short ResumeWindow shortens it (overlap).
const tokenOverlap = 30 * time.Second

// overlap is tokenOverlap, or a quarter of the resume window if shorter.
func (reg *Registry) overlap() time.Duration { return min(tokenOverlap, reg.resumeWindow/4) }

// newUser registers a user with connection c (nil: attach one). Guarded
// by reg.mu.
func (reg *Registry) newUser(id string, c Conn, now time.Time) *User {
	now = time.UnixMilli(now.UnixMilli())
	u := &User{
		reg:    reg,
		id:     id,
		name:   guestName(id),
		conn:   c,
		token:  reg.signer.sign(id, now),
		issued: now,
	}
	reg.users[id] = u
	reg.usersPeak = max(reg.usersPeak, len(reg.users))
	return u
}

// Disconnect tells the registry that connection c of u ended. clean means
// the client closed it on purpose (a close frame): u leaves every room at
// once. Otherwise u stays in its rooms, receiving nothing, for the grace
// period, in which a resumed connection may join them again silently; then
// the others see a presence leave. Either way u's resume token works for
// ResumeWindow. A c that is no longer u's connection is ignored.
func (reg *Registry) Disconnect(u *User, c Conn, clean bool) {
	u.mu.Lock()
	if u.conn != c {
		u.mu.Unlock()
		return
	}
	u.conn = nil
	reg.offline(u)
	rooms := u.rooms
	u.rooms = nil
	if clean {
		for _, r := range u.ghosts {
			rooms.add(r)
		}
		u.ghosts = nil
	} else {
		for _, r := range rooms {
			u.ghosts.add(r)
		}
		u.startGrace()
	}
	if u.expireTimer != nil {
		u.expireTimer.Stop()
		u.expireTimer = nil
	}
	if !reg.closed.Load() {
		u.expireTimer = time.AfterFunc(reg.resumeWindow, u.expire)
	}
	u.mu.Unlock()

	for _, r := range rooms {
		r.mu.Lock()
		left := -1
		if clean {
			left = reg.removeMember(r, u)
		} else if m := r.member(u); m != nil && m.conn == c {
			r.setConn(m, nil)
		}
		r.mu.Unlock()
		reg.logLeave(r, u, left)
	}
}
