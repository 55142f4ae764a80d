package cluster

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

var (
	//go:embed lua/restrict.lua
	restrictLua    string
	restrictScript = rueidis.NewLuaScript(restrictLua)
	//go:embed lua/prune.lua
	pruneLua    string
	pruneScript = rueidis.NewLuaScript(pruneLua)
)

var _ store.Moderation = (*Store)(nil)

// A room's moderation state (SPEC §11) is under its hash tag, with its
// idle lifetime like its other keys (publish.lua and position.lua start it
// again): its mutes and its bans, each a hash from user ID to
// "untilMs\nJSON" (untilMs 0: until lifted), and its post rule, a string.
// The mutes hash is a key of publish.lua, which refuses a muted user's
// message at Redis's clock in the step that would store it, so a mute set
// through one node holds for the next message through any node; so is
// the post rule, for a member's message. (":p" is the roster's presence
// hash, Roster.keys: the rule has a suffix of its own.)
func (s *Store) muteKey(room string) string { return s.prefix + ":{" + room + "}:x" }
func (s *Store) banKey(room string) string  { return s.prefix + ":{" + room + "}:b" }
func (s *Store) ruleKey(room string) string { return s.prefix + ":{" + room + "}:r" }

func (s *Store) restrictionKey(room string, kind store.Kind) (string, error) {
	switch kind {
	case store.Mute:
		return s.muteKey(room), nil
	case store.Ban:
		return s.banKey(room), nil
	}
	return "", fmt.Errorf("unknown restriction kind %q", kind)
}

// storedRestriction is a restriction's JSON in its hash; times are Unix
// ms, 0 for none.
type storedRestriction struct {
	UserID string        `json:"userID"`
	Until  int64         `json:"until,omitzero"`
	By     protocol.User `json:"by"`
	Reason string        `json:"reason,omitempty"`
	At     int64         `json:"at,omitzero"`
}

func toMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMs(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// encodeRestriction is r as its hash holds it: "untilMs\nJSON", the end
// first so that publish.lua reads it without decoding the JSON.
func encodeRestriction(r store.Restriction) string {
	sr := storedRestriction{UserID: r.UserID, Until: toMs(r.Until), By: r.By, Reason: r.Reason, At: toMs(r.At)}
	b, _ := json.Marshal(sr)
	return strconv.FormatInt(sr.Until, 10) + "\n" + string(b)
}

func decodeRestriction(v string) (store.Restriction, error) {
	_, body, ok := strings.Cut(v, "\n")
	if !ok {
		return store.Restriction{}, errors.New("stored restriction: no end")
	}
	var sr storedRestriction
	if err := json.Unmarshal([]byte(body), &sr); err != nil {
		return store.Restriction{}, fmt.Errorf("stored restriction: %w", err)
	}
	return store.Restriction{UserID: sr.UserID, Until: fromMs(sr.Until), By: sr.By, Reason: sr.Reason, At: fromMs(sr.At)}, nil
}

// modCall runs f with the store's timeout, failing at once while the
// store is closed or Redis is taken for down.
func (s *Store) modCall(ctx context.Context, f func(context.Context) error) error {
	if err := s.usable(); err != nil {
		return unavailable(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := f(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

// PutRestriction implements store.Moderation.
func (s *Store) PutRestriction(ctx context.Context, roomID string, kind store.Kind, r store.Restriction) error {
	key, err := s.restrictionKey(roomID, kind)
	if err != nil {
		return err
	}
	return s.modCall(ctx, func(ctx context.Context) error {
		return restrictScript.Exec(ctx, s.client, []string{key},
			[]string{r.UserID, encodeRestriction(r), strconv.FormatInt(s.idleTTL.Milliseconds(), 10)}).Error()
	})
}

// DeleteRestriction implements store.Moderation.
func (s *Store) DeleteRestriction(ctx context.Context, roomID string, kind store.Kind, userID string) (bool, error) {
	key, err := s.restrictionKey(roomID, kind)
	if err != nil {
		return false, err
	}
	var n int64
	err = s.modCall(ctx, func(ctx context.Context) (err error) {
		n, err = s.client.Do(ctx, s.client.B().Hdel().Key(key).Field(userID).Build()).AsInt64()
		return err
	})
	return n > 0, err
}

// Restrictions implements store.Moderation: one HGETALL, the expired
// entries skipped.
func (s *Store) Restrictions(ctx context.Context, roomID string, kind store.Kind, now time.Time) ([]store.Restriction, error) {
	key, err := s.restrictionKey(roomID, kind)
	if err != nil {
		return nil, err
	}
	var all map[string]string
	err = s.modCall(ctx, func(ctx context.Context) (err error) {
		all, err = s.client.Do(ctx, s.client.B().Hgetall().Key(key).Build()).AsStrMap()
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []store.Restriction
	var ended []string
	for _, v := range all {
		r, err := decodeRestriction(v)
		if err != nil {
			return nil, unavailable(err)
		}
		if r.InForce(now) {
			out = append(out, r)
		} else {
			ended = append(ended, r.UserID)
		}
	}
	s.prune(ctx, key, now, ended)
	slices.SortFunc(out, func(a, b store.Restriction) int { return strings.Compare(a.UserID, b.UserID) })
	return out, nil
}

// Restricted implements store.Moderation: one HGET.
func (s *Store) Restricted(ctx context.Context, roomID string, kind store.Kind, userID string, now time.Time) (store.Restriction, bool, error) {
	key, err := s.restrictionKey(roomID, kind)
	if err != nil {
		return store.Restriction{}, false, err
	}
	var v string
	found := false
	err = s.modCall(ctx, func(ctx context.Context) (err error) {
		v, err = s.client.Do(ctx, s.client.B().Hget().Key(key).Field(userID).Build()).ToString()
		if rueidis.IsRedisNil(err) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil || !found {
		return store.Restriction{}, false, err
	}
	r, err := decodeRestriction(v)
	if err != nil {
		return store.Restriction{}, false, unavailable(err)
	}
	if !r.InForce(now) {
		s.prune(ctx, key, now, []string{userID})
		return store.Restriction{}, false, nil
	}
	return r, true, nil
}

// prune deletes the restrictions of users, which a read found ended at
// now, from key (HDEL, each checked again in the script, so a restriction
// put since the read stays). Ended entries are pruned as reads meet them,
// never by a timer per entry; a failure leaves them for the next read,
// which skips them meanwhile.
func (s *Store) prune(ctx context.Context, key string, now time.Time, users []string) {
	if len(users) == 0 {
		return
	}
	args := append([]string{strconv.FormatInt(now.UnixMilli(), 10)}, users...)
	if err := s.modCall(ctx, func(ctx context.Context) error {
		return pruneScript.Exec(ctx, s.client, []string{key}, args).Error()
	}); err != nil {
		s.log.Warn("prune ended restrictions", "key", key, "err", err)
	}
}

// SetPostRule implements store.Moderation: the rule is kept with the
// room's idle lifetime.
func (s *Store) SetPostRule(ctx context.Context, roomID, rule string) error {
	return s.modCall(ctx, func(ctx context.Context) error {
		c := s.client
		if rule == "" {
			return c.Do(ctx, c.B().Del().Key(s.ruleKey(roomID)).Build()).Error()
		}
		return c.Do(ctx, c.B().Set().Key(s.ruleKey(roomID)).Value(rule).Px(s.idleTTL).Build()).Error()
	})
}

// PostRule implements store.Moderation.
func (s *Store) PostRule(ctx context.Context, roomID string) (string, error) {
	var rule string
	err := s.modCall(ctx, func(ctx context.Context) (err error) {
		rule, err = s.client.Do(ctx, s.client.B().Get().Key(s.ruleKey(roomID)).Build()).ToString()
		if rueidis.IsRedisNil(err) {
			rule, err = "", nil
		}
		return err
	})
	return rule, err
}
