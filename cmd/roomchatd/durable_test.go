package main

// Durable history through the roomchatd binary (SPEC §4 "Guarantees"):
// restart on the
// same file, kill -9 after a burst of acked messages, retention through the
// flag, start-up faults and graceful shutdown. Each test runs the binary
// as a subprocess on a SQLite file in t.TempDir() and speaks to it over
// real WebSocket connections.

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/sqlite"
)

func ptr[T any](v T) *T { return &v }

// TestRestartKeepsHistory: SIGTERM, exit 0, start again on the same file:
// joined.history has the old messages, seq continues at lastSeq+1 and the
// room's epoch is unchanged.
func TestRestartKeepsHistory(t *testing.T) {
	db := filepath.Join(t.TempDir(), "data", "roomchat.db") // the directory is created
	d := chattest.Start(t, "-db", db)
	a := chattest.Dial(t, d.URL, "")
	empty := a.JoinSince(t, "keep", nil)
	if empty.Epoch == "" || empty.LastSeq != 0 || len(empty.History) != 0 {
		t.Fatalf("new room: epoch %q lastSeq %d history %d, want an epoch and no history", empty.Epoch, empty.LastSeq, len(empty.History))
	}
	const n = 20
	var acks []protocol.Ack
	for i := 1; i <= n; i++ {
		ack := a.SendAck(t, fmt.Sprint("m", i), fmt.Sprint("message ", i))
		if ack.Seq != int64(i) {
			t.Fatalf("ack %d has seq %d", i, ack.Seq)
		}
		acks = append(acks, ack)
	}
	before := chattest.Dial(t, d.URL, "").JoinSince(t, "keep", nil)
	if before.Epoch != empty.Epoch || before.LastSeq != n {
		t.Fatalf("before the restart: epoch %q lastSeq %d, want the empty room's epoch %q (unchanged by its first message)", before.Epoch, before.LastSeq, empty.Epoch)
	}

	d.Stop(t)
	if code := a.CloseCode(t, 5*time.Second); code != websocket.StatusGoingAway {
		t.Fatalf("client closed with %d at shutdown, want 1001", code)
	}
	d = chattest.Start(t, "-db", db)

	b := chattest.Dial(t, d.URL, "")
	j := b.JoinSince(t, "keep", nil)
	if j.Epoch != before.Epoch {
		t.Fatalf("epoch after the restart %q, want %q (unchanged)", j.Epoch, before.Epoch)
	}
	if j.LastSeq != n || j.Truncated {
		t.Fatalf("after the restart: lastSeq %d truncated %v, want %d, false", j.LastSeq, j.Truncated, n)
	}
	chattest.CheckSeqs(t, "joined.history after the restart", chattest.Seqs(j.History), 1, n)
	for i, m := range j.History {
		if m.ID != acks[i].MsgID || m.Message != fmt.Sprint("message ", i+1) || m.From.UserID != a.Welcome.UserID || m.TS.IsZero() {
			t.Fatalf("history[%d] = %+v, want msgID %s from %s", i, m, acks[i].MsgID, a.Welcome.UserID)
		}
	}
	if js := chattest.Dial(t, d.URL, "").JoinSince(t, "keep", ptr(int64(15))); len(js.History) != 5 || js.History[0].Seq != 16 || js.Epoch != before.Epoch {
		t.Fatalf("join since 15 after the restart: %d messages from %v, epoch %q", len(js.History), js.History, js.Epoch)
	}
	if ack := b.SendAck(t, "next", "after the restart"); ack.Seq != n+1 {
		t.Fatalf("first message after the restart got seq %d, want %d", ack.Seq, n+1)
	}
	var info server.RoomInfo
	getJSON(t, d.URL+"/api/rooms/keep", 200, &info)
	if info.LastSeq != n+1 || info.Count != 2 {
		t.Fatalf("GET /api/rooms/keep = %+v, want lastSeq %d count 2", info, n+1)
	}

	// SIGINT is a graceful shutdown too; a third start still continues.
	d.Signal(syscall.SIGINT)
	if code := d.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0", code)
	}
	d = chattest.Start(t, "-db", db)
	if j := chattest.Dial(t, d.URL, "").JoinSince(t, "keep", ptr(int64(n))); len(j.History) != 1 || j.History[0].Message != "after the restart" || j.Epoch != before.Epoch {
		t.Fatalf("after the second restart: history %v epoch %q", j.History, j.Epoch)
	}
	d.Stop(t)
}

