// Package redistest runs real redis-server processes for tests: on a free
// loopback port, in a temporary directory, with an append-only file so
// that a restart keeps what was acknowledged. A test that needs Redis and
// cannot find redis-server fails; it never skips (make test installs it).
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// Server is one redis-server process.
type Server struct {
	// Addr is 127.0.0.1:PORT, the same across restarts.
	Addr string
	// Password, when set, is required (requirepass).
	Password string

	t    testing.TB
	dir  string
	args []string

	mu  sync.Mutex // guards cmd
	cmd *exec.Cmd  // nil while stopped
}

// Options configure Start.
type Options struct {
	// Password sets requirepass.
	Password string
	// Args are more redis-server arguments ("--maxmemory-policy", "allkeys-lru").
	Args []string
	// Config is the start of the configuration file the server is started
	// with (redis.conf in its directory, before the arguments), such as
	// "replicaof 127.0.0.1 6379": a server with a file takes CONFIG
	// REWRITE, which Sentinel sends, and a restart reads what it wrote.
	Config string
}

// Start starts a redis-server and stops it (SIGKILL) when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (make test installs it with scripts/deps.sh): %v", err)
	}
	s := &Server{t: t, dir: t.TempDir(), Password: opts.Password}
	s.Addr = freeAddr(t)
	_, port, _ := net.SplitHostPort(s.Addr)
	s.args = []string{
		"--bind", "127.0.0.1", "--port", port,
		"--dir", s.dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--daemonize", "no", "--logfile", filepath.Join(s.dir, "redis.log"),
		"--maxmemory-policy", "noeviction",
	}
	if opts.Password != "" {
		s.args = append(s.args, "--requirepass", opts.Password)
	}
	s.args = append(s.args, opts.Args...)
	conf := filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(conf, []byte(opts.Config+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = append([]string{bin, conf}, s.args...)
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// URL is the server's redis:// URL, with its password if it has one.
func (s *Server) URL() string {
	if s.Password != "" {
		return "redis://:" + s.Password + "@" + s.Addr
	}
	return "redis://" + s.Addr
}

// Restart starts the server again (after Kill or Stop) on the same port
// and directory, and waits until it answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("redistest: Restart of a running server")
	}
	cmd := exec.Command(s.args[0], s.args[1:]...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			ok := ping(c, s.Password)
			c.Close()
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server on %s did not answer within 10 s:\n%s", s.Addr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends PING (after AUTH) and reports whether PONG came back; a
// server still loading its AOF answers -LOADING.
func ping(c net.Conn, password string) bool {
	c.SetDeadline(time.Now().Add(time.Second))
	req := "PING\r\n"
	if password != "" {
		req = "AUTH " + password + "\r\n" + req
	}
	if _, err := c.Write([]byte(req)); err != nil {
		return false
	}
	buf := make([]byte, 256)
	n, _ := c.Read(buf)
	got := string(buf[:n])
	if password != "" && strings.HasPrefix(got, "+OK\r\n") && !strings.Contains(got, "PONG") {
		n2, _ := c.Read(buf)
		got += string(buf[:n2])
	}
	return strings.Contains(got, "+PONG")
}

// Kill ends the server with SIGKILL, as a crash would: what the AOF holds
// (appendfsync always: everything acknowledged) survives a Restart.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Stop ends the server with SIGTERM (it writes the AOF and exits).
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(sig)
	s.cmd.Wait()
	s.cmd = nil
}

// PID returns the running server's process ID, or 0.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Client returns a client for the test's own commands (FLUSHALL, CLIENT
// KILL, CONFIG SET), closed when the test ends.
func (s *Server) Client() rueidis.Client {
	s.t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr}, Password: s.Password, DisableCache: true})
	if err != nil {
		s.t.Fatalf("redis client: %v", err)
	}
	s.t.Cleanup(c.Close)
	return c
}

// Do runs one command given as words, failing the test on error.
func (s *Server) Do(c rueidis.Client, words ...string) rueidis.RedisMessage {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res := c.Do(ctx, c.B().Arbitrary(words...).Build())
	msg, err := res.ToMessage()
	if err != nil && !rueidis.IsRedisNil(err) {
		s.t.Fatalf("redis %s: %v", strings.Join(words, " "), err)
	}
	return msg
}

// DBSize is the number of keys in the server's Redis (DBSIZE), failing
// the test on error.
func (s *Server) DBSize() int64 {
	s.t.Helper()
	msg := s.Do(s.Client(), "DBSIZE")
	n, err := msg.AsInt64()
	if err != nil {
		s.t.Fatalf("redis DBSIZE: %v", err)
	}
	return n
}

// Prefix returns a key prefix unique to the test, so that tests can share
// one server.
func Prefix(t testing.TB) string {
	return fmt.Sprintf("t%s-%s", strconv.FormatInt(time.Now().UnixNano()%1e9, 36), strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()))
}
