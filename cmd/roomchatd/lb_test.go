package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
)

// The nginx configuration that docs/operations.md gives operators, and the
// main configuration that runs it without root (as make cluster does).
const (
	nginxConf      = "../../docs/deploy/nginx-roomchat.conf"
	nginxLocalConf = "../../docs/deploy/nginx-local.conf"
)

// TestLoadBalancer runs a cluster as docs/operations.md describes it:
// Redis, three nodes, and nginx with docs/deploy/nginx-roomchat.conf in
// front. Clients speak only to nginx. Alice reads through the client
// library's reconnecting Session; Bob and Carol are raw clients. Alice and
// Bob share a node, Carol is on another, and they chat both ways. Then
// their node is killed with kill -9 while Carol is sending: Alice's
// Session and Bob reconnect through nginx, resume their userID and join
// with since; a bot posts through nginx meanwhile. Every member gets every
// seq once, across both of their connections.
func TestLoadBalancer(t *testing.T) {
	start := time.Now()
	_, nodes := startCluster(t, 3)
	lb := startNginx(t, nodes)
	t.Logf("redis, 3 nodes and nginx up in %v", time.Since(start).Round(time.Millisecond))

	getJSON(t, lb.URL+"/healthz", http.StatusOK, nil)
	getJSON(t, lb.URL+"/readyz", http.StatusOK, nil)
	if info := getRoom(t, lb.URL, "lb"); info.RoomID != "lb" {
		t.Fatalf("GET /api/rooms/lb through nginx: %+v", info)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	zero := int64(0)
	sess, err := client.OpenSession(ctx, lb.URL, "lb", client.SessionOptions{
		Name: "alice", Since: &zero, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("open a session through nginx: %v", err)
	}
	alice := readSession(sess)
	defer alice.close()
	aliceID := alice.firstUserID(t)
	x := nodeOf(t, nodes, aliceID)

	// Bob on Alice's node, so that the kill drops both; Carol elsewhere,
	// dialled as a browser on nginx's address would: with that Origin.
	bob := dialWhere(t, lb, nodes, nil, func(i int) bool { return i == x })
	carol := dialWhere(t, lb, nodes, http.Header{"Origin": {lb.URL}}, func(i int) bool { return i != x })
	bobT, carolT := newTally("lb"), newTally("lb")
	for _, c := range []*chattest.Client{bob, carol} {
		c.Send(t, `{"type":"join","payload":{"roomID":"lb","name":"member","since":0}}`)
	}

	// Both ways across nodes, before anything fails.
	for k := range 3 {
		if _, err := sess.SendMessage(ctx, fmt.Sprint("alice ", k)); err != nil {
			t.Fatalf("alice sends: %v", err)
		}
		bob.Sendf(t, `{"type":"msg","id":"b%d","payload":{"roomID":"lb","message":"bob %d"}}`, k, k)
		carol.Sendf(t, `{"type":"msg","id":"c%d","payload":{"roomID":"lb","message":"carol %d"}}`, k, k)
	}
	const before = 9
	deadline := time.Now().Add(20 * time.Second)
	for _, m := range []struct {
		tl *tally
		c  *chattest.Client
	}{{bobT, bob}, {carolT, carol}} {
		if err := m.tl.read(t, m.c, before, deadline); err != nil {
			t.Fatalf("waiting for seq 1..%d: %v; have 1..%d", before, err, m.tl.last)
		}
	}
	alice.await(t, before, deadline)

	// Carol sends 20 in a row; after her 5th, Alice and Bob's node dies.
	const burst = 20
	fifth := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for k := range burst {
			if err := carol.Writef(`{"type":"msg","id":"burst%d","payload":{"roomID":"lb","message":"carol burst %d"}}`, k, k); err != nil {
				t.Errorf("carol sends: %v", err)
				return
			}
			if k == 4 {
				close(fifth)
			}
			time.Sleep(15 * time.Millisecond)
		}
	})
	<-fifth
	killed := time.Now()
	nodes[x].Kill(t)

	// Bob's connection ends; he comes back through nginx with his resume
	// token and joins with since = the last seq he got.
	if err := bobT.read(t, bob, 1<<62, time.Now().Add(10*time.Second)); err == nil || err == chattest.ErrNoEvent {
		t.Fatalf("bob's connection did not end when his node was killed: %v", err)
	}
	if bobT.max != bobT.last {
		t.Fatalf("bob got seqs up to %d with a gap after %d", bobT.max, bobT.last)
	}
	bob2 := resumeAs(t, lb.URL, bob.Welcome.Resume, bob.Welcome.UserID, "bob resumed through nginx")
	bob2.Sendf(t, `{"type":"join","payload":{"roomID":"lb","name":"member","since":%d}}`, bobT.last)
	t.Logf("bob back through nginx %v after the kill", time.Since(killed).Round(time.Millisecond))

	// Alice's Session sends once it has reconnected (a message tried on
	// the dead connection goes again with the same id); the bot's posts
	// reach a live node although nginx may try the dead one first.
	for k := range 3 {
		if _, err := sess.SendMessage(ctx, fmt.Sprint("alice after ", k)); err != nil {
			t.Fatalf("alice sends after the kill: %v", err)
		}
		bob2.Sendf(t, `{"type":"msg","id":"b-after%d","payload":{"roomID":"lb","message":"bob after %d"}}`, k, k)
		res, err := http.Post(lb.URL+"/api/rooms/lb/messages", "application/json", strings.NewReader(fmt.Sprintf(`{"name":"bot","message":"bot %d"}`, k)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("bot post %d through nginx after the kill: %d", k, res.StatusCode)
		}
	}
	wg.Wait()

	const n = before + burst + 3*3
	deadline = time.Now().Add(30 * time.Second)
	for _, m := range []struct {
		name string
		tl   *tally
		c    *chattest.Client
	}{{"bob", bobT, bob2}, {"carol", carolT, carol}} {
		if err := m.tl.read(t, m.c, n, deadline); err != nil {
			t.Fatalf("%s waiting for seq 1..%d: %v; has 1..%d", m.name, n, err, m.tl.last)
		}
		m.tl.once(t, m.name, n)
	}
	alice.await(t, n, deadline)
	t.Logf("every member has seq 1..%d %v after the kill", n, time.Since(killed).Round(time.Millisecond))

	if !alice.reconnectedAs(aliceID) {
		t.Errorf("alice's session did not reconnect as %q; joins: %+v", aliceID, alice.joinedAs())
	}
	for seq, m := range carolT.msgs {
		var want string
		switch {
		case strings.HasPrefix(m.Message, "alice"):
			want = aliceID
		case strings.HasPrefix(m.Message, "bob"):
			want = bob.Welcome.UserID
		default:
			continue
		}
		if m.From.UserID != want {
			t.Errorf("seq %d %q is from %q, want %q", seq, m.Message, m.From.UserID, want)
		}
	}

	lb.stop(t)
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// nginxServer is an nginx process run with docs/deploy's configuration.
type nginxServer struct {
	URL string // http://127.0.0.1:PORT

	dir  string
	cmd  *exec.Cmd
	exit chan struct{} // closed once cmd has been waited for
}

// startNginx runs nginx in front of nodes on a free loopback port, as make
// cluster does, and waits until it answers /healthz. It fails t when nginx
// is missing (make test installs it) or refuses the configuration, and
// stops nginx by its PID when the test ends.
func startNginx(t *testing.T, nodes []*chattest.Server) *nginxServer {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Fatalf("nginx not found (make test installs it with scripts/deps.sh): %v", err)
		}
		bin = "/usr/sbin/nginx"
	}
	dir := t.TempDir()
	for _, d := range []string{"conf", "logs", "temp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	local, err := os.ReadFile(nginxLocalConf)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile(nginxConf)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeLoopback(t)
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.Addr)
	}
	conf, err := renderNginx(string(tmpl), addr, addrs)
	if err != nil {
		t.Fatalf("%s: %v", nginxConf, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf", "nginx.conf"), local, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf", "roomchat.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"-p", dir + "/", "-c", "conf/nginx.conf", "-e", filepath.Join(dir, "logs", "error.log"),
		"-g", "daemon off; pid " + filepath.Join(dir, "nginx.pid") + ";",
	}
	if out, err := exec.Command(bin, append([]string{"-t"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\nconfiguration:\n%s", err, out, conf)
	}
	s := &nginxServer{URL: "http://" + addr, dir: dir, cmd: exec.Command(bin, args...), exit: make(chan struct{})}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exit)
	}()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
			t.Logf("nginx error.log:\n%s", b)
		}
	})
	if !chattest.Poll(10*time.Second, func() bool {
		var res *http.Response
		res, err = http.Get(s.URL + "/healthz")
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-s.exit:
			t.Fatalf("nginx exited while starting: %v", s.cmd.ProcessState)
		default:
		}
		return false
	}) {
		t.Fatalf("nginx on %s did not answer /healthz within 10 s: %v", addr, err)
	}
	return s
}

