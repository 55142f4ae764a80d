package chattest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
)

// Import paths of the commands the tests run.
const (
	ServerPackage = "github.com/roomchat/roomchat/cmd/roomchatd"
	CLIPackage    = "github.com/roomchat/roomchat/cmd/roomchat"
)

// ServerEnv names an environment variable that, when set, is the path of a
// prebuilt roomchatd for Bin to use instead of building one (to run the
// tests against another build of the server).
const ServerEnv = "ROOMCHAT_TEST_ROOMCHATD"

// builds holds what Bin built, in one temporary directory per test binary
// that Main removes.
var builds struct {
	mu   sync.Mutex
	dir  string            // guarded by mu; "" until the first build
	bins map[string]*built // guarded by mu; by import path
}

type built struct {
	once sync.Once
	path string // set by once
	err  error  // set by once
}

// Bin returns the path of the command pkg (an import path such as
// ServerPackage), built with go build once per test binary; for
// ServerPackage, $ROOMCHAT_TEST_ROOMCHATD when it is set. It fails t if
// the build fails. The binaries live in a temporary directory that Main
// removes.
func Bin(t testing.TB, pkg string) string {
	t.Helper()
	if bin := os.Getenv(ServerEnv); pkg == ServerPackage && bin != "" {
		return bin
	}
	builds.mu.Lock()
	var err error
	if builds.dir == "" {
		builds.dir, err = os.MkdirTemp("", "roomchat-test-bin-")
	}
	if builds.bins == nil {
		builds.bins = map[string]*built{}
	}
	b := builds.bins[pkg]
	if b == nil {
		b = &built{}
		builds.bins[pkg] = b
	}
	dir := builds.dir
	builds.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	b.once.Do(func() {
		b.path = filepath.Join(dir, pkg[strings.LastIndex(pkg, "/")+1:])
		out, err := exec.Command("go", "build", "-o", b.path, pkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Main runs the tests and removes what Bin built. When the tests passed
// and leaks names goroutines (see LeakedGoroutines), it fails the run if
// any of them outlive the tests by LeakWait: every Close must wait for
// what it started (STYLE.md "Every go has an owner that waits"). A
// package's tests have:
//
//	func TestMain(m *testing.M) { os.Exit(chattest.Main(m, "…/internal/pkg.")) }
//
// m is a *testing.M, or a Runner around one for a package that has more to
// do after its tests and before the check.
func Main(m interface{ Run() int }, leaks ...string) int {
	code := m.Run()
	builds.mu.Lock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
		builds.dir, builds.bins = "", nil
	}
	builds.mu.Unlock()
	if code == 0 && len(leaks) > 0 {
		if leaked := LeakedGoroutines(LeakWait, leaks...); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left running after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	return code
}

// Runner is a func as Main's m: Runner(func() int { code := m.Run(); …;
// return code }).
type Runner func() int

// Run calls r.
func (r Runner) Run() int { return r() }

// Environ is the test's environment without the ROOMCHAT_* variables, so
// that a developer's settings do not reach the server under test.
func Environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ROOMCHAT_") {
			env = append(env, kv)
		}
	}
	return env
}

// Command is roomchatd (see Bin) with args and Environ(), its standard
// output discarded, for a test that runs it to its end.
func Command(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(Bin(t, ServerPackage), args...)
	cmd.Env = Environ()
	cmd.Stdout = io.Discard
	return cmd
}

// startTimeout bounds how long a server may take to log that it listens
// (it opens and migrates its store first, on a shared machine under -race).
const startTimeout = 30 * time.Second

// listening is roomchatd's text log line for its address, e.g.
// `time=… level=INFO msg=listening addr=127.0.0.1:41321 db=…`.
var listening = regexp.MustCompile(`(?:^| )msg=listening addr=(\S+)`)

// ListenAddr returns the address in roomchatd's log line "listening"
// (HOST:PORT), in the text format or in the JSON one (-log-format json),
// and whether line is that line. It is the one place that reads it.
func ListenAddr(line string) (string, bool) {
	if strings.HasPrefix(line, "{") {
		var l struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "listening" || l.Addr == "" {
			return "", false
		}
		return l.Addr, true
	}
	if m := listening.FindStringSubmatch(line); m != nil {
		return m[1], true
	}
	return "", false
}

// Server is a roomchatd subprocess. Its stderr is kept (Logs) and shown
// when the test fails; it is killed at the end of the test.
type Server struct {
	// URL is http://HOST:PORT.
	URL string
	// Addr is HOST:PORT, as the server logged it; Restart listens there
	// again.
	Addr string

	bin  string
	args []string
	env  []string
	pre  []string // a command that runs bin (StartNoFile); none: bin itself

	mu   sync.Mutex
	cmd  *exec.Cmd     // guarded by mu; the last process started
	exit chan struct{} // guarded by mu; closed once cmd has been waited for
	logs strings.Builder
}

// Start runs roomchatd (see Bin) with -addr 127.0.0.1:0 -rate 0 -db
// :memory: and then args (e.g. "-db", path: the last of a flag counts) in
// Environ(), and waits until it logs its address.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return StartEnv(t, nil, append([]string{"-addr", "127.0.0.1:0", "-rate", "0", "-db", ":memory:"}, args...)...)
}

