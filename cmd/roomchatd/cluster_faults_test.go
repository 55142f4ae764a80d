package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// Faults of Redis in cluster mode (SPEC §8), with real processes.

// answer is what became of one msg sent with an id.
type answer struct {
	sent, at time.Time
	acked    bool
	seq      int64
	code     string // the error's code when not acked
}

// hangSender sends msgs with ids on its own connection and room and
// records, from a reader goroutine of its own, when each is answered.
type hangSender struct {
	c    *chattest.Client
	room string

	mu      sync.Mutex
	answers map[string]*answer // by id; guarded by mu
	stray   []string           // answers to no id sent; guarded by mu
	done    chan struct{}      // closed when the reader has ended
}

func newHangSender(t *testing.T, node *chattest.Server, room string) *hangSender {
	t.Helper()
	s := &hangSender{room: room, answers: make(map[string]*answer), done: make(chan struct{})}
	s.c, _ = member(t, node, room)
	go s.read()
	t.Cleanup(func() { s.c.Close(); <-s.done })
	return s
}

// read records acks and errors until the connection ends.
func (s *hangSender) read() {
	defer close(s.done)
	for {
		f, err := s.c.Read(time.Minute)
		if err == chattest.ErrNoEvent {
			continue
		}
		if err != nil {
			return
		}
		if f.Type != protocol.TypeAck && f.Type != protocol.TypeError {
			continue
		}
		now := time.Now()
		s.mu.Lock()
		a := s.answers[f.ID]
		switch {
		case a == nil || !a.at.IsZero():
			s.stray = append(s.stray, f.String())
		case f.Type == protocol.TypeAck:
			var ack protocol.Ack
			json.Unmarshal(f.Payload, &ack)
			a.at, a.acked, a.seq = now, true, ack.Seq
		default:
			var pe protocol.Error
			json.Unmarshal(f.Payload, &pe)
			a.at, a.code = now, pe.Code
		}
		s.mu.Unlock()
	}
}

// send sends one msg whose text is its id.
func (s *hangSender) send(id string) error {
	s.mu.Lock()
	s.answers[id] = &answer{sent: time.Now()}
	s.mu.Unlock()
	return s.c.Write(protocol.Encode(protocol.TypeMsg, id, protocol.Send{Message: id}))
}

// unanswered counts the msgs sent and not answered yet.
func (s *hangSender) unanswered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.answers {
		if a.at.IsZero() {
			n++
		}
	}
	return n
}

// waitAnswered polls until every msg sent has its answer, failing t after
// within.
func waitAnswered(t *testing.T, senders []*hangSender, within time.Duration) {
	t.Helper()
	n := 0
	if !chattest.Poll(within, func() bool {
		n = 0
		for _, s := range senders {
			n += s.unanswered()
		}
		return n == 0
	}) {
		t.Fatalf("%d msgs still unanswered after %v", n, within)
	}
}

// stored reads room's stream straight from Redis: seq by message text.
func stored(t *testing.T, srv *redistest.Server, room string) map[string]int64 {
	t.Helper()
	msg := srv.Do(srv.Client(), "XRANGE", "roomchat:{"+room+"}:s", "-", "+")
	entries, err := msg.AsXRange()
	if err != nil {
		t.Fatalf("XRANGE of %s: %v", room, err)
	}
	out := make(map[string]int64, len(entries))
	for _, e := range entries {
		var m protocol.Message
		if err := json.Unmarshal([]byte(e.FieldValues["m"]), &m); err != nil {
			t.Fatalf("stream entry %s of %s: %v", e.ID, room, err)
		}
		seq, _, _ := strings.Cut(e.ID, "-")
		out[m.Message], _ = strconv.ParseInt(seq, 10, 64)
	}
	return out
}