// stop sends nginx's master SIGTERM (it stops its workers and exits) and
// waits up to 10 s, then kills it. It may be called more than once.
func (s *nginxServer) stop(t *testing.T) {
	t.Helper()
	select {
	case <-s.exit:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exit:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exit
		t.Errorf("nginx (pid %d) still running 10 s after SIGTERM", s.cmd.Process.Pid)
	}
}

// placeholder matches a placeholder of nginx-roomchat.conf left unfilled.
var placeholder = regexp.MustCompile(`@[A-Z_]+@`)

// renderNginx fills in nginx-roomchat.conf as scripts/cluster.sh does: on
// lines that are not comments, @LISTEN@ becomes listen, @SERVER_NAME@ the
// loopback address the clients use as Host (so the default server, which
// drops other names, is not theirs), @ACCESS_LOG@ logs/access.log, and the
// line with @NODE@ is repeated once per node address.
func renderNginx(tmpl, listen string, nodes []string) (string, error) {
	var b strings.Builder
	nodeLines, listens, names := 0, 0, 0
	for line := range strings.Lines(tmpl) {
		switch {
		case strings.HasPrefix(strings.TrimLeft(line, " \t"), "#"):
			b.WriteString(line)
			continue
		case strings.Contains(line, "@NODE@"):
			nodeLines++
			for _, n := range nodes {
				b.WriteString(strings.ReplaceAll(line, "@NODE@", n))
			}
			continue
		}
		listens += strings.Count(line, "@LISTEN@")
		names += strings.Count(line, "@SERVER_NAME@")
		line = strings.NewReplacer("@LISTEN@", listen, "@SERVER_NAME@", "127.0.0.1", "@ACCESS_LOG@", "logs/access.log").Replace(line)
		if p := placeholder.FindString(line); p != "" {
			return "", fmt.Errorf("unknown placeholder %s", p)
		}
		b.WriteString(line)
	}
	if nodeLines != 1 || listens < 1 || names != 1 {
		return "", fmt.Errorf("%d @NODE@ lines, %d @LISTEN@ and %d @SERVER_NAME@, want one @NODE@ line, one @SERVER_NAME@ and a @LISTEN@", nodeLines, listens, names)
	}
	return b.String(), nil
}

