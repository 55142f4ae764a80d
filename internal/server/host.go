package server

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/roomchat/roomchat/internal/protocol"
)

// The Host check defends against DNS rebinding. A page on evil.example
// can point its own name at the server's address (loopback, an intranet
// host) and then talk to the server from its visitors' browsers: the
// browser sends Origin http://evil.example and Host evil.example, which
// the Origin rule (Origin host equal to Host, SPEC §4 "Rules and limits")
// takes for the server's own web client. With Config.Hosts, or
// Config.PublicURL, the server knows its own names and answers any other
// Host with 421 bad_host before anything else, so the Origin rule compares
// with a name the server owns.

// hostPattern is an allowed Host: a name (lower case, no brackets, no
// trailing dot) and a port, "" for any port.
type hostPattern struct{ name, port string }

// splitHost splits a Host header value, or an entry of Config.Hosts, into
// its name, lower case, without the brackets of an IPv6 literal or a
// trailing dot, and its port ("" when it has none).
func splitHost(h string) (name, port string, ok bool) {
	if n, p, err := net.SplitHostPort(h); err == nil {
		name, port = n, p
	} else {
		name = h
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			name = h[1 : len(h)-1]
		}
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	return name, port, name != ""
}

// parseHostPattern parses one entry of Config.Hosts: a host name or an IP
// address, with or without a port (IPv6 in brackets when with one).
func parseHostPattern(e string) (hostPattern, error) {
	bad := func(why string) (hostPattern, error) {
		return hostPattern{}, fmt.Errorf("%q: %s; want a host name or host:port such as chat.example.com or localhost:8080", e, why)
	}
	if strings.Contains(e, "/") {
		return bad("not a bare host (no scheme, no path)")
	}
	name, port, ok := splitHost(e)
	if !ok {
		return bad("empty host")
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("port must be 1 to 65535")
		}
	}
	if _, err := netip.ParseAddr(name); err != nil {
		for _, c := range name {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
				return bad(fmt.Sprintf("%q is not allowed in a host name", c))
			}
		}
	}
	return hostPattern{name: name, port: port}, nil
}

// ParseHosts parses a comma-separated list of host names or host:port
// (for Config.Hosts), so that a command line can refuse a bad one.
func ParseHosts(list string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(list, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		if _, err := parseHostPattern(e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// PublicHost returns the host (host or host:port) of a public base URL
// such as https://chat.example.com (Config.PublicURL), or an error when it
// is not an absolute http or https URL with a host.
func PublicHost(publicURL string) (string, error) {
	u, err := url.Parse(publicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q: want an absolute http(s) URL such as https://chat.example.com", publicURL)
	}
	if _, err := parseHostPattern(u.Host); err != nil {
		return "", err
	}
	return u.Host, nil
}

// allowedHosts returns the patterns of Config.Hosts and the host of
// Config.PublicURL; none means that every Host is answered.
func allowedHosts(cfg Config) ([]hostPattern, error) {
	var out []hostPattern
	for _, e := range cfg.Hosts {
		p, err := parseHostPattern(e)
		if err != nil {
			return nil, fmt.Errorf("server: Config.Hosts: %w", err)
		}
		out = append(out, p)
	}
	if cfg.PublicURL != "" {
		h, err := PublicHost(cfg.PublicURL)
		if err != nil {
			return nil, fmt.Errorf("server: Config.PublicURL: %w", err)
		}
		p, _ := parseHostPattern(h)
		out = append(out, p)
	}
	return out, nil
}

// hostAllowed reports whether the server answers to host, a request's
// Host: any host when no names are configured, else one whose name is
// allowed with any port, or one exactly as allowed with its port.
func (s *Server) hostAllowed(host string) bool {
	if len(s.hosts) == 0 {
		return true
	}
	name, port, ok := splitHost(host)
	if !ok {
		return false
	}
	for _, h := range s.hosts {
		if h.name == name && (h.port == "" || h.port == port) {
			return true
		}
	}
	return false
}

// anyHost reports whether path is answered whatever the Host: the probes
// of load balancers and orchestrators, which address a node by its IP,
// and which tell a page nothing worth rebinding for.
func anyHost(path string) bool { return path == "/healthz" || path == "/readyz" }

// refuseHost answers a request for a Host the server does not answer to.
func (s *Server) refuseHost(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ws" {
		s.metrics.refused.Inc()
	}
	s.fail(w, http.StatusMisdirectedRequest, protocol.Errorf(protocol.CodeBadHost, "this server does not answer to host %q; use its own address", truncate(r.Host, 100)))
}