// Redis that hangs (SIGSTOP) for 10 s under ~700 msg/s from four senders
// on two nodes, the rate limit off: every msg is answered within 5 s of
// being sent (plus a margin for the machine), a msg answered with
// store_unavailable is never stored (Redis runs what was queued for it
// when it wakes up), every ack names the seq it was stored under, and the
// nodes serve again by themselves after SIGCONT. Sending pauses for the
// instant of the SIGSTOP, so that no msg is on its way to Redis then: a
// msg that Redis stored and whose answer the stop held up is the one
// outcome no server can tell apart.
func TestClusterRedisHangs(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	const (
		nSenders = 4
		each     = 1500
		before   = 150 // sent and acked before the hang
		pace     = time.Second / 175
		hang     = 10 * time.Second
		bound    = 5*time.Second + 1500*time.Millisecond
	)
	srv, nodes := startCluster(t, 2, "-rate", "0")
	var senders []*hangSender
	for i := range nSenders {
		senders = append(senders, newHangSender(t, nodes[i%2], fmt.Sprint("hang-", i)))
	}
	sendAll := func(from, to int) {
		var wg sync.WaitGroup
		for i, s := range senders {
			wg.Go(func() {
				tick := time.NewTicker(pace)
				defer tick.Stop()
				stop := time.Now().Add(30 * time.Second)
				for k := from; k < to && time.Now().Before(stop); k++ {
					if err := s.send(fmt.Sprintf("s%d-%d", i, k)); err != nil {
						t.Errorf("sender %d: %v", i, err)
						return
					}
					<-tick.C
				}
			})
		}
		wg.Wait()
	}

	sendAll(0, before)
	waitAnswered(t, senders, 20*time.Second)
	cont := pauseRedis(t, srv)
	stopped := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { sendAll(before, each) })
	time.Sleep(time.Until(stopped.Add(hang))) // the fault itself, not a wait for a condition
	cont()
	t.Logf("Redis resumed after %v", time.Since(stopped).Round(time.Millisecond))
	wg.Wait()
	waitAnswered(t, senders, 2*bound)

	var late, failed, total int
	var worst time.Duration
	for i, s := range senders {
		s.mu.Lock()
		for id, a := range s.answers {
			total++
			d := a.at.Sub(a.sent)
			worst = max(worst, d)
			if d > bound {
				late++
			}
			if !a.acked {
				failed++
				if a.code != protocol.CodeStoreUnavailable {
					t.Errorf("sender %d: %s answered %q, want store_unavailable", i, id, a.code)
				}
			}
		}
		if len(s.stray) > 0 {
			t.Errorf("sender %d: answers to nothing sent: %v", i, s.stray)
		}
		s.mu.Unlock()
	}
	t.Logf("%d msgs, %d refused, %d answered after %v; slowest answer %v", total, failed, late, bound, worst.Round(time.Millisecond))
	if late > 0 {
		t.Errorf("%d of %d msgs were answered more than %v after they were sent (slowest %v)", late, total, bound, worst.Round(time.Millisecond))
	}
	if failed == 0 {
		t.Errorf("no msg was refused during a %v hang: the test did not test", hang)
	}

	// Stored exactly what was acked, each under its acked seq.
	for i, s := range senders {
		got := stored(t, srv, s.room)
		s.mu.Lock()
		var storedLate, lost, wrong int
		for id, a := range s.answers {
			seq, ok := got[id]
			switch {
			case !a.acked && ok:
				storedLate++
			case a.acked && !ok:
				lost++
			case a.acked && seq != a.seq:
				wrong++
			}
		}
		s.mu.Unlock()
		if storedLate+lost+wrong > 0 {
			t.Errorf("sender %d: %d msgs refused and stored anyway, %d acked and not stored, %d stored under another seq than acked", i, storedLate, lost, wrong)
		}
	}

	// The nodes serve again by themselves.
	for _, n := range nodes {
		waitStatus(t, n.URL+"/readyz", 200, 10*time.Second)
	}
	for i, s := range senders {
		id := fmt.Sprint("after-", i)
		if err := s.send(id); err != nil {
			t.Fatal(err)
		}
	}
	waitAnswered(t, senders, 10*time.Second)
	for i, s := range senders {
		s.mu.Lock()
		if a := s.answers[fmt.Sprint("after-", i)]; !a.acked {
			t.Errorf("sender %d: a msg after Redis came back was answered %q", i, a.code)
		}
		s.mu.Unlock()
	}
}

