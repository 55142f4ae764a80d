// Keys of the Redis store: the shared token key, the store's epoch and
// Redis's clock that every node reads, and the names of a room's keys.

package cluster

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	gonanoid "github.com/matoous/go-nanoid/v2"
	"github.com/redis/rueidis"
)

// epochTTL is how long the store's epoch (prefix:epoch) lives: the epoch
// of a room that has no keys. A room whose keys lapse (IdleTTL) and come
// back later must not get the epoch it had, or its old clients would take
// the new seqs for ones they have seen; so the store's epoch changes more
// often than an idle room lapses.
func (s *Store) epochTTL() time.Duration { return min(24*time.Hour, s.idleTTL/4) }

// readKeys reads Redis's clock, for the deadlines the publish script
// checks in it, and the keys the nodes share: the token key, which signs
// resume tokens on every node, and the store's epoch. Either may be gone
// (a FLUSHALL, a restart without persistence, the epoch's lifetime): the
// token key is put back as this node has it, so that every running node
// keeps signing with the same one and a node that starts later reads it;
// a lapsed epoch is replaced by a new one. A key another node wrote first
// is the one taken.
func (s *Store) readKeys(ctx context.Context) error {
	s.readNodeSpan(ctx)
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
	const suffixes = "smtxbr"
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

// newEpoch returns a fresh epoch.
func newEpoch() string { return gonanoid.Must(12) }

// storeEpoch is the epoch of a room that has no keys (readKeys).
func (s *Store) storeEpoch() string { return *s.epoch.Load() }

// TokenKey implements store.Store: one key for the whole cluster, so a
// token issued by any node is good on every node. After Redis lost it, it
// is the one this node put back, or the one another node put back first.
func (s *Store) TokenKey() []byte { return *s.key.Load() }

// readNodeSpan reads Redis's stream-node-max-entries into s.nodeSpan,
// with the shared keys (at start, then every keepEvery: a failover may
// bring another server's setting). A Redis that refuses CONFIG (a managed service may
// rename it) or sets no entry bound (0) leaves it 0: a redaction then
// writes the room's whole stream again, which removes the text all the
// same.
func (s *Store) readNodeSpan(ctx context.Context) {
	c := s.client
	var span int64
	if m, err := c.Do(ctx, c.B().ConfigGet().Parameter("stream-node-max-entries").Build()).AsStrMap(); err == nil {
		if n, err := strconv.ParseInt(m["stream-node-max-entries"], 10, 64); err == nil && n > 0 {
			span = n
		}
	}
	s.nodeSpan.Store(span)
}
