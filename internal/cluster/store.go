package cluster

import (
	"context"
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	gonanoid "github.com/matoous/go-nanoid/v2"
	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

var (
	//go:embed lua/publish.lua
	publishLua string
	//go:embed lua/page.lua
	pageLua string
	//go:embed lua/rotate.lua
	rotateLua string

	publishScript = rueidis.NewLuaScript(publishLua)
	pageScript    = rueidis.NewLuaScript(pageLua)
	rotateScript  = rueidis.NewLuaScript(rotateLua)
)

// Options configure a Store.
type Options struct {
	// URL is redis://[user:password@]host:port[/db]. Its credentials are
	// never logged or returned in an error.
	URL string
	// Prefix starts every key and channel ("roomchat").
	Prefix string
	// Retention bounds each room's stream (MaxMessages, approximately:
	// Redis trims whole stream nodes). MaxAge is not supported.
	Retention store.Retention
	// Timeout bounds every Redis call (2 s): within it a call that Redis
	// does not answer fails, and the client sees store_unavailable.
	Timeout time.Duration
	// Logger receives warnings (a risky Redis setting) and errors.
	Logger *slog.Logger
}

// emptyRoomTTL is how long the epoch of a room that never got a message
// is kept (page.lua): joining a room fixes its epoch, and a room nobody
// writes to costs Redis nothing after a day.
const emptyRoomTTL = 24 * time.Hour

// Store is store.Store on Redis: each room is a stream of its messages
// (the entry ID is the seq), a meta hash (epoch, last seq) and
// de-duplication keys, all under the room's hash tag, so that Redis
// Cluster can hold them later without a migration. Appends go through
// one goroutine (the writer), which sends everything queued as one
// pipeline and calls back in order.
type Store struct {
	client  rueidis.Client
	prefix  string
	maxLen  string
	timeout time.Duration
	log     *slog.Logger
	key     []byte // token key, read or created at Open

	mu      sync.Mutex // guards the fields below
	queue   []request
	closed  bool
	wake    chan struct{} // signals the writer; cap 1
	stopped chan struct{} // closed when the writer has exited

	// subscriber, when set, reports whether the node's pub/sub is in
	// place and caught up (Broker); Ready includes it.
	subscriber func() error
}

type request struct {
	msg   protocol.Message
	key   string
	done  store.DoneFunc
	flush chan<- struct{}
}

// Open connects to Redis, checks it, and starts the writer.
func Open(ctx context.Context, opts Options) (*Store, error) {
	copt, err := rueidis.ParseURL(opts.URL)
	if err != nil {
		// The parser's error may quote the URL, password and all.
		return nil, errors.New("the Redis URL is not valid; want redis://[user:password@]host:port[/db]")
	}
	if opts.Prefix == "" {
		opts.Prefix = "roomchat"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	copt.DisableCache = true
	// A connection that stops answering is found within the timeout, not
	// after TCP keepalive's minutes.
	copt.ConnWriteTimeout = opts.Timeout
	copt.Dialer.Timeout = opts.Timeout
	copt.ClientName = "roomchatd"
	client, err := rueidis.NewClient(copt)
	if err != nil {
		return nil, fmt.Errorf("connect to redis %s: %s", RedactURL(opts.URL), Redact(err.Error(), opts.URL))
	}
	s := &Store{
		client:  client,
		prefix:  opts.Prefix,
		maxLen:  strconv.Itoa(opts.Retention.Limit()),
		timeout: opts.Timeout,
		log:     opts.Logger,
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	if err := s.init(ctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("redis %s: %s", RedactURL(opts.URL), Redact(err.Error(), opts.URL))
	}
	go s.write()
	return s, nil
}

// init reads or creates the token key and warns about settings that can
// lose data silently.
func (s *Store) init(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*s.timeout)
	defer cancel()
	k := make([]byte, 32)
	rand.Read(k)
	name := s.prefix + ":token_key"
	if err := s.client.Do(ctx, s.client.B().Set().Key(name).Value(string(k)).Nx().Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
		return err
	}
	key, err := s.client.Do(ctx, s.client.B().Get().Key(name).Build()).AsBytes()
	if err != nil {
		return err
	}
	if len(key) < 32 {
		return fmt.Errorf("%s holds %d bytes, want at least 32", name, len(key))
	}
	s.key = key
	policy, err := s.client.Do(ctx, s.client.B().ConfigGet().Parameter("maxmemory-policy").Build()).AsStrMap()
	switch {
	case err != nil:
		s.log.Warn("redis: cannot read maxmemory-policy; make sure it is noeviction, or Redis may drop rooms' history and seqs", "err", err)
	case policy["maxmemory-policy"] != "noeviction":
		s.log.Warn("REDIS EVICTS KEYS: maxmemory-policy is not noeviction; under memory pressure Redis will drop history, seqs and de-duplication keys (rooms then get a new epoch). Set maxmemory-policy noeviction.", "maxmemory-policy", policy["maxmemory-policy"])
	}
	return nil
}

// Keys of one room share the hash tag {roomID}.
func (s *Store) streamKey(room string) string { return s.prefix + ":{" + room + "}:s" }
func (s *Store) metaKey(room string) string   { return s.prefix + ":{" + room + "}:m" }
func (s *Store) channel(room string) string   { return s.prefix + ":{" + room + "}" }
func (s *Store) dedupKey(room, key string) string {
	return s.prefix + ":{" + room + "}:d:" + key
}

// Append implements store.Store: it queues m for the writer.
func (s *Store) Append(m protocol.Message, key string, done store.DoneFunc) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		done(m, false, unavailable(store.ErrClosed))
		return
	}
	s.queue = append(s.queue, request{msg: m, key: key, done: done})
	s.mu.Unlock()
	s.signal()
}

