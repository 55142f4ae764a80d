package server

// Unit tests of the per-address limits' parts: the client address behind
// trusted proxies, the key IPv6 addresses are grouped by, the token
// buckets (in a synctest bubble: the time logic only) and their bounds.
// The limits themselves are tested over real sockets in limits_test.go.

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"
)

func TestAddrKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"203.0.113.7", "203.0.113.7/32"},
		{"::ffff:203.0.113.7", "203.0.113.7/32"}, // IPv4 mapped into IPv6 is IPv4
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
	} {
		got := addrKey(netip.MustParseAddr(tc.in))
		if got.String() != tc.want {
			t.Errorf("addrKey(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	// Two hosts of one /64 share a key; the next /64 does not.
	a, b := addrKey(netip.MustParseAddr("2001:db8::1")), addrKey(netip.MustParseAddr("2001:db8::ffff:1"))
	if a != b {
		t.Errorf("2001:db8::1 and 2001:db8::ffff:1 have keys %s and %s, want one", a, b)
	}
	if addrKey(netip.Addr{}) != (netip.Prefix{}) {
		t.Errorf("the zero Addr's key is %s, want the zero Prefix", addrKey(netip.Addr{}))
	}
}

func TestClientAddr(t *testing.T) {
	trust, err := ParseCIDRs("10.0.0.0/8, 2001:db8:ffff::/48,192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		trust  bool
		remote string
		xff    []string
		want   string
	}{
		{"no proxy trusted, XFF ignored", false, "10.1.1.1:5000", []string{"198.51.100.9"}, "10.1.1.1"},
		{"untrusted peer, XFF ignored", true, "203.0.113.7:5000", []string{"198.51.100.9"}, "203.0.113.7"},
		{"trusted peer, one hop", true, "10.1.1.1:5000", []string{"198.51.100.9"}, "198.51.100.9"},
		{"trusted peer, no XFF", true, "10.1.1.1:5000", nil, "10.1.1.1"},
		{"forged left entries are skipped", true, "10.1.1.1:5000", []string{"1.2.3.4, 198.51.100.9"}, "198.51.100.9"},
		{"trusted hops are skipped", true, "10.1.1.1:5000", []string{"198.51.100.9, 10.2.2.2, 192.0.2.1"}, "198.51.100.9"},
		{"several header lines form one list", true, "10.1.1.1:5000", []string{"1.2.3.4, 198.51.100.9", "10.2.2.2"}, "198.51.100.9"},
		{"all trusted: the leftmost", true, "10.1.1.1:5000", []string{"10.3.3.3, 10.2.2.2"}, "10.3.3.3"},
		{"garbage: the hop that wrote it", true, "10.1.1.1:5000", []string{"198.51.100.9, nonsense, 10.2.2.2"}, "10.2.2.2"},
		{"garbage rightmost: the peer", true, "10.1.1.1:5000", []string{"198.51.100.9, nonsense"}, "10.1.1.1"},
		{"entry with a port", true, "10.1.1.1:5000", []string{"198.51.100.9:4711"}, "198.51.100.9"},
		{"IPv6 entry with a port", true, "10.1.1.1:5000", []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"IPv6 entry in brackets", true, "10.1.1.1:5000", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"IPv6 trusted peer", true, "[2001:db8:ffff:1::1]:5000", []string{"2001:db8:1::7"}, "2001:db8:1::7"},
		{"IPv4-mapped peer is IPv4", true, "[::ffff:10.1.1.1]:5000", []string{"198.51.100.9"}, "198.51.100.9"},
		{"IPv4-mapped entry is IPv4", true, "10.1.1.1:5000", []string{"::ffff:198.51.100.9"}, "198.51.100.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{}
			if tc.trust {
				s.cfg.TrustProxy = trust
			}
			r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientAddr(r); got.String() != tc.want {
				t.Errorf("got=%s, want=%s", got, tc.want)
			}
		})
	}
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs(" 10.0.0.0/8 ,, 127.0.0.1, ::1, 2001:db8::1/32, ::ffff:172.16.0.0/108")
	if err != nil {
		t.Fatal(err)
	}
	want := "[10.0.0.0/8 127.0.0.1/32 ::1/128 2001:db8::/32 172.16.0.0/12]"
	if fmt.Sprint(got) != want {
		t.Errorf("got=%v, want=%s", got, want)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1/8/1", "::ffff:0.0.0.0/64"} {
		if _, err := ParseCIDRs(bad); err == nil {
			t.Errorf("ParseCIDRs(%q) succeeded, want an error", bad)
		}
	}
	if got, err := ParseCIDRs(""); err != nil || got != nil {
		t.Errorf("ParseCIDRs(\"\") = %v, %v; want none", got, err)
	}
}

// TestAddrLimiter: a burst passes, then one token per 1/rate; the wait
// says when the next one comes; addresses are counted apart.
func TestAddrLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAddrLimiter(2, 3) // 2 a second, 3 at once
		a := addrKey(netip.MustParseAddr("192.0.2.1"))
		b := addrKey(netip.MustParseAddr("192.0.2.2"))
		for i := range 3 {
			if ok, _ := l.allow(a, time.Now()); !ok {
				t.Fatalf("request %d of the burst refused", i+1)
			}
		}
		ok, wait := l.allow(a, time.Now())
		if ok || wait != 500*time.Millisecond {
			t.Fatalf("past the burst: ok=%v wait=%v, want refused with 500ms to wait", ok, wait)
		}
		if ok, _ := l.allow(b, time.Now()); !ok {
			t.Fatal("another address is refused")
		}
		time.Sleep(wait)
		if ok, _ := l.allow(a, time.Now()); !ok {
			t.Fatal("refused after waiting as told")
		}
		if ok, _ := l.allow(a, time.Now()); ok {
			t.Fatal("a second request passed with one token refilled")
		}
		// A refused request takes no token: after 1/rate, one passes.
		time.Sleep(500 * time.Millisecond)
		if ok, _ := l.allow(a, time.Now()); !ok {
			t.Fatal("refused after a refill")
		}
	})
}

