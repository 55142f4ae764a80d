// The append path of the Redis store: Append queues a message, one
// writer goroutine sends the queue in batches of publish scripts
// (lua/publish.lua), and each reply becomes the message's DoneFunc call.

package cluster

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

type request struct {
	msg      protocol.Message
	key      string
	done     store.DoneFunc
	flush    chan<- struct{}
	deadline time.Time // AppendTimeout after Append
}

// Errors of the store's own, wrapped in store.ErrUnavailable.
var (
	errQueueFull = errors.New("too many messages are waiting for redis")
	errExpired   = errors.New("redis did not take the message in time")
)

// Append implements store.Store: it queues m for the writer, or fails
// at once when the store is closed, Redis is taken for down (until a
// probe succeeds) or QueueLimit Appends are waiting already.
func (s *Store) Append(m protocol.Message, key string, done store.DoneFunc) {
	s.mu.Lock()
	var err error
	switch {
	case s.closed:
		err = store.ErrClosed
	case s.down != nil:
		err = s.down
	case len(s.queue) >= s.queueLimit:
		err = errQueueFull
	default:
		s.queue = append(s.queue, request{msg: m, key: key, done: done, deadline: time.Now().Add(s.appendTimeout)})
	}
	s.mu.Unlock()
	if err != nil {
		done(m, false, unavailable(err))
		return
	}
	signal(s.wake)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// maxBatch bounds one pipeline.
const maxBatch = 512

// write is the writer goroutine: it sends what is queued as one pipeline
// of publish scripts and calls each done in order, so that one room's
// messages are acked in seq order. It ends after Close, once the queue is
// empty.
func (s *Store) write() {
	defer close(s.stopped)
	var batch []request
	var sent []int
	execs := make([]rueidis.LuaExec, 0, maxBatch)
	for {
		s.mu.Lock()
		n := min(len(s.queue), maxBatch)
		batch = append(batch[:0], s.queue[:n]...)
		clear(s.queue[:n])
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil // let a burst's backing array go
		}
		closed, down := s.closed, s.down
		s.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			<-s.wake
			continue
		}
		s.send(batch, &sent, &execs, down)
		clear(batch)
	}
}

// send runs one batch: an Append past its deadline, or queued while Redis
// is taken for down or after Close's context ended, fails unsent; the
// rest go as one pipeline, whose outcomes are passed on in order, with
// the flushes among them.
func (s *Store) send(batch []request, sent *[]int, execs *[]rueidis.LuaExec, down error) {
	now := time.Now()
	*sent, *execs = (*sent)[:0], (*execs)[:0]
	first := s.triage(batch, sent, now, down)
	var res []rueidis.RedisResult
	var short error // the replicas did not all acknowledge (Options.Wait)
	if len(*sent) > 0 {
		res, short = s.pipeline(batch, *sent, execs, first, now)
	}
	s.settle(batch, *sent, res, short)
}

// triage is send's first step: it fails each Append of batch that is past
// its deadline, or queued while Redis is taken for down or after Close's
// context ended, and puts the index of every other Append (not a flush)
// in sent. It returns the earliest deadline among those.
func (s *Store) triage(batch []request, sent *[]int, now time.Time, down error) (first time.Time) {
	aborted := s.base.Err() != nil
	for i, r := range batch {
		var err error
		switch {
		case r.flush != nil:
			continue
		case aborted:
			err = store.ErrClosed
		case down != nil:
			err = down
		case !now.Before(r.deadline):
			err = errExpired
		default:
			if first.IsZero() || r.deadline.Before(first) {
				first = r.deadline
			}
			*sent = append(*sent, i)
			continue
		}
		r.done(r.msg, false, unavailable(err))
	}
	return first
}

// pipeline is send's second step: it sends the Appends of batch at sent as
// one pipeline of publish scripts (built in execs) and returns their
// replies, and the replicas' shortfall (Options.Wait).
func (s *Store) pipeline(batch []request, sent []int, execs *[]rueidis.LuaExec, first, now time.Time) ([]rueidis.RedisResult, error) {
	// The scripts give up at cutoff, in Redis's clock; so does the
	// wait for their answers, in ours. A healthy Redis answers in
	// well under Timeout: past it (or past the first deadline), the
	// batch is lost, and what it held is refused unstored.
	cutoff := now.Add(s.timeout)
	if first.Before(cutoff) {
		cutoff = first
	}
	for _, i := range sent {
		*execs = append(*execs, s.publishExec(batch[i].msg, batch[i].key, cutoff, now))
	}
	ctx, cancel := s.callContext(time.Until(cutoff))
	res, short := s.publishMulti(ctx, *execs, cutoff)
	cancel()
	if lost := lostErr(res); lost != nil && s.base.Err() == nil {
		s.setDown(lost)
		// Redis may still run what it was sent (a stopped process
		// that resumes reads its socket): until cutoff has passed,
		// its scripts would store it, so the refusals wait for that,
		// unless nothing can have reached Redis.
		if !unsent(lost) {
			wait := time.NewTimer(time.Until(cutoff))
			select {
			case <-wait.C:
			case <-s.base.Done():
			}
			wait.Stop()
		}
	}
	return res, short
}

