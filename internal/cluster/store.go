package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"
	gonanoid "github.com/matoous/go-nanoid/v2"
	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

var (
	//go:embed lua/common.lua
	commonLua string
	//go:embed lua/publish.lua
	publishLua string
	//go:embed lua/page.lua
	pageLua string
	//go:embed lua/position.lua
	positionLua string
	//go:embed lua/rotate.lua
	rotateLua string

	publishScript  = rueidis.NewLuaScript(commonLua + publishLua)
	pageScript     = rueidis.NewLuaScript(commonLua + pageLua)
	positionScript = rueidis.NewLuaScript(commonLua + positionLua)
	rotateScript   = rueidis.NewLuaScript(rotateLua)
)

// Options configure a Store.
type Options struct {
	// URL is redis://[user:password@]host:port[/db], or
	// redis+sentinel://[user:password@]host:port[,host:port…]/mastername[/db]
	// for a Sentinel-managed primary (clientOption). Its credentials are
	// never logged or returned in an error.
	URL string
	// Wait is how many replicas must have a message before it is acked
	// (Redis WAIT after the batch's scripts); 0 acks once the primary has
	// it. A message that fewer replicas acknowledged in time fails with
	// store.ErrUnavailable, stored or not.
	Wait int
	// Prefix starts every key and channel ("roomchat").
	Prefix string
	// Retention bounds each room's stream: MaxMessages approximately
	// (Redis trims whole stream nodes; reads cut exactly), MaxAge by the
	// messages' ts (writes trim in batches, reads cut exactly).
	Retention store.Retention
	// Timeout bounds every Redis call (2 s): within it a call that Redis
	// does not answer fails, and the client sees store_unavailable.
	Timeout time.Duration
	// AppendTimeout bounds an Append from the moment it is queued (5 s,
	// SPEC §8): by then done has been called, and an Append that failed
	// is never stored afterwards. It is at least twice Timeout.
	AppendTimeout time.Duration
	// QueueLimit is the most Appends waiting for Redis (10,000); past it
	// an Append fails at once.
	QueueLimit int
	// IdleTTL is how long a room's keys outlive its last write, join or
	// member (30 days, and at least Retention.MaxAge).
	IdleTTL time.Duration
	// Logger receives warnings (a risky Redis setting) and errors.
	Logger *slog.Logger
}

// Timings of the store's keeper (watchRedis): while Redis answers, it reads
// the shared keys every keepEvery; once a call got no answer, it probes
// every probeEvery, and Appends fail at once until a probe succeeds.
const (
	keepEvery  = time.Second
	probeEvery = 200 * time.Millisecond
)

// epochTTL is how long the store's epoch (prefix:epoch) lives: the epoch
// of a room that has no keys. A room whose keys lapse (IdleTTL) and come
// back later must not get the epoch it had, or its old clients would take
// the new seqs for ones they have seen; so the store's epoch changes more
// often than an idle room lapses.
func (s *Store) epochTTL() time.Duration { return min(24*time.Hour, s.idleTTL/4) }

// Store is store.Store on Redis: each room is a stream of its messages
// (the entry ID is the seq), a meta hash (epoch, last seq),
// de-duplication keys and its moderation state (moderation.go), all under
// the room's hash tag, so that Redis
// Cluster can hold them later without a migration. A room's stream and
// meta lapse IdleTTL after its last write, join or member check; reads
// create nothing.
//
// Appends go through one goroutine (the writer, write), which sends what
// is queued as one pipeline and calls back in order. Each Append has a
// deadline (AppendTimeout from Append); the script refuses it once Redis's
// clock has passed the time the writer gives up on it, so that an Append
// answered with an error is never stored later by a Redis that was stuck
// and wakes up. A second goroutine (the keeper, watchRedis) reads the shared
// keys (the token key, the store's epoch, Redis's clock) every second
// and, once a call got no answer, probes Redis until it answers:
// meanwhile Appends and reads fail at once.
type Store struct {
	client        rueidis.Client
	prefix        string
	ret           store.Retention
	idleTTL       time.Duration
	timeout       time.Duration
	appendTimeout time.Duration
	queueLimit    int
	wait          int
	log           *slog.Logger

	shortWarned atomic.Int64 // Unix ns of the last warning of errNotReplicated

	key   atomic.Pointer[[]byte] // the token key; written by watchRedis
	epoch atomic.Pointer[string] // the store's epoch; written by watchRedis

	// skew is Redis's clock less ours, in ms, less the uncertainty of the
	// reading: a time of ours plus skew is one Redis's clock has not
	// reached yet when ours reaches it. Written by watchRedis.
	skew   atomic.Int64
	skewAt time.Time // when skew was read; owned by readKeys (init, then watchRedis)

	mu      sync.Mutex // guards the fields below
	queue   []request
	closed  bool
	down    error         // why Redis is taken for down; nil while it answers
	downs   uint64        // how many times down was set, so that a probe that began before clears nothing
	stopped chan struct{} // closed when the writer has exited
	wake    chan struct{} // signals the writer; cap 1
	probe   chan struct{} // signals the keeper; cap 1

	abort     context.CancelFunc // ends base: Close's context ended
	base      context.Context    // the writer's calls; ended by abort
	keepStop  chan struct{}      // closed by Close
	keepEnded chan struct{}      // closed when the keeper has exited

	// subscriber, when set, reports whether the node's pub/sub is in
	// place and caught up (Broker); Ready includes it.
	subscriber func() error
	// reassert, when set, asserts this node's presence entries in a room
	// whose keys Redis lost (Roster), before its members get a new joined.
	reassert func(room string)
	// served, when set, is told of every read's last seq and its message
	// ID: a reader may have been told of messages that this node's
	// pub/sub has not brought yet (Broker.served).
	served func(room, epoch string, seq int64, id string)
}

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