// TestAddrLimiterForgets: buckets that are full again are forgotten and
// the map is rebuilt smaller; past maxTracked addresses, random ones are
// forgotten so that the map stays bounded.
func TestAddrLimiterForgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAddrLimiter(10, 10)
		addr := func(i int) netip.Prefix {
			return addrKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		}
		for i := range 5000 {
			l.allow(addr(i), time.Now())
		}
		if n := l.tracked(); n != 5000 {
			t.Fatalf("tracking %d addresses, want 5000", n)
		}
		// After a second every bucket is full again; the next call after
		// sweepEvery forgets them.
		time.Sleep(sweepEvery)
		l.allow(addr(0), time.Now())
		if n := l.tracked(); n != 1 {
			t.Fatalf("after the sweep, tracking %d addresses, want 1", n)
		}
		l.mu.Lock()
		peak := l.peak
		l.mu.Unlock()
		if peak > 1 {
			t.Fatalf("peak %d after the sweep: the map was not rebuilt", peak)
		}

		// More addresses than maxTracked, all within one refill time.
		for i := range maxTracked + 1000 {
			l.allow(addr(i), time.Now())
		}
		if n := l.tracked(); n > maxTracked {
			t.Fatalf("tracking %d addresses, want at most %d", n, maxTracked)
		}
	})
}

// TestGate: MaxConns in all and IPConns per address, places given back.
func TestGate(t *testing.T) {
	g := &gate{max: 3, perAddr: 2}
	a := addrKey(netip.MustParseAddr("192.0.2.1"))
	b := addrKey(netip.MustParseAddr("2001:db8::1"))
	b2 := addrKey(netip.MustParseAddr("2001:db8::2")) // b's /64
	c := addrKey(netip.MustParseAddr("192.0.2.3"))
	for i, step := range []struct {
		key  netip.Prefix
		want gateRefusal
	}{
		{a, admitted}, {a, admitted}, {a, addrFull},
		{b, admitted}, {b2, serverFull}, {c, serverFull},
	} {
		if got := g.enter(step.key); got != step.want {
			t.Fatalf("step %d: enter(%s) = %d, want %d", i, step.key, got, step.want)
		}
	}
	g.leave(a)
	for i, step := range []struct {
		key  netip.Prefix
		want gateRefusal
	}{
		{b2, admitted}, {b, addrFull}, {c, serverFull},
	} {
		if got := g.enter(step.key); got != step.want {
			t.Fatalf("after a leave, step %d: enter(%s) = %d, want %d", i, step.key, got, step.want)
		}
	}
	g.leave(a)
	g.leave(b)
	g.leave(b2)
	if g.count() != 0 || len(g.byAddr) != 0 {
		t.Fatalf("after every leave: %d open, %d addresses; want none", g.count(), len(g.byAddr))
	}
}
