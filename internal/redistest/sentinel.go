package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// HA is a Sentinel-managed deployment: a primary, its replicas and the
// Sentinels that watch them, each a redis-server process on a free
// loopback port, killed (SIGKILL, by PID) when the test ends.
type HA struct {
	// Master is the master set's name ("roomchat").
	Master string
	// Servers are the data servers: Servers[0] is the first primary, the
	// others start as its replicas. Which one is the primary changes with
	// failovers (Primary).
	Servers []*Server
	// Sentinels are the Sentinel processes.
	Sentinels []*Server

	t testing.TB
}

// HAOptions configure StartHA.
type HAOptions struct {
	// Replicas is the number of replicas (1).
	Replicas int
	// Sentinels is the number of Sentinels (3); a quorum of a majority of
	// them starts a failover.
	Sentinels int
	// DownAfter is how long the primary must not answer before the
	// Sentinels take it for down (1 s).
	DownAfter time.Duration
}

// StartHA starts a primary, its replicas and Sentinels, and waits until
// the replicas are in sync and every Sentinel knows every replica and
// every other Sentinel, so that a failover can happen at once.
func StartHA(t testing.TB, opts HAOptions) *HA {
	t.Helper()
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.Sentinels <= 0 {
		opts.Sentinels = 3
	}
	if opts.DownAfter <= 0 {
		opts.DownAfter = time.Second
	}
	h := &HA{Master: "roomchat", t: t}
	// A replica that must sync in full (after a failover to a primary
	// whose history forked from its own) starts at once: by default a
	// primary waits 5 s for more replicas to share a diskless sync, and
	// failovers a few seconds apart (the cluster chaos campaign) then
	// keep every replica syncing, and every ack that waits for them
	// (-redis-wait) refused, for the whole run.
	args := []string{"--repl-diskless-sync-delay", "0"}
	primary := Start(t, Options{Args: args})
	h.Servers = append(h.Servers, primary)
	host, port, _ := net.SplitHostPort(primary.Addr)
	for range opts.Replicas {
		h.Servers = append(h.Servers, Start(t, Options{Config: "replicaof " + host + " " + port, Args: args}))
	}
	quorum := opts.Sentinels/2 + 1
	for range opts.Sentinels {
		h.Sentinels = append(h.Sentinels, startSentinel(t, fmt.Sprintf(
			"sentinel monitor %s %s %s %d\n"+
				"sentinel down-after-milliseconds %s %d\n"+
				"sentinel failover-timeout %s 5000\n"+
				"sentinel parallel-syncs %s 1\n",
			h.Master, host, port, quorum,
			h.Master, opts.DownAfter.Milliseconds(),
			h.Master, h.Master)))
	}
	h.await(30*time.Second, func() error {
		for _, s := range h.Servers[1:] {
			if info := s.info("replication"); !strings.Contains(info, "master_link_status:up") {
				return fmt.Errorf("replica %s not in sync yet", s.Addr)
			}
		}
		for _, sn := range h.Sentinels {
			if n := len(sn.array("SENTINEL", "REPLICAS", h.Master)); n != opts.Replicas {
				return fmt.Errorf("sentinel %s knows %d replicas of %d", sn.Addr, n, opts.Replicas)
			}
			if n := len(sn.array("SENTINEL", "SENTINELS", h.Master)); n != opts.Sentinels-1 {
				return fmt.Errorf("sentinel %s knows %d other sentinels of %d", sn.Addr, n, opts.Sentinels-1)
			}
		}
		return nil
	})
	return h
}