func TestRenderNginx(t *testing.T) {
	tmpl, err := os.ReadFile(nginxConf)
	if err != nil {
		t.Fatal(err)
	}
	got, err := renderNginx(string(tmpl), "127.0.0.1:1", []string{"127.0.0.1:2", "127.0.0.1:3"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\n    listen 127.0.0.1:1;\n    server_name 127.0.0.1;\n",
		"\n    listen 127.0.0.1:1 default_server;\n    server_name _;\n",
		"\n    access_log logs/access.log roomchat;\n",
		"\n    server 127.0.0.1:2 max_fails=2 fail_timeout=10s;\n    server 127.0.0.1:3 max_fails=2 fail_timeout=10s;\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered configuration lacks %q:\n%s", want, got)
		}
	}
	for _, bad := range []string{"listen 80;\n", "# @NODE@\nserver @NODE@;\n", "listen @LISTEN@;\nserver @NODE@;\n"} {
		if _, err := renderNginx(bad, "x", []string{"y"}); err == nil {
			t.Errorf("renderNginx(%q) took a template without both placeholders", bad)
		}
	}
}

// freeLoopback returns a loopback address nothing listens on right now.
func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// nodeOf returns the index of the node that logged the connection of
// userID (its "connect" line), waiting up to 5 s for the log.
func nodeOf(t *testing.T, nodes []*chattest.Server, userID string) int {
	t.Helper()
	needle := "msg=connect user=" + userID + " "
	found := -1
	chattest.Eventually(t, 5*time.Second, func() bool {
		found = slices.IndexFunc(nodes, func(n *chattest.Server) bool { return strings.Contains(n.Logs(), needle) })
		return found >= 0
	}, "a node to log the connection of %s", userID)
	return found
}

