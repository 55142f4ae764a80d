package server

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// The per-address limits (SPEC §4 "Rules and limits") count what one
// client address does. The address is the socket's peer, unless that peer
// is a proxy the operator trusts (Config.TrustProxy): then it is the
// client the proxy names in X-Forwarded-For. The limits key on addrKey of
// it, so that one IPv6 host, which usually holds a whole /64, counts once.

// clientAddr returns the address of the client that sent r: the socket's
// peer, or, when the peer is inside a trusted prefix, the rightmost
// address of X-Forwarded-For that is not itself trusted. Each trusted
// proxy appends the address it received the request from, so everything
// right of the first untrusted entry was written by a trusted hop and
// everything left of it may be forged by the client. An entry that does
// not parse ends the walk: the hop that wrote it is the best that is
// known. The zero Addr means the peer's address could not be read.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	peer := remoteAddr(r.RemoteAddr)
	if len(s.cfg.TrustProxy) == 0 || !s.trusted(peer) {
		return peer
	}
	client := peer
	// Several X-Forwarded-For lines form one list, in order (RFC 9110
	// §5.3).
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		entries := hops[i]
		for entries != "" {
			var e string
			if j := strings.LastIndexByte(entries, ','); j >= 0 {
				entries, e = entries[:j], entries[j+1:]
			} else {
				entries, e = "", entries
			}
			a, ok := parseHop(strings.TrimSpace(e))
			if !ok {
				return client
			}
			client = a
			if !s.trusted(a) {
				return client
			}
		}
	}
	return client
}

// trusted reports whether a is inside one of Config.TrustProxy.
func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustProxy {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// remoteAddr parses http.Request.RemoteAddr ("ip:port"); an IPv4 address
// mapped into IPv6 is unmapped.
func remoteAddr(s string) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		a, _ := parseHop(s)
		return a
	}
	return ap.Addr().Unmap()
}

// parseHop parses one X-Forwarded-For entry: an address, possibly with a
// port ("203.0.113.7:5123", "[2001:db8::1]:443") or in brackets, as some
// proxies write them. A zone is dropped.
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

// addrKey is what the per-address limits count by: an IPv4 address as it
// is, an IPv6 address by its /64, since one host or home network is
// usually given a whole /64 and may use any address in it.
func addrKey(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p
	}
	p, _ := a.Prefix(a.BitLen()) // the zero Addr gives the zero Prefix
	return p
}

// ParseCIDRs parses a comma-separated list of CIDR prefixes (for
// Config.TrustProxy); a bare address is a prefix of its full length.
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		if p.Addr().Is4In6() {
			// ::ffff:10.0.0.0/104 means 10.0.0.0/8: addresses are unmapped
			// before they are checked.
			if p.Bits() < 96 {
				return nil, fmt.Errorf("%s: an IPv4-mapped prefix is /96 or longer", f)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