// startSentinel runs redis-server --sentinel with config (the monitor
// lines) in a file of its own, which Sentinel rewrites as it learns.
func startSentinel(t testing.TB, config string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (make test installs it with scripts/deps.sh): %v", err)
	}
	s := &Server{t: t, dir: t.TempDir()}
	s.Addr = freeAddr(t)
	_, port, _ := net.SplitHostPort(s.Addr)
	conf := filepath.Join(s.dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = []string{bin, conf, "--sentinel",
		"--bind", "127.0.0.1", "--port", port, "--dir", s.dir,
		"--daemonize", "no", "--logfile", filepath.Join(s.dir, "redis.log"),
	}
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// URL is the deployment's redis+sentinel:// URL: every Sentinel, and the
// master set's name.
func (h *HA) URL() string {
	addrs := make([]string, len(h.Sentinels))
	for i, s := range h.Sentinels {
		addrs[i] = s.Addr
	}
	return "redis+sentinel://" + strings.Join(addrs, ",") + "/" + h.Master
}

// Primary returns the data server that every Sentinel names as the
// primary and that says it is one, waiting up to 30 s for them to agree.
func (h *HA) Primary() *Server {
	h.t.Helper()
	return h.PrimaryOtherThan(nil, 30*time.Second)
}

// PrimaryOtherThan waits up to within for every Sentinel to name the same
// primary, other than old (nil: any), and for that server to report the
// role of master; it returns that server.
func (h *HA) PrimaryOtherThan(old *Server, within time.Duration) *Server {
	h.t.Helper()
	var primary *Server
	h.await(within, func() error {
		primary = nil
		addr := ""
		for _, sn := range h.Sentinels {
			if sn.PID() == 0 {
				continue
			}
			a := sn.array("SENTINEL", "GET-MASTER-ADDR-BY-NAME", h.Master)
			if len(a) != 2 {
				return fmt.Errorf("sentinel %s names no primary", sn.Addr)
			}
			host, _ := a[0].ToString()
			port, _ := a[1].ToString()
			got := net.JoinHostPort(host, port)
			if addr != "" && got != addr {
				return fmt.Errorf("the sentinels disagree: %s and %s", addr, got)
			}
			addr = got
		}
		for _, s := range h.Servers {
			if s.Addr == addr {
				primary = s
			}
		}
		switch {
		case primary == nil:
			return fmt.Errorf("the sentinels name %q, no server of the test", addr)
		case primary == old:
			return fmt.Errorf("the sentinels still name %s", addr)
		case !strings.Contains(primary.info("replication"), "role:master"):
			return fmt.Errorf("%s is named but not a master yet", addr)
		}
		return nil
	})
	return primary
}

// Synced waits up to within for every other data server to be an online
// replica of the primary (after a failover, Sentinel turns the old
// primary into a replica only some seconds after it answers again), and
// returns an error if that does not happen. It fails the test if the
// Sentinels name no primary for 30 s.
func (h *HA) Synced(within time.Duration) error {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		// Asked each time: the Sentinels may fail over meanwhile (a
		// primary that was stopped).
		p := h.Primary()
		info := p.info("replication")
		online := strings.Count(info, "state=online")
		if online == len(h.Servers)-1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: %d of %d replicas online on the primary %s after %v", online, len(h.Servers)-1, p.Addr, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Failover asks a Sentinel to fail the primary over to a replica (SENTINEL
// FAILOVER, as an operator would), retrying while one is in progress or
// no replica is ready, and returns the new primary once every Sentinel
// names it.
func (h *HA) Failover(within time.Duration) *Server {
	h.t.Helper()
	old := h.Primary()
	deadline := time.Now().Add(within)
	for {
		err := h.Sentinels[0].Try("SENTINEL", "FAILOVER", h.Master)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("SENTINEL FAILOVER: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return h.PrimaryOtherThan(old, time.Until(deadline))
}

// await polls cond every 100 ms until it returns nil, failing the test with
// its last error after within.
func (h *HA) await(within time.Duration, cond func() error) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("redistest: %v (after %v)", err, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// call runs one command on a connection of its own, bounded by a second;
// a server that is stopped or killed gives an error.
func (s *Server) call(words ...string) (rueidis.RedisMessage, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{s.Addr}, Password: s.Password, DisableCache: true,
		ForceSingleClient: true, DisableRetry: true, Dialer: net.Dialer{Timeout: time.Second},
		ConnWriteTimeout: time.Second,
	})
	if err != nil {
		return rueidis.RedisMessage{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Do(ctx, c.B().Arbitrary(words...).Build()).ToMessage()
}

// Try runs one command on a connection of its own, bounded by a second,
// and returns its error only: for faults a test stages (CLIENT KILL) on a
// server that may be stopped or failing over.
func (s *Server) Try(words ...string) error {
	_, err := s.call(words...)
	return err
}

// array runs a command whose answer is an array; nil on any error.
func (s *Server) array(words ...string) []rueidis.RedisMessage {
	m, err := s.call(words...)
	if err != nil {
		return nil
	}
	a, _ := m.ToArray()
	return a
}

// info returns a section of INFO, "" on any error.
func (s *Server) info(section string) string {
	m, err := s.call("INFO", section)
	if err != nil {
		return ""
	}
	str, _ := m.ToString()
	return str
}

// Role returns the first word of ROLE: "master", "slave" or "sentinel";
// "" when the server does not answer.
func (s *Server) Role() string {
	a := s.array("ROLE")
	if len(a) == 0 {
		return ""
	}
	r, _ := a[0].ToString()
	return r
}

// LogPath is the file the server (or Sentinel) logs to, in its
// directory, which the test removes when it ends.
func (s *Server) LogPath() string { return filepath.Join(s.dir, "redis.log") }

// SaveLogs copies every data server's and Sentinel's log into dir, as
// redis<i>-<port>.log (Servers[i]) and sentinel<i>-<port>.log, so that a
// failure can be explained after the test's directories are gone. It
// returns the first error and copies the rest anyway.
func (h *HA) SaveLogs(dir string) error {
	var first error
	save := func(kind string, i int, s *Server) {
		_, port, _ := net.SplitHostPort(s.Addr)
		b, err := os.ReadFile(s.LogPath())
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s%d-%s.log", kind, i, port)), b, 0o644)
		}
		if err != nil && first == nil {
			first = err
		}
	}
	for i, s := range h.Servers {
		save("redis", i, s)
	}
	for i, s := range h.Sentinels {
		save("sentinel", i, s)
	}
	return first
}

// RoleLine describes the server's ROLE in one line: "master offset=N
// replicas=PORT@OFFSET,…", "slave of PORT STATE offset=N" or "sentinel";
// "" when it does not answer (stopped, killed).
func (s *Server) RoleLine() string {
	a := s.array("ROLE")
	if len(a) == 0 {
		return ""
	}
	role, _ := a[0].ToString()
	switch {
	case role == "master" && len(a) == 3:
		off, _ := a[1].AsInt64()
		reps, _ := a[2].ToArray()
		var rs []string
		for _, r := range reps {
			f, _ := r.ToArray()
			if len(f) == 3 {
				port, _ := f[1].ToString()
				roff, _ := f[2].ToString()
				rs = append(rs, port+"@"+roff)
			}
		}
		return fmt.Sprintf("master offset=%d replicas=%s", off, strings.Join(rs, ","))
	case role == "slave" && len(a) == 5:
		port, _ := a[2].AsInt64()
		state, _ := a[3].ToString()
		off, _ := a[4].AsInt64()
		return fmt.Sprintf("slave of %d %s offset=%d", port, state, off)
	}
	return role
}