func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
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
	execs := make([]rueidis.LuaExec, 0, maxBatch)
	for {
		s.mu.Lock()
		n := min(len(s.queue), maxBatch)
		batch = append(batch[:0], s.queue[:n]...)
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil // let a burst's backing array go
		}
		closed := s.closed
		s.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			<-s.wake
			continue
		}
		execs = execs[:0]
		for _, r := range batch {
			if r.flush != nil {
				continue
			}
			execs = append(execs, s.publishExec(r.msg, r.key))
		}
		var res []rueidis.RedisResult
		if len(execs) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
			res = publishScript.ExecMulti(ctx, s.client, execs...)
			cancel()
		}
		i := 0
		for _, r := range batch {
			if r.flush != nil {
				close(r.flush)
				continue
			}
			stored, dup, err := parsePublish(r.msg, res[i])
			i++
			if err != nil {
				err = unavailable(err)
			}
			r.done(stored, dup, err)
		}
		clear(batch)
	}
}

func (s *Store) publishExec(m protocol.Message, key string) rueidis.LuaExec {
	m.Seq = 0
	body, _ := json.Marshal(m)
	hasKey, dk := "0", s.metaKey(m.RoomID) // a key of the room's slot when unused
	if key != "" {
		hasKey, dk = "1", s.dedupKey(m.RoomID, key)
	}
	return rueidis.LuaExec{
		Keys: []string{s.streamKey(m.RoomID), s.metaKey(m.RoomID), dk},
		Args: []string{string(body), s.maxLen, s.channel(m.RoomID), newEpoch(), strconv.Itoa(int(store.DedupWindow / time.Second)), hasKey},
	}
}

// parsePublish reads publish.lua's answer.
func parsePublish(m protocol.Message, r rueidis.RedisResult) (protocol.Message, bool, error) {
	arr, err := r.ToArray()
	if err != nil {
		return m, false, err
	}
	if len(arr) < 2 {
		return m, false, fmt.Errorf("publish: %d values", len(arr))
	}
	isNew, _ := arr[0].AsInt64()
	if isNew == 0 {
		prior, err := arr[1].ToString()
		if err != nil {
			return m, false, err
		}
		seq, body, _ := strings.Cut(prior, "\n")
		orig, err := decodeMessage(seq, body)
		return orig, true, err
	}
	seq, err := arr[1].AsInt64()
	if err != nil {
		return m, false, err
	}
	m.Seq = seq
	return m, false, nil
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

// newEpoch returns a fresh epoch for a room that has none.
func newEpoch() string { return gonanoid.Must(12) }

// Page implements store.Store: one script reads the room's meta and the
// range from one snapshot (Redis runs a script atomically).
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
	if s.isClosed() {
		return store.RoomInfo{}, nil, unavailable(store.ErrClosed)
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
	arr, err := pageScript.Exec(ctx, s.client,
		[]string{s.streamKey(roomID), s.metaKey(roomID)},
		[]string{newEpoch(), strconv.FormatInt(lo, 10), hi, strconv.Itoa(max(q.Limit, 0)), newest, read, strconv.Itoa(int(emptyRoomTTL / time.Second)), s.maxLen},
	).ToArray()
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	if len(arr) != 4 {
		return store.RoomInfo{}, nil, unavailable(fmt.Errorf("page: %d values", len(arr)))
	}
	var info store.RoomInfo
	info.Epoch, _ = arr[0].ToString()
	info.LastSeq, _ = arr[1].AsInt64()
	info.FirstSeq, _ = arr[2].AsInt64()
	entries, err := arr[3].AsXRange()
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	msgs, err := s.decodeEntries(entries, q)
	if err != nil {
		return store.RoomInfo{}, nil, unavailable(err)
	}
	return info, msgs, nil
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

// TokenKey implements store.Store: one key for the whole cluster, so a
// token issued by any node is good on every node.
func (s *Store) TokenKey() []byte { return s.key }

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
	s.signal()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready implements store.Store: Redis answers, and the node's pub/sub is
// subscribed and caught up.
func (s *Store) Ready(ctx context.Context) error {
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

// Close implements store.Store: pending appends finish (or fail), then the
// connections close.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return nil
	}
	s.signal()
	<-s.stopped
	s.client.Close()
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
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
	return u.String()
}

// Redact removes the URL's password and user name from text (an error
// message that may quote them).
func Redact(text, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
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
