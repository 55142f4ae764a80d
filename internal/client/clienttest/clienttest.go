// Package clienttest runs a real roomchatd as a subprocess for the tests of
// internal/client and cmd/roomchat: it builds binaries once per test
// binary, starts the server on a loopback port, finds that port in the
// server's log, and stops or restarts it on the same port.
package clienttest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to log that it listens.
const startTimeout = 20 * time.Second

// Build compiles the packages (import paths, e.g.
// "github.com/roomchat/roomchat/cmd/roomchatd") into dir with go build and
// returns the path of each binary, by package order.
func Build(dir string, pkgs ...string) ([]string, error) {
	args := append([]string{"build", "-o", dir + string(os.PathSeparator)}, pkgs...)
	cmd := exec.Command("go", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	bins := make([]string, len(pkgs))
	for i, p := range pkgs {
		bins[i] = dir + string(os.PathSeparator) + p[strings.LastIndex(p, "/")+1:]
	}
	return bins, nil
}

// ServerEnv names an environment variable that, when set, is the path of a
// prebuilt roomchatd for BuildServer to use instead of building one (to run
// the client tests against another build of the server).
const ServerEnv = "ROOMCHAT_TEST_ROOMCHATD"

// ServerPackage is roomchatd's import path.
const ServerPackage = "github.com/roomchat/roomchat/cmd/roomchatd"

// BuildServer builds roomchatd into dir, or returns $ROOMCHAT_TEST_ROOMCHATD.
func BuildServer(dir string) (string, error) {
	if bin := os.Getenv(ServerEnv); bin != "" {
		return bin, nil
	}
	bins, err := Build(dir, ServerPackage)
	if err != nil {
		return "", err
	}
	return bins[0], nil
}

// Server is a roomchatd subprocess.
type Server struct {
	// URL is http://127.0.0.1:PORT.
	URL string
	// Addr is 127.0.0.1:PORT; a restart listens there again.
	Addr string

	bin  string
	args []string
	t    testing.TB

	mu   sync.Mutex
	cmd  *exec.Cmd     // guarded by mu; nil while stopped
	exit chan struct{} // guarded by mu; closed when cmd has been waited for
	logs strings.Builder
}

// listening matches the server's slog line "msg=listening addr=HOST:PORT"
// (text format; a JSON log's "addr":"HOST:PORT" is accepted as well).
var listening = regexp.MustCompile(`listening.*?addr"?[=:]"?((?:\[[^\]]*\]|[0-9.]+):[0-9]+)`)

// Start runs bin with -addr 127.0.0.1:0 -rate 0 and the extra args (e.g.
// "-db", path) and waits until it logs its address. The server is killed
// in t.Cleanup.
func Start(t testing.TB, bin string, args ...string) *Server {
	t.Helper()
	s := &Server{bin: bin, args: args, t: t}
	addr, err := s.start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = addr
	s.URL = "http://" + addr
	t.Cleanup(s.Kill)
	return s
}

func (s *Server) start(addr string) (string, error) {
	args := append([]string{"-addr", addr, "-rate", "0"}, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), "ROOMCHAT_REDIS=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", s.bin, err)
	}
	exit := make(chan struct{})
	found := make(chan string, 1)
	// Owned by the process: ends when its stderr closes, i.e. when it exits.
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs.WriteString(line + "\n")
			s.mu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		cmd.Wait()
		close(exit)
	}()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()
	select {
	case a := <-found:
		return a, nil
	case <-exit:
		return "", fmt.Errorf("%s exited before listening: %v\n%s", s.bin, cmd.ProcessState, s.Logs())
	case <-time.After(startTimeout):
		s.Kill()
		return "", fmt.Errorf("%s did not log its address within %s:\n%s", s.bin, startTimeout, s.Logs())
	}
}

// Logs returns what the server has written to stderr so far.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// Stop sends SIGTERM (a graceful shutdown: connections get 1001) and waits
// up to 15 s for the exit, then kills.
func (s *Server) Stop() { s.signal(syscall.SIGTERM, 15*time.Second) }

// Kill kills the server at once (kill -9: connections drop without a close
// frame) and waits for it.
func (s *Server) Kill() { s.signal(syscall.SIGKILL, 10*time.Second) }

func (s *Server) signal(sig syscall.Signal, wait time.Duration) {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-exit:
	case <-time.After(wait):
		cmd.Process.Kill()
		<-exit
	}
}

// Restart stops the server (SIGTERM, or SIGKILL if kill) and starts it
// again on the same address with the same arguments, retrying for a few
// seconds while the port is still held.
func (s *Server) Restart(kill bool) {
	s.t.Helper()
	if kill {
		s.Kill()
	} else {
		s.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, err := s.start(s.Addr)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			s.t.Fatalf("restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