// Open connects to Redis, checks it, and starts the writer and the keeper.
func Open(ctx context.Context, opts Options) (*Store, error) {
	copt, err := clientOption(opts.URL)
	if err != nil {
		return nil, err
	}
	if opts.Prefix == "" {
		opts.Prefix = "roomchat"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.AppendTimeout <= 0 {
		opts.AppendTimeout = 5 * time.Second
	}
	opts.AppendTimeout = max(opts.AppendTimeout, 2*opts.Timeout)
	if opts.QueueLimit <= 0 {
		opts.QueueLimit = 10000
	}
	if opts.IdleTTL <= 0 {
		opts.IdleTTL = 30 * 24 * time.Hour
	}
	opts.IdleTTL = max(opts.IdleTTL, opts.Retention.MaxAge)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	copt.DisableCache = true
	// A connection that stops answering is found within the timeout, not
	// after TCP keepalive's minutes.
	copt.ConnWriteTimeout = opts.Timeout
	copt.Dialer.Timeout = opts.Timeout
	copt.Sentinel.Dialer.Timeout = opts.Timeout
	copt.ClientName = "roomchatd"
	client, err := rueidis.NewClient(copt)
	if err != nil {
		return nil, fmt.Errorf("connect to redis %s: %s", RedactURL(opts.URL), Redact(err.Error(), opts.URL))
	}
	s := &Store{
		client:        client,
		prefix:        opts.Prefix,
		ret:           opts.Retention,
		idleTTL:       opts.IdleTTL,
		timeout:       opts.Timeout,
		appendTimeout: opts.AppendTimeout,
		queueLimit:    opts.QueueLimit,
		wait:          max(opts.Wait, 0),
		log:           opts.Logger,
		stopped:       make(chan struct{}),
		wake:          make(chan struct{}, 1),
		probe:         make(chan struct{}, 1),
		keepStop:      make(chan struct{}),
		keepEnded:     make(chan struct{}),
	}
	s.base, s.abort = context.WithCancel(context.Background())
	if err := s.init(ctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("redis %s: %s", RedactURL(opts.URL), Redact(err.Error(), opts.URL))
	}
	go s.write()
	go s.watchRedis()
	return s, nil
}

// init reads or creates the shared keys and warns about settings that
// can lose data silently.
func (s *Store) init(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*s.timeout)
	defer cancel()
	k := make([]byte, 32)
	rand.Read(k)
	s.key.Store(&k)
	if err := s.readKeys(ctx); err != nil {
		return err
	}
	policy, err := s.client.Do(ctx, s.client.B().ConfigGet().Parameter("maxmemory-policy").Build()).AsStrMap()
	switch {
	case err != nil:
		s.log.Warn("redis: cannot read maxmemory-policy; make sure it is noeviction, or Redis may drop rooms' history and seqs", "err", err)
	case policy["maxmemory-policy"] != "noeviction":
		s.log.Warn("REDIS EVICTS KEYS: maxmemory-policy is not noeviction; under memory pressure Redis will drop history, seqs and de-duplication keys (rooms then get a new epoch). Set maxmemory-policy noeviction.", "maxmemory-policy", policy["maxmemory-policy"])
	}
	return nil
}

