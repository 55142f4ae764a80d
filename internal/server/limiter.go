package server

import (
	"maps"
	"math"
	"net/netip"
	"sync"
	"time"
)

// addrLimiter is a token bucket per client address (addrKey): rate tokens
// a second, at most burst at once. Its map is keyed by addresses that
// clients choose (an IPv6 client has 2^64 /64s to pick from), so it is
// bounded: a bucket that has filled up again is the same as no bucket and
// is forgotten by the next sweep (at most every sweepEvery, on a call);
// past maxTracked addresses, random ones are forgotten, which costs a
// forgotten client at most one extra burst. The map is rebuilt once it
// holds less than a quarter of its peak, since deleting from a Go map
// frees no memory.
//
// The buckets are held by value, 32 bytes each, rather than as
// rate.Limiters (a pointer to a mutex and five fields, about 100 bytes):
// at maxTracked addresses that is about 6 MB with the map's own overhead
// rather than 10, and one lock guards them all anyway.
type addrLimiter struct {
	rate  float64 // tokens a second; ≤ 0 allows everything
	burst float64

	mu    sync.Mutex // guards the fields below
	seen  map[netip.Prefix]bucket
	peak  int       // the size seen grew to since it was last rebuilt
	swept time.Time // when seen was last swept
}

// bucket is one address's tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

const (
	// maxTracked bounds each per-address map: at about 90 bytes an entry
	// (key, bucket and the map's overhead), 6 MB at most. An attack from
	// more addresses than this within one bucket's refill time only makes
	// forgotten addresses start full again.
	maxTracked = 1 << 16
	// sweepEvery is how often, at most, a limiter forgets full buckets.
	sweepEvery = 10 * time.Second
)

func newAddrLimiter(perSecond float64, burst int) *addrLimiter {
	return &addrLimiter{rate: perSecond, burst: float64(max(burst, 1)), seen: make(map[netip.Prefix]bucket)}
}

// on reports whether the limiter limits anything.
func (l *addrLimiter) on() bool { return l.rate > 0 }

// allow takes a token from key's bucket at now. When there is none, it
// reports how long until there is one.
func (l *addrLimiter) allow(key netip.Prefix, now time.Time) (ok bool, wait time.Duration) {
	if l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) >= sweepEvery {
		l.sweep(now)
	}
	b, found := l.seen[key]
	if !found {
		if len(l.seen) >= maxTracked {
			l.sweep(now)
			l.evict(len(l.seen) - maxTracked*7/8)
		}
		b = bucket{tokens: l.burst, at: now}
	} else {
		b = l.refill(b, now)
	}
	if b.tokens < 1 {
		l.seen[key] = b
		return false, time.Duration(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
	}
	b.tokens--
	l.seen[key] = b
	l.peak = max(l.peak, len(l.seen))
	return true, 0
}

// refill returns b with the tokens it gained since b.at.
func (l *addrLimiter) refill(b bucket, now time.Time) bucket {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.at = now
	}
	return b
}

// sweep forgets the buckets that are full again, then rebuilds the map if
// it shrank below a quarter of its peak. Guarded by l.mu.
func (l *addrLimiter) sweep(now time.Time) {
	l.swept = now
	for k, b := range l.seen {
		if l.refill(b, now).tokens >= l.burst {
			delete(l.seen, k)
		}
	}
	l.seen = compact(l.seen, &l.peak)
}

// evict forgets n buckets, whichever the map's iteration order gives
// first (random). Guarded by l.mu.
func (l *addrLimiter) evict(n int) {
	for k := range l.seen {
		if n <= 0 {
			return
		}
		delete(l.seen, k)
		n--
	}
}

// tracked is how many addresses l holds a bucket for.
func (l *addrLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// release takes one from key's count in m, a count of open connections
// per address that holds no zeros: at zero the key goes, and m is
// rebuilt once it has shrunk (compact). It returns m or its rebuild.
func release(m map[netip.Prefix]int, key netip.Prefix, peak *int) map[netip.Prefix]int {
	if n := m[key] - 1; n > 0 {
		m[key] = n
		return m
	}
	delete(m, key)
	return compact(m, peak)
}

// compact returns m rebuilt when it holds less than a quarter of *peak,
// and records the new peak: deleting from a Go map frees no buckets.
func compact[K comparable, V any](m map[K]V, peak *int) map[K]V {
	if len(m) >= *peak/4 {
		return m
	}
	*peak = len(m)
	return maps.Collect(maps.All(m)) // not Clone: it keeps the table size
}

// gate counts open WebSocket connections, in all and per client address,
// and refuses one past Config.MaxConns or Config.IPConns. A connection
// holds its place from before the upgrade until its serve goroutine ends.
type gate struct {
	max     int // 0: no limit
	perAddr int // 0: no limit

	mu     sync.Mutex // guards the fields below
	open   int
	byAddr map[netip.Prefix]int // addresses with open connections; never 0
	peak   int                  // the size byAddr grew to since it was rebuilt
}

// gateRefusal says why enter refused.
type gateRefusal int

const (
	admitted gateRefusal = iota
	serverFull
	addrFull
)

// enter takes a place for a connection from key, or says why not.
func (g *gate) enter(key netip.Prefix) gateRefusal {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perAddr > 0 && g.byAddr[key] >= g.perAddr {
		return addrFull
	}
	if g.max > 0 && g.open >= g.max {
		return serverFull
	}
	g.open++
	if g.perAddr > 0 {
		if g.byAddr == nil {
			g.byAddr = make(map[netip.Prefix]int)
		}
		g.byAddr[key]++
		g.peak = max(g.peak, len(g.byAddr))
	}
	return admitted
}

// leave gives back a place that enter took for key.
func (g *gate) leave(key netip.Prefix) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open--
	if g.perAddr > 0 {
		g.byAddr = release(g.byAddr, key, &g.peak)
	}
}

// count is how many connections hold a place.
func (g *gate) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}