// settle is send's last step: it passes the outcomes on in batch's order,
// closing each flush and calling each sent Append's DoneFunc with its
// reply.
func (s *Store) settle(batch []request, sent []int, res []rueidis.RedisResult, short error) {
	k := 0
	for i, r := range batch {
		switch {
		case r.flush != nil:
			close(r.flush)
		case k < len(sent) && sent[k] == i:
			stored, dup, err := parsePublish(r.msg, res[k])
			k++
			if err == nil && short != nil {
				err = short
			}
			if err != nil && !errors.Is(err, store.ErrMuted) && !errors.Is(err, store.ErrPostRule) {
				err = unavailable(err)
			}
			r.done(stored, dup, err)
		}
	}
}

// lostErr returns the error of a pipeline that failed as a whole (a
// connection lost, a timeout), nil if Redis answered every command.
func lostErr(res []rueidis.RedisResult) error {
	for _, r := range res {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			if _, ok := rueidis.IsRedisErr(err); !ok {
				return err
			}
		}
	}
	return nil
}

// unsent reports whether err says that a call never reached Redis: the
// connection could not be made.
func unsent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// publishExec is one publish.lua call: m, refused by Redis past cutoff.
func (s *Store) publishExec(m protocol.Message, key string, cutoff, now time.Time) rueidis.LuaExec {
	m.Seq = 0
	below := "0"
	if m.BelowModerator {
		below = "1"
	}
	body, _ := json.Marshal(m)
	rk := s.roomKeys(m.RoomID)
	hasKey, dk := "0", rk[1] // a key of the room's slot when unused
	if key != "" {
		hasKey, dk = "1", s.dedupKey(m.RoomID, key)
	}
	limit, age := s.ret.For(m.RoomID)
	ageDay, ageTime, trimDay, trimTime := "", "", "", ""
	if age > 0 {
		ageDay, ageTime = cutoffArgs(now.Add(-age))
		// Trimming waits for a sixteenth of the age more, so that it
		// runs once per batch of old messages, not at every write.
		trimDay, trimTime = cutoffArgs(now.Add(-age - age/16))
	}
	return rueidis.LuaExec{
		Keys: []string{rk[0], rk[1], dk, rk[2], rk[3], rk[4], rk[5]},
		Args: []string{
			string(body), strconv.Itoa(limit), rk[0][:len(rk[0])-2], s.storeEpoch(), // the channel: prefix:{room}
			strconv.Itoa(int(store.DedupWindow / time.Second)), hasKey, m.ID,
			strconv.FormatInt(cutoff.UnixMilli()+s.skew.Load(), 10),
			strconv.FormatInt(s.idleTTL.Milliseconds(), 10),
			ageDay, ageTime, trimDay, trimTime, strconv.FormatInt(max(m.Redacts, 0), 10),
			m.From.UserID, below, strconv.FormatInt(s.nodeSpan.Load(), 10),
		},
	}
}

// cutoffArgs gives the scripts a time as they compare messages' ts:
// YYYYMMDD and HHMMSSmmm, in UTC.
func cutoffArgs(t time.Time) (day, clock string) {
	t = t.UTC()
	return t.Format("20060102"), t.Format("150405") + fmt.Sprintf("%03d", t.Nanosecond()/1e6)
}

// parsePublish reads publish.lua's answer for m.
func parsePublish(m protocol.Message, r rueidis.RedisResult) (protocol.Message, bool, error) {
	m.BelowModerator = false
	arr, err := r.ToArray()
	if err != nil {
		return m, false, err
	}
	if len(arr) < 1 {
		return m, false, errors.New("publish: no values")
	}
	status, _ := arr[0].AsInt64()
	switch {
	case status == -1:
		return m, false, errExpired
	case status == -2 && len(arr) == 2:
		// A muted sender (SPEC §11): refused, not a failure of Redis.
		until, err := arr[1].AsInt64()
		if err != nil {
			return m, false, err
		}
		return m, false, &store.MutedError{Until: fromMs(until)}
	case status == -3:
		// A member under the moderators post rule (SPEC §11).
		return m, false, &store.PostRuleError{Rule: store.ModeratorsOnly}
	case status == 0 && len(arr) == 4:
		// A retry: the original's seq and ID, and the original itself
		// while the stream holds it.
		seq, err := arr[1].AsInt64()
		if err != nil {
			return m, false, err
		}
		id, err := arr[2].ToString()
		if err != nil {
			return m, false, err
		}
		if strings.HasPrefix(id, "{") {
			// Written before de-duplication keys held IDs: the message.
			orig, err := decodeMessage(strconv.FormatInt(seq, 10), id)
			return orig, true, err
		}
		if body, err := arr[3].ToString(); err == nil {
			if orig, err := decodeMessage(strconv.FormatInt(seq, 10), body); err == nil {
				return orig, true, nil
			}
		}
		m.ID, m.Seq = id, seq
		return m, true, nil
	case status == 1 && len(arr) >= 2:
		seq, err := arr[1].AsInt64()
		if err != nil {
			return m, false, err
		}
		m.Seq = seq
		return m, false, nil
	}
	return m, false, fmt.Errorf("publish: %d values", len(arr))
}