// Reads never write (SPEC §8): GETs of rooms nobody used, history
// requests and joins that are refused create no Redis key, so that
// anonymous requests cannot fill a Redis that must not evict.
func TestClusterReadsCreateNoKeys(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv, nodes := startCluster(t, 1, "-room-capacity", "1")
	node := nodes[0]
	owner, _ := member(t, node, "full")
	owner.SendAck(t, "one", "one")
	other := chattest.Dial(t, node.URL, "")
	// The connections' directory entries are written in the background:
	// count once they are there.
	chattest.Eventually(t, 10*time.Second, func() bool {
		return redisInt(srv, "EXISTS", "roomchat:user:"+owner.Welcome.UserID, "roomchat:user:"+other.Welcome.UserID) == 2
	}, "the users' directory keys")
	before := srv.DBSize()
	for i := range 500 {
		room := fmt.Sprintf("never-used-%d", i)
		switch i % 4 {
		case 0:
			getJSON(t, node.URL+"/api/rooms/"+room, 200, nil)
		case 1:
			getJSON(t, node.URL+"/api/rooms/"+room+"/messages", 200, nil)
		case 2:
			getJSON(t, node.URL+"/api/rooms/"+room+"/messages?after=0&limit=500", 200, nil)
		case 3:
			getJSON(t, node.URL+"/api/rooms/"+room+"/messages?before=10", 200, nil)
		}
	}
	for range 20 {
		other.Send(t, `{"type":"join","payload":{"roomID":"full"}}`)
		other.ExpectError(t, protocol.CodeRoomFull)
		owner.Send(t, `{"type":"history","payload":{"roomID":"full","after":0}}`)
		owner.Await(t, protocol.TypeHistory)
	}
	if after := srv.DBSize(); after != before {
		t.Fatalf("500 GETs, 20 refused joins and 20 history requests took Redis from %d keys to %d, want none more", before, after)
	}
}

// A since or after past any seq reads nothing (SPEC §5: never a 5xx for
// bad input), as with SQLite: Redis's scripts once got it as a float.
func TestClusterHugeSince(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	_, nodes := startCluster(t, 1)
	node := nodes[0]
	c, _ := member(t, node, "r")
	c.SendAck(t, "one", "one")
	for _, n := range []string{"100000000000000000", "9223372036854775807"} {
		page := getMessages(t, node.URL, "r", "?after="+n)
		if len(page.Messages) != 0 || page.LastSeq != 1 {
			t.Errorf("after=%s: %+v, want no messages and lastSeq 1", n, page)
		}
		since, _ := strconv.ParseInt(n, 10, 64)
		j := chattest.Dial(t, node.URL, "").JoinSince(t, "r", &since)
		if len(j.History) != 0 || j.LastSeq != 1 {
			t.Errorf("join since %s: %d messages, lastSeq %d; want none, 1", n, len(j.History), j.LastSeq)
		}
		c.Sendf(t, `{"type":"history","id":"h","payload":{"roomID":"r","after":%s}}`, n)
		var h protocol.History
		chattest.Decode(t, c.Await(t, protocol.TypeHistory), &h)
		if len(h.Messages) != 0 || h.More {
			t.Errorf("history after %s: %+v, want an empty page", n, h)
		}
	}
}