// dialWhere dials through the load balancer, sending the handshake headers
// h, until a connection lands on a node for which want is true, keeping
// the others open meanwhile so that nginx's least-connections choice moves
// on; then it closes them.
func dialWhere(t *testing.T, lb *nginxServer, nodes []*chattest.Server, h http.Header, want func(node int) bool) *chattest.Client {
	t.Helper()
	var misses []*chattest.Client
	defer func() {
		for _, c := range misses {
			c.Close()
		}
	}()
	for range 2*len(nodes) + 1 {
		c := chattest.DialNoWelcome(t, lb.URL, "", h)
		chattest.Decode(t, c.Expect(t, protocol.TypeWelcome), &c.Welcome)
		if want(nodeOf(t, nodes, c.Welcome.UserID)) {
			return c
		}
		misses = append(misses, c)
	}
	t.Fatalf("no connection through nginx landed on the node wanted in %d tries", len(misses))
	return nil
}

// tally counts the messages of one room that a raw client received, in
// joined histories and msg events, across all its connections.
type tally struct {
	room  string
	msgs  map[int64]protocol.Message
	count map[int64]int
	last  int64 // every seq 1..last has been received
	max   int64 // the highest seq received
}

func newTally(room string) *tally {
	return &tally{room: room, msgs: map[int64]protocol.Message{}, count: map[int64]int{}}
}

func (tl *tally) add(m protocol.Message) {
	if m.RoomID != tl.room {
		return
	}
	tl.msgs[m.Seq] = m
	tl.count[m.Seq]++
	tl.max = max(tl.max, m.Seq)
	for tl.count[tl.last+1] > 0 {
		tl.last++
	}
}

// read reads c's events until every seq up to n has been received, and
// returns nil then; else why c's connection ended, or chattest.ErrNoEvent
// at the deadline.
func (tl *tally) read(t *testing.T, c *chattest.Client, n int64, deadline time.Time) error {
	t.Helper()
	for tl.last < n {
		f, err := c.Read(time.Until(deadline))
		if err != nil {
			return err
		}
		switch f.Type {
		case protocol.TypeMsg:
			tl.add(chattest.MsgOf(t, f))
		case protocol.TypeJoined:
			var j protocol.Joined
			chattest.Decode(t, f, &j)
			for _, m := range j.History {
				tl.add(m)
			}
		case protocol.TypeError:
			t.Fatalf("got %s", f)
		}
	}
	return nil
}

// once fails t unless every seq 1..n was received exactly once, and none
// after n.
func (tl *tally) once(t *testing.T, who string, n int64) {
	t.Helper()
	for seq, k := range tl.count {
		if seq < 1 || seq > n || k != 1 {
			t.Errorf("%s received seq %d %d times (want 1..%d, each once)", who, seq, k, n)
		}
	}
}

// sessionReader reads a Session's events in a goroutine of its own and
// keeps what they held.
type sessionReader struct {
	s    *client.Session
	done chan struct{} // closed when the reading goroutine has returned

	mu     sync.Mutex
	seqs   []int64           // guarded by mu; every seq delivered, in order
	joined []protocol.Joined // guarded by mu; every joined, in order
	recon  []protocol.Joined // guarded by mu; the joined events after a reconnect
	err    error             // guarded by mu; why Next stopped
	notify chan struct{}     // capacity 1: something was added
}

