package server_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
)

// received is a msg event as an honest client got it, and when.
type received struct {
	text string
	seq  int64
	at   time.Time
}

// honestReader reads everything queued to c until stop is closed,
// keeping the msg events whose text starts with "honest" and any error
// answering a request id that starts with "h".
type honestReader struct {
	mu     sync.Mutex
	msgs   []received
	errors []string
	done   chan struct{}
}

func readHonest(c *chattest.Client, stop <-chan struct{}) *honestReader {
	r := &honestReader{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			f, err := c.Read(100 * time.Millisecond)
			if err == chattest.ErrNoEvent {
				continue
			}
			if err != nil {
				return
			}
			now := time.Now()
			r.mu.Lock()
			switch f.Type {
			case protocol.TypeMsg:
				var m protocol.Message
				if protocol.DecodePayload(f.Envelope, &m) == nil && strings.HasPrefix(m.Message, "honest") {
					r.msgs = append(r.msgs, received{m.Message, m.Seq, now})
				}
			case protocol.TypeError:
				if strings.HasPrefix(f.ID, "h") {
					r.errors = append(r.errors, f.String())
				}
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *honestReader) snapshot() ([]received, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs), slices.Clone(r.errors)
}

// TestRoomFlood: five sockets flood one room at the full per-connection
// rate (20 messages a second each, 1,000 characters each: 100 a second
// and 120 KB/s into the room, more than its budget of 50 messages and
// 64 KiB a second), for 4 s, while an honest pair chats in it, one message
// a second each. The flood is refused with rate_limited naming the room's
// budget past it, and the room takes no more than its budget; the pair's
// messages all arrive, in order, to both. The pair's latency is logged,
// not asserted.
func TestRoomFlood(t *testing.T) {
	ts := chattest.StartInProcess(t) // default limits: -rate 20, the room budgets on
	a, b := chattest.Dial(t, ts.URL, "?batch=1"), chattest.Dial(t, ts.URL, "?batch=1")
	a.Join(t, "lobby")
	b.Join(t, "lobby")
	const flooders, each, every = 5, 80, 50 * time.Millisecond
	var fs []*chattest.Client
	for range flooders {
		c := chattest.Dial(t, ts.URL, "?batch=1")
		c.Join(t, "lobby")
		fs = append(fs, c)
	}
	stop := make(chan struct{})
	ra, rb := readHonest(a, stop), readHonest(b, stop)

	type floodResult struct {
		acked, roomRefused, connRefused int
		err                             error
	}
	results := make(chan floodResult, flooders)
	text := strings.Repeat("f", 1000)
	start := time.Now()
	for k, c := range fs {
		go func() {
			var res floodResult
			defer func() { results <- res }()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for i := range each {
				if res.err = c.Writef(`{"type":"msg","id":"f%d-%d","payload":{"message":%q}}`, k, i, text); res.err != nil {
					return
				}
				<-tick.C
			}
			for answered := 0; answered < each; {
				f, err := c.Read(chattest.Timeout)
				if err != nil {
					res.err = fmt.Errorf("flooder %d after %d answers: %w", k, answered, err)
					return
				}
				switch f.Type {
				case protocol.TypeAck:
					res.acked++
				case protocol.TypeError:
					var e protocol.Error
					protocol.DecodePayload(f.Envelope, &e)
					switch {
					case e.Code == protocol.CodeRateLimited && e.Field == "roomID" && strings.Contains(e.Message, "room lobby is over its budget"):
						res.roomRefused++
					case e.Code == protocol.CodeRateLimited:
						res.connRefused++
					default:
						res.err = fmt.Errorf("flooder %d: error %s", k, f)
						return
					}
				default:
					continue
				}
				answered++
			}
		}()
	}

	// The pair: one message a second each, alternately, while the flood
	// goes on.
	var sent []string
	sentAt := map[string]time.Time{}
	for i := range 8 {
		from := []*chattest.Client{a, b}[i%2]
		msg := fmt.Sprintf("honest %d", i)
		sentAt[msg] = time.Now()
		sent = append(sent, msg)
		from.Sendf(t, `{"type":"msg","id":"h%d","payload":{"message":%q}}`, i, msg)
		time.Sleep(500 * time.Millisecond)
	}
	var acked, roomRefused, connRefused int
	for range flooders {
		res := <-results
		if res.err != nil {
			t.Fatal(res.err)
		}
		acked += res.acked
		roomRefused += res.roomRefused
		connRefused += res.connRefused
	}
	elapsed := time.Since(start)

	// Every honest message reaches both, once, in order.
	// (Checked below, message by message, whether or not they all came.)
	chattest.Poll(chattest.Timeout, func() bool {
		ma, _ := ra.snapshot()
		mb, _ := rb.snapshot()
		return len(ma) >= len(sent) && len(mb) >= len(sent)
	})
	close(stop)
	<-ra.done
	<-rb.done
	var lat []time.Duration
	for name, r := range map[string]*honestReader{"a": ra, "b": rb} {
		msgs, errs := r.snapshot()
		if len(errs) > 0 {
			t.Errorf("%s got errors for honest messages: %v", name, errs)
		}
		var texts []string
		for i, m := range msgs {
			texts = append(texts, m.text)
			if i > 0 && m.seq <= msgs[i-1].seq {
				t.Errorf("%s got seq %d after %d", name, m.seq, msgs[i-1].seq)
			}
			lat = append(lat, m.at.Sub(sentAt[m.text]))
		}
		if !slices.Equal(texts, sent) {
			t.Errorf("%s got the honest messages %q, want %q", name, texts, sent)
		}
	}

	offered := flooders * each
	if roomRefused == 0 {
		t.Errorf("the flood (%d messages in %v) was never refused by the room's budget", offered, elapsed)
	}
	// Two seconds of budget at once, a second of reserve for the quiet,
	// and the rate since.
	most := int(2*room.DefaultRoomRate+room.DefaultRoomRate+room.DefaultRoomRate*elapsed.Seconds()) + 1
	if took := acked + len(sent); took > most {
		t.Errorf("the room took %d messages in %v, want at most %d", took, elapsed, most)
	}
	if n := metric(t, ts, `roomchat_budget_refusals_total{budget="room_msgs"}`) + metric(t, ts, `roomchat_budget_refusals_total{budget="room_bytes"}`); int(n) != roomRefused {
		t.Errorf("/metrics counts %v refusals by the room's budgets, the flooders got %d", n, roomRefused)
	}
	slices.Sort(lat)
	t.Logf("flood: %d messages offered by %d sockets in %v, %d taken, %d refused by the room's budget, %d by the connection's limit",
		offered, flooders, elapsed.Round(time.Millisecond), acked, roomRefused, connRefused)
	if len(lat) > 0 {
		t.Logf("the honest pair's %d receipts during the flood: p50 %v, p99 %v, max %v",
			len(lat), lat[len(lat)/2].Round(time.Microsecond), lat[(len(lat)*99+99)/100-1].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	}
}

// TestNoBudgetsWithoutRate: -rate 0 (benchmarks, trusted bots) turns the
// room budgets off with the connection limit: the same flood, sent at
// once, is stored whole.
func TestNoBudgetsWithoutRate(t *testing.T) {
	ts := chattest.StartInProcess(t, chattest.NoRate)
	const flooders, each = 5, 80
	text := strings.Repeat("f", 1000)
	var wg sync.WaitGroup
	errs := make(chan error, flooders)
	for k := range flooders {
		c := chattest.Dial(t, ts.URL, "?batch=1")
		c.Join(t, "lobby")
		wg.Go(func() {
			for i := range each {
				if err := c.Writef(`{"type":"msg","id":"f%d-%d","payload":{"message":%q}}`, k, i, text); err != nil {
					errs <- err
					return
				}
			}
			for i := range each {
				if _, err := c.AckOf(fmt.Sprintf("f%d-%d", k, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestUserBudgetAcrossResumes: each connection has its own limit (40 at
// once), but a user that resumes on a new connection keeps its own
// budget over all of them (two connections' burst, 80): a third
// connection of the same user, opened at once, gets rate_limited for the
// user, not the connection.
func TestUserBudgetAcrossResumes(t *testing.T) {
	ts := chattest.StartInProcess(t)
	c := chattest.Dial(t, ts.URL, "")
	refused := 0
	for conn := range 3 {
		for i := range 40 {
			c.Sendf(t, `{"type":"ping","id":"p%d-%d"}`, conn, i)
		}
		for range 40 {
			f := c.Next(t)
			if f.Type == protocol.TypeError {
				var e protocol.Error
				chattest.Decode(t, f, &e)
				if e.Code != protocol.CodeRateLimited || !strings.Contains(e.Message, "over all its connections") {
					t.Fatalf("connection %d: %s, want rate_limited for the user", conn, f)
				}
				refused++
			}
		}
		if conn < 2 {
			next := chattest.Dial(t, ts.URL, "?resume="+c.Welcome.Resume)
			if next.Welcome.UserID != c.Welcome.UserID {
				t.Fatal("did not resume")
			}
			c = next
		}
	}
	if refused == 0 {
		t.Fatal("120 frames at once over three connections of one user: none refused, want the user's budget (80 at once) to bind")
	}
	t.Logf("120 frames over three connections of one user: %d refused for the user", refused)
}