// readKeys reads Redis's clock, for the deadlines the publish script
// checks in it, and the keys the nodes share: the token key, which signs
// resume tokens on every node, and the store's epoch. Either may be gone
// (a FLUSHALL, a restart without persistence, the epoch's lifetime): the
// token key is put back as this node has it, so that every running node
// keeps signing with the same one and a node that starts later reads it;
// a lapsed epoch is replaced by a new one. A key another node wrote first
// is the one taken.
func (s *Store) readKeys(ctx context.Context) error {
	tokenKey, epochKey := s.prefix+":token_key", s.prefix+":epoch"
	c := s.client
	t0 := time.Now()
	res := c.DoMulti(ctx,
		c.B().Time().Build(),
		c.B().Get().Key(tokenKey).Build(),
		c.B().Get().Key(epochKey).Build())
	t1 := time.Now()
	clock, err := res[0].AsIntSlice()
	if err != nil {
		return err
	}
	if len(clock) != 2 {
		return fmt.Errorf("TIME: %d values", len(clock))
	}
	// Redis read its clock before t1: the skew is at least the one it
	// would be at t1 (rounded up, less a millisecond for the script's
	// rounding down), so that a deadline in Redis's clock is never later
	// than ours. A slow reading makes too small a skew, and deadlines in
	// Redis's clock too early: it is kept only if the last one is older
	// than a minute.
	redisMS := clock[0]*1000 + clock[1]/1000
	skew := redisMS - (t1.UnixMicro()+999)/1000 - 1
	if t1.Sub(t0) < 100*time.Millisecond || t1.Sub(s.skewAt) > time.Minute {
		s.skew.Store(skew)
		s.skewAt = t1
	}

	key, err := res[1].AsBytes()
	if rueidis.IsRedisNil(err) {
		mine := *s.key.Load()
		if err := c.Do(ctx, c.B().Set().Key(tokenKey).Value(string(mine)).Nx().Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
			return err
		}
		key, err = c.Do(ctx, c.B().Get().Key(tokenKey).Build()).AsBytes()
	}
	if err != nil {
		return err
	}
	if len(key) < 32 {
		return fmt.Errorf("%s holds %d bytes, want at least 32", tokenKey, len(key))
	}
	if prev := s.key.Load(); !bytes.Equal(*prev, key) {
		s.key.Store(&key)
	}

	epoch, err := res[2].ToString()
	if rueidis.IsRedisNil(err) {
		if err := c.Do(ctx, c.B().Set().Key(epochKey).Value(newEpoch()).Nx().Px(s.epochTTL()).Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
			return err
		}
		epoch, err = c.Do(ctx, c.B().Get().Key(epochKey).Build()).ToString()
	}
	if err != nil {
		return err
	}
	s.epoch.Store(&epoch)
	return nil
}

// Keys of one room share the hash tag {roomID}.
func (s *Store) streamKey(room string) string { return s.prefix + ":{" + room + "}:s" }
func (s *Store) metaKey(room string) string   { return s.prefix + ":{" + room + "}:m" }
func (s *Store) channel(room string) string   { return s.prefix + ":{" + room + "}" }
func (s *Store) tombKey(room string) string   { return s.prefix + ":{" + room + "}:t" }

// roomKeys returns a room's stream, meta, tombstones, mutes, bans and
// post rule keys, cut from one string: one allocation on the publish
// path instead of six.
func (s *Store) roomKeys(room string) [6]string {
	const suffixes = "smtxbp"
	n := len(s.prefix) + len(room) + 5 // prefix:{room}:X
	b := make([]byte, 0, n*len(suffixes))
	for i := range len(suffixes) {
		b = append(b, s.prefix...)
		b = append(b, ":{"...)
		b = append(b, room...)
		b = append(b, "}:"...)
		b = append(b, suffixes[i])
	}
	all := string(b)
	var keys [6]string
	for i := range keys {
		keys[i] = all[i*n : (i+1)*n]
	}
	return keys
}

