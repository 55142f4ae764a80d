package room

import (
	"context"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"
)

// Directory records, where every node can see it, which users are
// connected or dropped less than the resume window ago. Online and
// Offline must not block; Known may (it is called without locks).
type Directory interface {
	Online(userID string)
	Offline(userID string)
	Known(ctx context.Context, userID string) (bool, error)
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
			if u = reg.resumable(id, issued, token, now); u != nil {
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

// resumable returns the user a verified token of userID id may resume, or
// nil: a user this node knows, if token is its current one or the previous
// one within its overlap; else a user the node does not know, if the
// token comes from before the node started (a restart) or, in a cluster,
// the Directory knows the user (connected on another node, or within the
// resume window of a drop there). It gives the user a fresh token.
func (reg *Registry) resumable(id string, issued time.Time, token string, now time.Time) *User {
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
		default:
			u.mu.Unlock()
			reg.mu.Unlock()
			return nil
		}
		u.token = reg.signer.sign(id, now)
		u.mu.Unlock()
		reg.mu.Unlock()
		return u
	}
	fresh := issued.Before(reg.started) && now.Before(reg.started.Add(reg.resumeWindow))
	reg.mu.Unlock()
	if !fresh && reg.dir != nil {
		// Asked without a lock: it is a network call.
		ctx, cancel := context.WithTimeout(reg.ctx, 2*time.Second)
		known, err := reg.dir.Known(ctx, id)
		cancel()
		if err != nil {
			reg.log.Warn("directory", "op", "known", "err", err)
		}
		fresh = known
	}
	if !fresh {
		return nil
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if u = reg.users[id]; u != nil {
		// Another connection with a token of the same user got here
		// first; this one replaces it.
		u.mu.Lock()
		u.token = reg.signer.sign(id, now)
		u.mu.Unlock()
		return u
	}
	u = reg.newUser(id, nil, now)
	u.prevToken, u.prevUntil = token, now.Add(reg.overlap())
	u.returned = now
	return u
}

// online and offline tell the Directory, if any, that u has a connection
// here, or no longer has one.
func (reg *Registry) online(u *User) {
	if reg.dir != nil {
		reg.dir.Online(u.id)
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
	u.prevToken, u.prevUntil = u.token, now.Add(reg.overlap())
	u.token = reg.signer.sign(u.id, now)
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
	u := &User{
		reg:   reg,
		id:    id,
		name:  guestName(id),
		conn:  c,
		token: reg.signer.sign(id, now),
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