// TestKill9AfterAckedBurst: five clients send 500 messages, each waiting
// for its ack, while a sixth keeps sending without waiting; SIGKILL right
// after the last of the 500 acks. After a restart every acked (msgID, seq)
// is there and the seqs run 1..N with no gap.
func TestKill9AfterAckedBurst(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	d := chattest.Start(t, "-db", db)
	const roomID = "burst"
	const senders, each = 5, 100

	var cs []*chattest.Client
	for range senders {
		c := chattest.Dial(t, d.URL, "?batch=1")
		c.JoinSince(t, roomID, nil)
		cs = append(cs, c)
	}
	// The tail client pipelines msgs with ids and collects whatever acks
	// arrive before the kill.
	tail := chattest.Dial(t, d.URL, "?batch=1")
	tail.JoinSince(t, roomID, nil)
	stopTail := make(chan struct{})
	var tailWG sync.WaitGroup
	tailWG.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopTail:
				return
			default:
			}
			if tail.Writef(`{"type":"msg","id":"t%d","payload":{"message":"tail %d"}}`, i, i) != nil {
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	})

	// One acked message first, and the room's epoch, to compare after.
	pre := cs[0].SendAck(t, "pre", "before the burst")
	epoch := chattest.Dial(t, d.URL, "").JoinSince(t, roomID, nil).Epoch

	acks := make([][]protocol.Ack, senders)
	errs := make(chan error, senders)
	var wg sync.WaitGroup
	for s, c := range cs {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("s%d-%d", s, i)
				if err := c.Writef(`{"type":"msg","id":%q,"payload":{"message":%q}}`, id, "burst "+id); err != nil {
					errs <- err
					return
				}
				a, err := c.AckOf(id)
				if err != nil {
					errs <- err
					return
				}
				acks[s] = append(acks[s], a)
			}
		})
	}
	wg.Wait()
	d.Kill(t) // right after the last ack
	close(stopTail)
	tailWG.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}

	// Every ack the tail client got before the kill.
	all := []protocol.Ack{pre}
	for _, a := range acks {
		all = append(all, a...)
	}
	nTail := 0
	for {
		e, err := tail.Read(time.Second)
		if err != nil {
			break
		}
		if e.Type == protocol.TypeAck {
			var a protocol.Ack
			chattest.Decode(t, e, &a)
			all = append(all, a)
			nTail++
		}
	}

	d = chattest.Start(t, "-db", db)
	var info server.RoomInfo
	getJSON(t, d.URL+"/api/rooms/"+roomID, 200, &info)
	if info.LastSeq < int64(len(all)) {
		t.Fatalf("after kill -9: lastSeq %d, but %d messages were acked", info.LastSeq, len(all))
	}
	j := chattest.Dial(t, d.URL, "").JoinAll(t, roomID, 0)
	chattest.CheckSeqs(t, "joined.history and history pages since 0 after kill -9", chattest.Seqs(j.History), 1, info.LastSeq)
	if j.LastSeq != info.LastSeq || j.Epoch != epoch || epoch == "" {
		t.Fatalf("joined after kill -9: lastSeq %d epoch %q; want lastSeq %d (GET) and epoch %q (before the kill)", j.LastSeq, j.Epoch, info.LastSeq, epoch)
	}
	for _, a := range all {
		if m := j.History[a.Seq-1]; m.ID != a.MsgID {
			t.Fatalf("acked %+v, but seq %d holds %+v", a, a.Seq, m)
		}
	}
	// The same through the HTTP API, page by page.
	var paged []protocol.Message
	for after := int64(0); ; {
		var p server.MessagePage
		getJSON(t, fmt.Sprintf("%s/api/rooms/%s/messages?after=%d&limit=97", d.URL, roomID, after), 200, &p)
		if len(p.Messages) == 0 {
			break
		}
		paged = append(paged, p.Messages...)
		after = p.Messages[len(p.Messages)-1].Seq
	}
	chattest.CheckSeqs(t, "GET …/messages after kill -9", chattest.Seqs(paged), 1, info.LastSeq)
	for i, m := range paged {
		if m.ID != j.History[i].ID {
			t.Fatalf("page and joined disagree at seq %d: %s vs %s", m.Seq, m.ID, j.History[i].ID)
		}
	}
	t.Logf("%d acked (%d by the pipelining client), %d stored", len(all), nTail, info.LastSeq)
	if ack := sendAckIn(t, chattest.Dial(t, d.URL, ""), roomID, "after"); ack.Seq != info.LastSeq+1 {
		t.Fatalf("first message after kill -9: seq %d, want %d", ack.Seq, info.LastSeq+1)
	}
}

