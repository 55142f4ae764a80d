package cluster

import (
	"context"
	"crypto/rand"
	_ "embed"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

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
	// nodeSpan is Redis's stream-node-max-entries, read with the keys
	// (readNodeSpan): what a redaction writes again (publish.lua). 0 while
	// it is not known: a redaction writes the whole stream again.
	nodeSpan atomic.Int64

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

// Open connects to Redis, checks it, and starts the writer and the keeper.
func Open(ctx context.Context, opts Options) (*Store, error) {
	copt, err := clientOption(opts.URL)
	if err != nil {
		return nil, err
	}
	opts.setDefaults()
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

// setDefaults fills the zero fields of o with their documented defaults
// and raises AppendTimeout and IdleTTL to the floors Options describes.
func (o *Options) setDefaults() {
	if o.Prefix == "" {
		o.Prefix = "roomchat"
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.AppendTimeout <= 0 {
		o.AppendTimeout = 5 * time.Second
	}
	o.AppendTimeout = max(o.AppendTimeout, 2*o.Timeout)
	if o.QueueLimit <= 0 {
		o.QueueLimit = 10000
	}
	if o.IdleTTL <= 0 {
		o.IdleTTL = 30 * 24 * time.Hour
	}
	o.IdleTTL = max(o.IdleTTL, o.Retention.MaxAge)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
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