// Redis loses acked messages and new ones take their seqs before the node
// looks (SPEC §8: detected by identity): the node gives the room a new
// epoch, and its member gets a new joined (truncated) before any message
// of it.
func TestClusterLostWrites(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv, nodes := startCluster(t, 1)
	node := nodes[0]
	sender, _ := member(t, node, "r")
	c, first := member(t, node, "r")
	for k := range 10 {
		sender.SendAck(t, fmt.Sprint("old-", k), fmt.Sprint("old ", k))
	}
	collect(t, c, 0, 10)
	// Seqs 8..10 are lost, and 8..12 stored anew, in one step.
	const lose = `
for s = 8, 10 do redis.call("xdel", KEYS[1], s .. "-0") end
redis.call("xsetid", KEYS[1], "7-0")
for i = 1, #ARGV do redis.call("xadd", KEYS[1], (7 + i) .. "-0", "m", ARGV[i]) end
redis.call("hset", KEYS[2], "s", 7 + #ARGV)
return 1`
	words := []string{"EVAL", lose, "2", "roomchat:{r}:s", "roomchat:{r}:m"}
	for s := 8; s <= 12; s++ {
		body, _ := json.Marshal(protocol.Message{ID: fmt.Sprint("new-", s), RoomID: "r", From: protocol.User{UserID: "x", Name: "x"}, Message: "new", TS: time.Now().UTC()})
		words = append(words, string(body))
	}
	srv.Do(srv.Client(), words...)
	if j := awaitNewJoined(t, c, 15*time.Second); j.Epoch == first.Epoch || !j.Truncated || j.LastSeq != 12 {
		t.Fatalf("joined after the loss: epoch %q (was %q), truncated %v, lastSeq %d", j.Epoch, first.Epoch, j.Truncated, j.LastSeq)
	}
}

// FLUSHALL takes the key that signs resume tokens: the running node puts
// its own back, so that a node started afterwards honours the tokens the
// first one gave (SPEC §8: resume across nodes holds for any path).
func TestClusterTokenKeyAfterFlush(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv, nodes := startCluster(t, 1)
	a := nodes[0]
	c, _ := member(t, a, "r")
	srv.Do(srv.Client(), "FLUSHALL")
	chattest.Eventually(t, 10*time.Second, func() bool {
		return redisInt(srv, "EXISTS", "roomchat:token_key") == 1
	}, "the token key back after FLUSHALL")
	b := startNodes(t, srv, 1)[0]
	c.Close()
	resumeAs(t, b.URL, c.Welcome.Resume, c.Welcome.UserID, "resumed on a node started after FLUSHALL")
}

// -retention-age works with -redis: a message older than it is gone from
// every page, and the room's seqs go on.
func TestClusterRetentionAge(t *testing.T) {
	t.Parallel() // each has its own Redis and nodes
	srv, nodes := startCluster(t, 1, "-retention-age", "1s")
	node := nodes[0]
	c, _ := member(t, node, "r")
	c.SendAck(t, "one", "one")
	c.SendAck(t, "two", "two")
	sent := time.Now()
	var page messagePage
	if !chattest.Poll(10*time.Second, func() bool {
		page = getMessages(t, node.URL, "r", "")
		if page.LastSeq != 2 {
			t.Fatalf("lastSeq %d, want 2", page.LastSeq)
		}
		return len(page.Messages) == 0
	}) {
		t.Fatalf("messages of a second's retention still there after 10 s: %+v", page.Messages)
	}
	// Writes trim once the oldest message is a sixteenth of the age past
	// it (so that they trim in batches): wait that out, then write.
	time.Sleep(time.Until(sent.Add(time.Second + time.Second/16 + 100*time.Millisecond)))
	if ack := c.SendAck(t, "three", "three"); ack.Seq != 3 {
		t.Fatalf("the next message got seq %d, want 3", ack.Seq)
	}
	if n := redisInt(srv, "XLEN", "roomchat:{r}:s"); n != 1 {
		t.Fatalf("the stream holds %d entries after a write, want the one young message", n)
	}
}