// TestMachineStopNewEpoch: roomchatd (default -sync normal) killed with
// SIGKILL and started again on the same boot keeps every room's epoch
// (TestKill9AfterAckedBurst checks the messages). The same kill made to
// look like a machine stop, by changing the boot ID the file recorded
// while it ran, gives the room a new epoch at the next start: its last
// acked messages may have been in a page cache that is gone, so a client
// holding the old epoch learns that its seqs mean nothing now, instead of
// silently skipping new messages under reused seqs (docs/storage.md).
func TestMachineStopNewEpoch(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	d := chattest.Start(t, "-db", db)
	c := chattest.Dial(t, d.URL, "")
	epoch := c.JoinSince(t, "r", nil).Epoch
	for i := range 3 {
		c.SendAck(t, fmt.Sprint(i), "before the stop")
	}
	d.Restart(t, true)
	if j := chattest.Dial(t, d.URL, "").JoinSince(t, "r", ptr(int64(3))); j.Epoch != epoch || j.LastSeq != 3 {
		t.Fatalf("after kill -9 on the same boot: epoch %q lastSeq %d, want %q and 3", j.Epoch, j.LastSeq, epoch)
	}
	d.Kill(t)
	edit, err := sql.Open("sqlite", "file:"+db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edit.Exec("UPDATE meta SET value = 'an-earlier-boot' WHERE key = 'boot_id'"); err != nil {
		t.Fatal(err)
	}
	edit.Close()
	d = chattest.Start(t, "-db", db)
	j := chattest.Dial(t, d.URL, "").JoinSince(t, "r", ptr(int64(3)))
	if j.Epoch == epoch || j.Epoch == "" {
		t.Fatalf("after a machine stop: epoch %q, want a new one (was %q)", j.Epoch, epoch)
	}
	if !strings.Contains(d.Logs(), "every room starts a new epoch") {
		t.Errorf("no warning about the new epoch in the log:\n%s", d.Logs())
	}
}

// sendAckIn joins roomID and sends one acked message.
func sendAckIn(t *testing.T, c *chattest.Client, roomID, id string) protocol.Ack {
	t.Helper()
	c.JoinSince(t, roomID, nil)
	return c.SendAck(t, id, "message "+id)
}

// TestRetentionFlag: with -retention 5, after 12 messages history holds
// the last 5, and a join whose since reaches back past them is truncated.
func TestRetentionFlag(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	d := chattest.Start(t, "-db", db, "-retention", "5")
	const roomID = "trim"
	a := chattest.Dial(t, d.URL, "")
	a.JoinSince(t, roomID, nil)
	for i := 1; i <= 12; i++ {
		a.SendAck(t, fmt.Sprint(i), fmt.Sprint("message ", i))
	}
	check := func(t *testing.T, d *chattest.Server) {
		j := chattest.Dial(t, d.URL, "").JoinSince(t, roomID, nil)
		chattest.CheckSeqs(t, "joined.history", chattest.Seqs(j.History), 8, 12)
		if j.LastSeq != 12 || j.Truncated {
			t.Fatalf("join without since: lastSeq %d truncated %v, want 12, false", j.LastSeq, j.Truncated)
		}
		for _, tc := range []struct {
			since     int64
			truncated bool
			from      int64
		}{
			{0, true, 8}, {1, true, 8}, {6, true, 8}, {7, false, 8}, {10, false, 11}, {12, false, 13},
		} {
			j := chattest.Dial(t, d.URL, "").JoinSince(t, roomID, ptr(tc.since))
			if j.Truncated != tc.truncated {
				t.Fatalf("join since %d: truncated %v, want %v", tc.since, j.Truncated, tc.truncated)
			}
			chattest.CheckSeqs(t, fmt.Sprint("join since ", tc.since), chattest.Seqs(j.History), tc.from, 12)
		}
		var p server.MessagePage
		getJSON(t, d.URL+"/api/rooms/"+roomID+"/messages?limit=500", 200, &p)
		chattest.CheckSeqs(t, "GET messages", chattest.Seqs(p.Messages), 8, 12)
		getJSON(t, d.URL+"/api/rooms/"+roomID+"/messages?after=0", 200, &p)
		chattest.CheckSeqs(t, "GET messages after=0", chattest.Seqs(p.Messages), 8, 12)
	}
	check(t, d)
	// The same after a restart; seq goes on at 13.
	d.Stop(t)
	d = chattest.Start(t, "-db", db, "-retention", "5")
	check(t, d)
	a = chattest.Dial(t, d.URL, "")
	a.JoinSince(t, roomID, nil)
	if ack := a.SendAck(t, "13", "message 13"); ack.Seq != 13 {
		t.Fatalf("after the restart: seq %d, want 13", ack.Seq)
	}
	d.Stop(t)
}

// TestRetentionAgeFlag: with -retention-age, messages older than it leave
// history, and a join with since before them is truncated.
func TestRetentionAgeFlag(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	const age = 700 * time.Millisecond
	d := chattest.Start(t, "-db", db, "-retention-age", age.String())
	a := chattest.Dial(t, d.URL, "")
	a.JoinSince(t, "aging", nil)
	for i := 1; i <= 3; i++ {
		a.SendAck(t, fmt.Sprint(i), "old")
	}
	time.Sleep(age + 300*time.Millisecond)
	for i := 4; i <= 5; i++ {
		a.SendAck(t, fmt.Sprint(i), "new")
	}
	j := chattest.Dial(t, d.URL, "").JoinSince(t, "aging", nil)
	chattest.CheckSeqs(t, "joined.history", chattest.Seqs(j.History), 4, 5)
	if j.LastSeq != 5 {
		t.Fatalf("lastSeq %d, want 5", j.LastSeq)
	}
	if j := chattest.Dial(t, d.URL, "").JoinSince(t, "aging", ptr(int64(1))); !j.Truncated {
		t.Fatal("join since 1 after seqs 1..3 aged out: truncated = false, want true")
	} else {
		chattest.CheckSeqs(t, "join since 1", chattest.Seqs(j.History), 4, 5)
	}
	if j := chattest.Dial(t, d.URL, "").JoinSince(t, "aging", ptr(int64(3))); j.Truncated {
		t.Fatal("join since 3: truncated = true, want false (nothing after 3 is gone)")
	}
	var p server.MessagePage
	getJSON(t, d.URL+"/api/rooms/aging/messages?after=0", 200, &p)
	chattest.CheckSeqs(t, "GET messages", chattest.Seqs(p.Messages), 4, 5)
	d.Stop(t)
}

// TestStartupFaults: a database roomchatd cannot use stops start-up with
// exit code 1 and one clear line on stderr naming the file.
func TestStartupFaults(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	// A good roomchat database with some history.
	good := func(name string) string {
		path := filepath.Join(dir, name)
		s, err := sqlite.Open(ctx, path, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			done := make(chan error, 1)
			s.Append(protocol.Message{ID: fmt.Sprint("id", i), RoomID: "r", From: protocol.User{UserID: "u", Name: "n"}, Message: strings.Repeat("x", 100), TS: time.Now().UTC()},
				"", func(_ protocol.Message, _ bool, err error) { done <- err })
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	rawSQL := func(name string, stmts ...string) string {
		path := filepath.Join(dir, name)
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, s := range stmts {
			if _, err := db.Exec(s); err != nil {
				t.Fatal(err)
			}
		}
		return path
	}

	corrupt := good("corrupt.db")
	b, err := os.ReadFile(corrupt)
	if err != nil {
		t.Fatal(err)
	}
	for i := 100; i < 4096 && i < len(b); i++ {
		b[i] = 0xA5 // keep the header, garble the schema page
	}
	write("corrupt.db", b)
	newer := good("newer.db")
	rawSQL("newer.db", "PRAGMA user_version = 999")

	cases := []struct {
		name, path, text string
		names            string                  // the path the line names; path if empty
		setup            func(t *testing.T) bool // false skips
	}{
		{name: "text file", path: write("notes.txt", []byte("these are my notes, not a database\n")), text: "not an SQLite database"},
		{name: "corrupt", path: corrupt, text: "malformed"},
		{name: "other application's SQLite", path: rawSQL("other.db", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", "INSERT INTO notes (body) VALUES ('hi')"), text: "another application"},
		{name: "newer schema", path: newer, text: "newer"},
		{name: "directory", path: dir, text: "not a regular file"},
		{name: "parent is a file", path: filepath.Join(write("plain", nil), "x.db"), text: "not a directory", names: filepath.Join(dir, "plain")},
		{name: "read-only file", path: good("readonly.db"), text: "readonly", setup: func(t *testing.T) bool {
			path := filepath.Join(dir, "readonly.db")
			if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
				t.Logf("chattr +i: %v %s", err, out)
				return false
			}
			t.Cleanup(func() { exec.Command("chattr", "-i", path).Run() })
			return true
		}},
	}
	t.Run("empty file is a new database", func(t *testing.T) {
		d := chattest.Start(t, "-db", write("empty.db", nil))
		if ack := sendAckIn(t, chattest.Dial(t, d.URL, ""), "r", "1"); ack.Seq != 1 {
			t.Fatalf("first message in a new database: seq %d", ack.Seq)
		}
		d.Stop(t)
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil && !tc.setup(t) {
				t.Skip("chattr is not usable here (and root ignores file modes)")
			}
			var stderr strings.Builder
			cmd := chattest.Command(t, "-addr", "127.0.0.1:0", "-db", tc.path)
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			select {
			case <-waited:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-waited
				t.Fatalf("roomchatd still running 30 s later:\n%s", stderr.String())
			}
			out := stderr.String()
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Fatalf("exit code %d, want 1; stderr:\n%s", code, out)
			}
			line := strings.TrimSuffix(out, "\n")
			if line == "" || strings.Contains(line, "\n") {
				t.Fatalf("stderr has %d lines, want exactly one:\n%s", strings.Count(out, "\n"), out)
			}
			names := tc.names
			if names == "" {
				names = tc.path
			}
			if !strings.HasPrefix(line, "roomchatd: ") || !strings.Contains(line, names) || !strings.Contains(line, tc.text) {
				t.Fatalf("stderr %q: want one line starting %q that names %s and says %q", line, "roomchatd: ", names, tc.text)
			}
			t.Logf("stderr: %s", line)
		})
	}
}

// TestGracefulShutdown: SIGTERM while three clients send: every client,
// idle ones too, gets close 1001, roomchatd exits 0, and every acked
// message is in the file afterwards.
func TestGracefulShutdown(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	d := chattest.Start(t, "-db", db)
	const roomID = "shut"
	idle := chattest.Dial(t, d.URL, "")
	lobby := chattest.Dial(t, d.URL, "?batch=1")
	lobby.JoinSince(t, "lobby", nil)

	const senders = 3
	var cs []*chattest.Client
	for range senders {
		c := chattest.Dial(t, d.URL, "?batch=1")
		c.JoinSince(t, roomID, nil)
		cs = append(cs, c)
	}
	var wg sync.WaitGroup
	for s, c := range cs {
		wg.Go(func() {
			for i := 0; ; i++ {
				if c.Writef(`{"type":"msg","id":"s%d-%d","payload":{"message":"shutdown %d %d"}}`, s, i, s, i) != nil {
					return // closed by the shutdown
				}
				time.Sleep(300 * time.Microsecond)
			}
		})
	}
	// Let some messages through, then stop the server mid-stream. Each
	// sender's events are read here until the connection ends.
	var acks []protocol.Ack
	codes := make([]websocket.StatusCode, senders)
	firstAck := make(chan struct{}, senders)
	var mu sync.Mutex
	var rg sync.WaitGroup
	for s, c := range cs {
		rg.Go(func() {
			n := 0
			for {
				e, err := c.Read(30 * time.Second)
				if err != nil {
					codes[s] = websocket.CloseStatus(err)
					return
				}
				if e.Type != protocol.TypeAck {
					continue
				}
				var a protocol.Ack
				if err := json.Unmarshal(e.Payload, &a); err != nil || a.MsgID == "" {
					a = protocol.Ack{MsgID: "undecodable ack " + e.String()}
				}
				mu.Lock()
				acks = append(acks, a)
				mu.Unlock()
				if n++; n == 50 {
					firstAck <- struct{}{}
				}
			}
		})
	}
	for range senders {
		select {
		case <-firstAck:
		case <-time.After(20 * time.Second):
			t.Fatal("senders got no 50 acks within 20 s")
		}
	}
	start := time.Now()
	d.Signal(syscall.SIGTERM)
	rg.Wait()
	wg.Wait()
	for s, code := range codes {
		if code != websocket.StatusGoingAway {
			t.Fatalf("sender %d: connection ended with close code %d, want 1001", s, code)
		}
	}
	for name, c := range map[string]*chattest.Client{"idle": idle, "lobby": lobby} {
		if code := c.CloseCode(t, 10*time.Second); code != websocket.StatusGoingAway {
			t.Fatalf("%s client: close code %d, want 1001", name, code)
		}
	}
	if code := d.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, d.Logs())
	}
	t.Logf("shut down in %v with %d acks", time.Since(start).Round(time.Millisecond), len(acks))
	if logs := d.Logs(); strings.Contains(logs, "level=ERROR") || strings.Contains(logs, "level=WARN") {
		t.Fatalf("a graceful shutdown logged a warning or an error:\n%s", logs)
	}

	s, err := sqlite.Open(context.Background(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msgs, err := s.Messages(context.Background(), roomID, store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	ri, err := s.Room(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	chattest.CheckSeqs(t, "stored after shutdown", chattest.Seqs(msgs), 1, ri.LastSeq)
	for _, a := range acks {
		if a.Seq < 1 || a.Seq > int64(len(msgs)) || msgs[a.Seq-1].ID != a.MsgID {
			t.Fatalf("acked %+v is not in the file (%d messages)", a, len(msgs))
		}
	}
}

// TestShutdownWithUnresponsiveClient: a client that completed the
// handshake but never reads nor answers the close handshake does not keep
// roomchatd from exiting 0 soon after -shutdown-timeout; a well-behaved
// client still gets 1001.
func TestShutdownWithUnresponsiveClient(t *testing.T) {
	db := filepath.Join(t.TempDir(), "roomchat.db")
	d := chattest.Start(t, "-db", db, "-shutdown-timeout", "1s")
	good := chattest.Dial(t, d.URL, "")
	good.JoinSince(t, "r", nil)
	good.SendAck(t, "1", "kept")

	nc, err := net.Dial("tcp", strings.TrimPrefix(d.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	// From here on nc is never read: no pong, no close frame.

	start := time.Now()
	d.Signal(syscall.SIGTERM)
	if code := good.CloseCode(t, 10*time.Second); code != websocket.StatusGoingAway {
		t.Fatalf("well-behaved client: close code %d, want 1001", code)
	}
	code := d.Wait(t, 20*time.Second)
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("exit code %d, want 0:\n%s", code, d.Logs())
	}
	// coder/websocket's Close would wait 5 s for the peer's close frame;
	// the shutdown deadline cuts that short.
	if took > 4*time.Second {
		t.Fatalf("shutdown took %v with -shutdown-timeout 1s", took)
	}
	t.Logf("exited 0 after %v", took.Round(time.Millisecond))
	s, err := sqlite.Open(context.Background(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ri, err := s.Room(context.Background(), "r"); err != nil || ri.LastSeq != 1 {
		t.Fatalf("after shutdown: %+v %v, want lastSeq 1", ri, err)
	}
}