func readSession(s *client.Session) *sessionReader {
	r := &sessionReader{s: s, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	go func() {
		defer close(r.done)
		for {
			ev, err := s.Next(context.Background())
			r.mu.Lock()
			if err != nil {
				r.err = err
				r.mu.Unlock()
				return
			}
			if ev.Joined != nil {
				r.joined = append(r.joined, *ev.Joined)
				if ev.Reconnected {
					r.recon = append(r.recon, *ev.Joined)
				}
			}
			for _, m := range ev.Messages() {
				r.seqs = append(r.seqs, m.Seq)
			}
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

// close closes the Session and waits for the reading goroutine.
func (r *sessionReader) close() {
	r.s.Close()
	<-r.done
}

// firstUserID waits for the Session's first joined and returns its userID.
func (r *sessionReader) firstUserID(t *testing.T) string {
	t.Helper()
	r.wait(t, time.Now().Add(10*time.Second), func() bool { return len(r.joined) > 0 })
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.joined[0].You.UserID
}

// await waits until the Session has delivered seq 1..n, and fails t if
// it delivered anything else (a repeat, a gap, a wrong order).
func (r *sessionReader) await(t *testing.T, n int64, deadline time.Time) {
	t.Helper()
	r.wait(t, deadline, func() bool { return int64(len(r.seqs)) >= n })
	r.mu.Lock()
	defer r.mu.Unlock()
	chattest.CheckSeqs(t, "the session's deliveries", r.seqs, 1, int64(len(r.seqs)))
}

// wait waits until cond, called with r.mu held, is true.
func (r *sessionReader) wait(t *testing.T, deadline time.Time, cond func() bool) {
	t.Helper()
	for {
		r.mu.Lock()
		ok, err, n := cond(), r.err, len(r.seqs)
		r.mu.Unlock()
		if ok {
			return
		}
		if err != nil {
			t.Fatalf("the session ended: %v", err)
		}
		select {
		case <-r.notify:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("the session delivered %d messages by the deadline", n)
		}
	}
}

// reconnectedAs reports whether the Session reconnected and joined again
// as userID, every time.
func (r *sessionReader) reconnectedAs(userID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.recon {
		if j.You.UserID != userID {
			return false
		}
	}
	return len(r.recon) > 0
}

func (r *sessionReader) joinedAs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for _, j := range r.joined {
		ids = append(ids, j.You.UserID)
	}
	return ids
}

// TestNginxHostsAndLog: nginx with docs/deploy's configuration drops a
// request for a host name other than its server_name without an answer
// (444), whatever the path; it answers its own with the HSTS header; and
// its access log shows a WebSocket's request line without the query
// string, which carries the resume token.
func TestNginxHostsAndLog(t *testing.T) {
	node := chattest.Start(t, "-db", ":memory:")
	ngx := startNginx(t, []*chattest.Server{node})

	for _, path := range []string{"/healthz", "/api/rooms/r", "/ws"} {
		req, _ := http.NewRequest("GET", ngx.URL+path, nil)
		req.Host = "evil.example"
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			t.Fatalf("GET %s with Host evil.example through nginx: %d, want the connection closed unanswered", path, res.StatusCode)
		}
	}

	res, err := http.Get(ngx.URL + "/api/rooms/r")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Strict-Transport-Security"), "max-age=") {
		t.Fatalf("GET /api/rooms/r through nginx: %d, Strict-Transport-Security %q; want 200 with HSTS", res.StatusCode, res.Header.Get("Strict-Transport-Security"))
	}

	first := chattest.Dial(t, ngx.URL, "")
	token := first.Welcome.Resume
	first.Close()
	again := chattest.Dial(t, ngx.URL, "?resume="+url.QueryEscape(token))
	if again.Welcome.UserID != first.Welcome.UserID {
		t.Fatalf("resumed as %s, want %s", again.Welcome.UserID, first.Welcome.UserID)
	}
	again.Close()
	ngx.stop(t) // flushes the access log
	b, err := os.ReadFile(filepath.Join(ngx.dir, "logs", "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	if strings.Contains(log, token) || strings.Contains(log, "resume=") {
		t.Fatalf("nginx's access log holds the resume token:\n%s", log)
	}
	if n := strings.Count(log, `"GET /ws HTTP/1.1" 101 `); n != 2 {
		t.Fatalf("access log has %d WebSocket lines \"GET /ws HTTP/1.1\" 101, want 2:\n%s", n, log)
	}
	if !strings.Contains(log, `"GET /api/rooms/r HTTP/1.1" 200 `) {
		t.Fatalf("access log lacks the API request:\n%s", log)
	}
}