func (s *Store) dedupKey(room, key string) string {
	return s.prefix + ":{" + room + "}:d:" + key
}

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
	aborted := s.base.Err() != nil
	*sent, *execs = (*sent)[:0], (*execs)[:0]
	var first time.Time // the earliest deadline sent
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
	var res []rueidis.RedisResult
	var short error // the replicas did not all acknowledge (Options.Wait)
	if len(*sent) > 0 {
		// The scripts give up at cutoff, in Redis's clock; so does the
		// wait for their answers, in ours. A healthy Redis answers in
		// well under Timeout: past it (or past the first deadline), the
		// batch is lost, and what it held is refused unstored.
		cutoff := now.Add(s.timeout)
		if first.Before(cutoff) {
			cutoff = first
		}
		for _, i := range *sent {
			*execs = append(*execs, s.publishExec(batch[i].msg, batch[i].key, cutoff, now))
		}
		ctx, cancel := s.callContext(time.Until(cutoff))
		res, short = s.publishMulti(ctx, *execs, cutoff)
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
	}
	k := 0
	for i, r := range batch {
		switch {
		case r.flush != nil:
			close(r.flush)
		case k < len(*sent) && (*sent)[k] == i:
			stored, dup, err := parsePublish(r.msg, res[k])
			k++
			if err == nil && short != nil {
				err = short
			}
			if err != nil && !errors.Is(err, store.ErrMuted) {
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

// setDown takes Redis for down: Appends and reads fail at once until the
// keeper's probe succeeds, and what is queued fails now (its flushes stay
// in place for the writer, behind the batch it may be sending).
func (s *Store) setDown(err error) {
	s.mu.Lock()
	was := s.down
	s.down = err
	s.downs++
	var failed []request
	kept := s.queue[:0]
	for _, r := range s.queue {
		if r.flush != nil {
			kept = append(kept, r)
		} else {
			failed = append(failed, r)
		}
	}
	clear(s.queue[len(kept):])
	s.queue = kept
	s.mu.Unlock()
	if was == nil {
		s.log.Warn("redis does not answer; refusing messages until it does", "err", err)
	}
	for _, r := range failed {
		r.done(r.msg, false, unavailable(err))
	}
	signal(s.probe)
}

// watchRedis is the keeper goroutine: while Redis answers it reads the shared
// keys every keepEvery (readKeys); once a call got no answer (setDown), it
// probes every probeEvery, and clears the failure once Redis answers
// again. An error that Redis answers with (a full Redis refusing to write
// the epoch, or still loading its data) is an answer: it is logged, and
// the calls that meet it fail on their own. It ends with Close.
func (s *Store) watchRedis() {
	defer close(s.keepEnded)
	t := time.NewTimer(keepEvery)
	defer t.Stop()
	var warned time.Time
	for {
		select {
		case <-s.keepStop:
			return
		case <-t.C:
		case <-s.probe:
		}
		s.mu.Lock()
		downs := s.downs
		s.mu.Unlock()
		before := s.key.Load()
		ctx, cancel := s.callContext(min(s.timeout, time.Second))
		err := s.readKeys(ctx)
		cancel()
		if after := s.key.Load(); after != before {
			s.log.Warn("redis: the token key changed (another node put its own back after Redis lost it); resume tokens signed before may not work on this node until it restarts")
		}
		_, answered := rueidis.IsRedisErr(err)
		answered = answered || err == nil
		if err != nil && answered && time.Since(warned) > time.Minute {
			s.log.Warn("redis: reading the shared keys failed", "err", err)
			warned = time.Now()
		}
		s.mu.Lock()
		down, again := s.down, s.downs != downs
		if answered && down != nil && !again {
			s.down = nil
		}
		s.mu.Unlock()
		switch {
		case answered && down != nil && !again:
			s.log.Info("redis answers again")
			t.Reset(keepEvery)
		case answered && down == nil:
			t.Reset(keepEvery)
		case !answered && down == nil && s.base.Err() == nil:
			s.setDown(err) // signals probe: the next round comes at once
			t.Reset(probeEvery)
		default:
			t.Reset(probeEvery)
		}
	}
}

// callContext is a context for a Redis call that ends after d or when
// Close gives up (abort). A context with a deadline would make rueidis
// wait on the connection's own deadline, deaf to cancelling.
func (s *Store) callContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(s.base)
	timer := time.AfterFunc(d, cancel)
	return ctx, func() {
		timer.Stop()
		cancel()
	}
}

// publishExec is one publish.lua call: m, refused by Redis past cutoff.
func (s *Store) publishExec(m protocol.Message, key string, cutoff, now time.Time) rueidis.LuaExec {
	m.Seq = 0
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
			m.From.UserID,
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

func decodeMessage(seq, body string) (protocol.Message, error) {
	var m protocol.Message
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return m, fmt.Errorf("stored message: %w", err)
	}
	n, err := strconv.ParseInt(seq, 10, 64)
	if err != nil {
		return m, fmt.Errorf("stored seq %q: %w", seq, err)
	}
	m.Seq = n
	return m, nil
}

// newEpoch returns a fresh epoch.
func newEpoch() string { return gonanoid.Must(12) }

// storeEpoch is the epoch of a room that has no keys (readKeys).
func (s *Store) storeEpoch() string { return *s.epoch.Load() }

// Page implements store.Store: one script reads the room's meta and the
// range from one snapshot (Redis runs a script atomically). It writes
// nothing: a room nobody used reads as empty, with the store's epoch.
func (s *Store) Page(ctx context.Context, roomID string, q store.Query) (store.RoomInfo, []protocol.Message, error) {
	return s.page(ctx, roomID, q, true)
}

// Messages implements store.Store.
func (s *Store) Messages(ctx context.Context, roomID string, q store.Query) ([]protocol.Message, error) {
	_, msgs, err := s.page(ctx, roomID, q, true)
	return msgs, err
}

// Room implements store.Store.
func (s *Store) Room(ctx context.Context, roomID string) (store.RoomInfo, error) {
	info, _, err := s.page(ctx, roomID, store.Query{}, false)
	return info, err
}

// maxSeq is past every seq a room will reach (2^53: a million messages a
// second for 285 years) and what Lua's numbers, doubles, hold exactly, so
// that a script never writes one as 1e+17, which no stream command takes:
// a query's bounds are cut to it, and a since or after past it reads
// nothing, as with SQLite.
const maxSeq = 1 << 53

func (s *Store) page(ctx context.Context, roomID string, q store.Query, withMsgs bool) (store.RoomInfo, []protocol.Message, error) {
	if err := s.usable(); err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	lo := min(max(q.After, 0), maxSeq) + 1
	hi := "+"
	if q.Before > 0 && q.Before <= maxSeq {
		hi = strconv.FormatInt(q.Before-1, 10)
	}
	newest, read := "0", "0"
	if q.Newest {
		newest = "1"
	}
	if withMsgs {
		read = "1"
	}
	limit, age := s.ret.For(roomID)
	ageDay, ageTime := "", ""
	if age > 0 {
		ageDay, ageTime = cutoffArgs(time.Now().Add(-age))
	}
	arr, err := pageScript.Exec(ctx, s.client,
		[]string{s.streamKey(roomID), s.metaKey(roomID), s.tombKey(roomID)},
		[]string{s.storeEpoch(), strconv.FormatInt(lo, 10), hi, strconv.Itoa(max(q.Limit, 0)), newest, read, strconv.Itoa(limit), ageDay, ageTime},
	).ToArray()
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	if len(arr) != 5 {
		return store.RoomInfo{}, nil, unavailable(fmt.Errorf("page: %d values", len(arr)))
	}
	var info store.RoomInfo
	info.Epoch, _ = arr[0].ToString()
	info.LastSeq, _ = arr[1].AsInt64()
	info.FirstSeq, _ = arr[2].AsInt64()
	if limit == 0 {
		// The room keeps nothing, so nothing is truncated.
		return store.RoomInfo{Epoch: info.Epoch, LastSeq: info.LastSeq}, nil, nil
	}
	entries, err := arr[3].AsXRange()
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	msgs, err := s.decodeEntries(entries, q)
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	if info.LastSeq > 0 {
		lastID, _ := arr[4].ToString()
		s.mu.Lock()
		served := s.served
		s.mu.Unlock()
		if served != nil {
			served(roomID, info.Epoch, info.LastSeq, lastID)
		}
	}
	return info, msgs, nil
}

// usable returns why the store cannot serve now: closed, or Redis taken
// for down.
func (s *Store) usable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	return s.down
}

// decodeEntries turns stream entries, in the query's order (newest first
// for q.Newest), into messages oldest first, stopping at q's byte budget.
func (s *Store) decodeEntries(entries []rueidis.XRangeEntry, q store.Query) ([]protocol.Message, error) {
	msgs := make([]protocol.Message, 0, len(entries))
	n := 0
	for _, e := range entries {
		seq, _, _ := strings.Cut(e.ID, "-")
		m, err := decodeMessage(seq, e.FieldValues["m"])
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
		n += len(m.Message)
		if q.Full(n) {
			break
		}
	}
	if q.Newest {
		slices.Reverse(msgs)
	}
	return msgs, nil
}

// position is where a room stands (position.lua): its epoch ("" when it
// has no keys), last seq, the message ID at seq at (0: the last one), and
// the first seq its stream holds (0: none). With join, a room without
// keys gets them, with a new epoch.
type position struct {
	epoch string
	last  int64
	id    string
	head  int64
}

func (s *Store) positionExec(room string, join bool, at int64) rueidis.LuaExec {
	j := "0"
	if join {
		j = "1"
	}
	return rueidis.LuaExec{
		Keys: []string{s.streamKey(room), s.metaKey(room), s.tombKey(room), s.muteKey(room), s.banKey(room), s.ruleKey(room)},
		Args: []string{j, newEpoch(), strconv.FormatInt(at, 10), strconv.FormatInt(s.idleTTL.Milliseconds(), 10)},
	}
}

func parsePosition(r rueidis.RedisResult) (position, error) {
	arr, err := r.ToArray()
	if err != nil {
		return position{}, err
	}
	if len(arr) != 4 {
		return position{}, fmt.Errorf("position: %d values", len(arr))
	}
	var p position
	p.epoch, _ = arr[0].ToString() // nil: the room has no keys
	p.last, _ = arr[1].AsInt64()
	p.id, _ = arr[2].ToString()
	p.head, _ = arr[3].AsInt64()
	return p, nil
}

// join is a member's first join of room on this node (Broker.Subscribe):
// the room's keys are created if it has none, which fixes its epoch, and
// their lifetime starts again. It returns the room's position.
func (s *Store) join(ctx context.Context, room string) (position, error) {
	if err := s.usable(); err != nil {
		return position{}, err
	}
	ex := s.positionExec(room, true, 0)
	return parsePosition(positionScript.Exec(ctx, s.client, ex.Keys, ex.Args))
}

// Clear implements store.Store: the room's stream and tombstones go, its
// meta (epoch, last seq) stays, so reads say everything before is gone.
func (s *Store) Clear(ctx context.Context, roomID string) error {
	if err := s.usable(); err != nil {
		return unavailable(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.client.Do(ctx, s.client.B().Del().Key(s.streamKey(roomID), s.tombKey(roomID)).Build()).Error(); err != nil {
		return unavailable(err)
	}
	return nil
}

// TokenKey implements store.Store: one key for the whole cluster, so a
// token issued by any node is good on every node. After Redis lost it, it
// is the one this node put back, or the one another node put back first.
func (s *Store) TokenKey() []byte { return *s.key.Load() }

// Flush implements store.Store.
func (s *Store) Flush(ctx context.Context) error {
	ch := make(chan struct{})
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.queue = append(s.queue, request{flush: ch})
	s.mu.Unlock()
	signal(s.wake)
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready implements store.Store: Redis answers, and the node's pub/sub is
// subscribed and caught up. While Redis is taken for down it answers at
// once.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.usable(); err != nil {
		return unavailable(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.client.Do(ctx, s.client.B().Ping().Build()).Error(); err != nil {
		return unavailable(err)
	}
	s.mu.Lock()
	sub := s.subscriber
	s.mu.Unlock()
	if sub != nil {
		if err := sub(); err != nil {
			return unavailable(err)
		}
	}
	return nil
}

// Close implements store.Store: pending Appends finish or fail, each
// within its deadline, then the connections close.
func (s *Store) Close() error { return s.CloseContext(context.Background()) }

// CloseContext is Close bounded by ctx: once ctx ends, what is still
// queued fails unsent and the batch on its way is given up (its answers
// then come too early to promise it is not stored later, but whoever
// closes a store has closed the connections those answers were for).
func (s *Store) CloseContext(ctx context.Context) error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return nil
	}
	signal(s.wake)
	select {
	case <-s.stopped:
	case <-ctx.Done():
		s.abort()
		<-s.stopped
	}
	s.abort()
	close(s.keepStop)
	<-s.keepEnded
	s.client.Close() // up to a second more, if Redis is silent (rueidis)
	return nil
}

func unavailable(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// RedactURL returns the Redis URL without its password (and user).
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	return redactQuery(u.String(), u)
}

// Redact removes the URL's password and user name from text (an error
// message that may quote them).
func Redact(text, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return text
	}
	text = redactQuery(text, u)
	if u.User == nil {
		return text
	}
	if p, ok := u.User.Password(); ok && p != "" {
		text = strings.ReplaceAll(text, p, "xxxxx")
	}
	if n := u.User.Username(); n != "" {
		text = strings.ReplaceAll(text, n, "xxxxx")
	}
	return text
}