// StartEnv runs roomchatd with exactly args in the environment env (nil:
// Environ()) and waits until it logs its address. The address is the
// caller's to choose, by flag or by ROOMCHAT_ADDR: a loopback one.
func StartEnv(t testing.TB, env []string, args ...string) *Server {
	t.Helper()
	return start(t, nil, env, args)
}

// StartNoFile is Start with the server's open-files limit (RLIMIT_NOFILE,
// soft and hard) lowered to nofile, set by the shell's ulimit before it
// execs roomchatd: so the server's process is the one PID reports.
func StartNoFile(t testing.TB, nofile int, args ...string) *Server {
	t.Helper()
	pre := []string{"/bin/sh", "-c", `ulimit -n "$1" && shift && exec "$@"`, "sh", fmt.Sprint(nofile)}
	return start(t, pre, nil, append([]string{"-addr", "127.0.0.1:0", "-rate", "0", "-db", ":memory:"}, args...))
}

func start(t testing.TB, pre, env, args []string) *Server {
	t.Helper()
	bin := Bin(t, ServerPackage)
	if env == nil {
		env = Environ()
	}
	s := &Server{bin: bin, args: args, env: env, pre: pre}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("%s's stderr:\n%s", filepath.Base(bin), s.Logs())
		}
	})
	addr, err := s.start(args)
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = addr
	s.URL = "http://" + addr
	return s
}

// start runs the server with args and returns the address it logs.
func (s *Server) start(args []string) (string, error) {
	cmd := exec.Command(s.bin, args...)
	if len(s.pre) > 0 {
		cmd = exec.Command(s.pre[0], append(append(s.pre[1:len(s.pre):len(s.pre)], s.bin), args...)...)
	}
	cmd.Env = s.env
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", s.bin, err)
	}
	exit := make(chan struct{})
	found := make(chan string, 1)
	// Owned by the process: ends when its stderr closes, i.e. when it
	// exits, and closes exit once it has been waited for.
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs.WriteString(line + "\n")
			s.mu.Unlock()
			if addr, ok := ListenAddr(line); ok {
				select {
				case found <- addr:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr) // a line over 1 MiB: keep the pipe flowing
		cmd.Wait()
		close(exit)
	}()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()
	select {
	case addr := <-found:
		return addr, nil
	case <-exit:
		return "", fmt.Errorf("%s exited before listening (%v):\n%s", s.bin, cmd.ProcessState, s.Logs())
	case <-time.After(startTimeout):
		s.kill()
		return "", fmt.Errorf("%s did not log its address within %v:\n%s", s.bin, startTimeout, s.Logs())
	}
}

// Logs returns what the server has written to stderr so far, across
// restarts.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// PID is the process ID of the server last started.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}

// Signal sends sig to the server unless it has exited.
func (s *Server) Signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.mu.Unlock()
	select {
	case <-exit:
	default:
		cmd.Process.Signal(sig)
	}
}

// Wait waits up to timeout for the server to exit and returns its exit
// code (-1 if a signal ended it); it fails t if the server still runs.
func (s *Server) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.mu.Unlock()
	select {
	case <-exit:
	case <-time.After(timeout):
		t.Fatalf("%s still running %v later:\n%s", s.bin, timeout, s.Logs())
	}
	return cmd.ProcessState.ExitCode()
}

// Stop sends SIGTERM (a graceful shutdown: connections get 1001) and fails
// t unless the server exits 0 within 15 s.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.Signal(syscall.SIGTERM)
	if code := s.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("%s exited with %d after SIGTERM, want 0:\n%s", s.bin, code, s.Logs())
	}
}

// Kill kills the server at once (kill -9: connections drop without a
// close frame) and waits for it to go.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.Signal(syscall.SIGKILL)
	s.Wait(t, 10*time.Second)
}

// kill is Kill for cleanups: it fails no test.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	s.Signal(syscall.SIGKILL)
	<-exit
}

// Restart stops the server (Stop, or Kill if kill) and starts it again with
// the same arguments on the same address, retrying for a few seconds
// while the port is still held.
func (s *Server) Restart(t testing.TB, kill bool) {
	t.Helper()
	if kill {
		s.Kill(t)
	} else {
		s.Stop(t)
	}
	args := append(append([]string(nil), s.args...), "-addr", s.Addr) // the last -addr counts
	var err error
	if !Poll(10*time.Second, func() bool { _, err = s.start(args); return err == nil }) {
		t.Fatalf("restart: %v", err)
	}
}
