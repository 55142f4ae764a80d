package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

func TestModerationConformance(t *testing.T) {
	storetest.RunModeration(t, func(t *testing.T) interface {
		store.Store
		store.Moderation
	} {
		return mustOpen(t, filepath.Join(t.TempDir(), "roomchat.db"), Options{})
	})
}

// TestModerationAcrossRestart: bans, mutes and the post rule are in the
// file (SPEC §11: durable), the mute check after a restart uses the mutes
// read at Open, and one that has expired meanwhile is neither returned
// nor enforced.
func TestModerationAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	mod := protocol.User{UserID: "mod", Name: "Mo"}
	ban := store.Restriction{UserID: "spammer", By: mod, Reason: "spam", At: now}
	mute := store.Restriction{UserID: "loud", Until: now.Add(time.Hour), By: mod, Reason: "caps", At: now}
	short := store.Restriction{UserID: "brief", Until: now.Add(time.Minute), By: mod, At: now}

	s := mustOpen(t, path, Options{})
	for _, p := range []struct {
		kind store.Kind
		r    store.Restriction
	}{{store.Ban, ban}, {store.Mute, mute}, {store.Mute, short}} {
		if err := s.PutRestriction(ctx, "r", p.kind, p.r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetPostRule(ctx, "r", "moderators"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The store opens again two minutes later: the short mute has ended
	// while it was closed.
	later := func() time.Time { return time.Now().Add(2 * time.Minute) }
	s = openT(t, path, Options{now: later})
	if got, err := s.Restrictions(ctx, "r", store.Ban, later()); err != nil || !cmp.Equal(got, []store.Restriction{ban}) {
		t.Fatalf("bans after restart = %+v, %v; want %+v", got, err, ban)
	}
	if got, err := s.Restrictions(ctx, "r", store.Mute, later()); err != nil || !cmp.Equal(got, []store.Restriction{mute}) {
		t.Fatalf("mutes after restart = %+v, %v; want only %+v (the other has expired)", got, err, mute)
	}
	if _, ok, err := s.Restricted(ctx, "r", store.Mute, "brief", later()); err != nil || ok {
		t.Fatalf("Restricted(expired mute) = %v, %v", ok, err)
	}
	if rule, err := s.PostRule(ctx, "r"); err != nil || rule != "moderators" {
		t.Fatalf("post rule after restart = %q, %v", rule, err)
	}
	m := storetest.Msg("r", "still loud")
	m.From.UserID = "loud"
	var me *store.MutedError
	if r := storetest.Append(t, s, m, ""); !errors.As(r.Err, &me) || !me.Until.Equal(mute.Until) {
		t.Fatalf("a muted user's message after restart: %v; want muted until %v", r.Err, mute.Until)
	}
	m.From.UserID = "brief"
	if r := storetest.MustAppend(t, s, m, ""); r.Msg.Seq != 1 {
		t.Fatalf("after an expired mute: seq %d, want 1", r.Msg.Seq)
	}
	// The post rule read at Open refuses a member's message.
	m.BelowModerator = true
	if r := storetest.Append(t, s, m, ""); !errors.Is(r.Err, store.ErrPostRule) {
		t.Fatalf("a member's message after restart under moderators: %v; want ErrPostRule", r.Err)
	}
}

// TestPostRuleOrderedWithAppends: a post rule change is ordered with the
// Appends queued around it within one batch of the committer, like a
// mute: a member's message queued after moderators is refused, one
// queued after members again is stored.
func TestPostRuleOrderedWithAppends(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "roomchat.db"), Options{})
	release := holdCommitter(s)
	results := make(chan error, 3)
	send := func(text string) {
		m := storetest.Msg("r", text)
		m.BelowModerator = true
		s.Append(m, "", func(_ protocol.Message, _ bool, err error) { results <- err })
	}
	queue := func(rule string) chan error {
		m := &modReq{room: "r", rule: &rule, reply: make(chan error, 1)}
		s.mu.RLock()
		s.queue <- request{mod: m}
		s.mu.RUnlock()
		return m.reply
	}
	send("before")
	mods := queue(store.ModeratorsOnly)
	send("refused")
	members := queue("members")
	send("after")
	close(release)
	for _, c := range []chan error{mods, members} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range []error{nil, store.ErrPostRule, nil} {
		if err := <-results; !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("message %d: %v, want %v", i, err, want)
		}
	}
	got := messages(t, s, "r")
	if len(got) != 2 || got[0].Message != "before" || got[1].Message != "after" || got[1].Seq != 2 {
		t.Fatalf("stored %+v; want before (1) and after (2)", got)
	}
}

// TestMuteOrderedWithAppends: a mute and an unmute are ordered with the
// Appends queued around them within one batch of the committer: what was
// queued before the mute is stored, what after is refused until the
// unmute, and the refused message takes no seq.
func TestMuteOrderedWithAppends(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "roomchat.db"), Options{})
	release := holdCommitter(s)
	results := make(chan error, 3)
	send := func(text string) {
		m := storetest.Msg("r", text)
		m.From.UserID = "u"
		s.Append(m, "", func(_ protocol.Message, _ bool, err error) { results <- err })
	}
	queue := func(m *modReq) chan error {
		m.reply = make(chan error, 1)
		s.mu.RLock()
		s.queue <- request{mod: m}
		s.mu.RUnlock()
		return m.reply
	}
	send("before")
	put := queue(&modReq{room: "r", kind: store.Mute, put: &store.Restriction{UserID: "u"}})
	send("muted")
	del := &modReq{room: "r", kind: store.Mute, del: "u"}
	delDone := queue(del)
	send("after")
	if n := len(s.queue); n != 5 {
		t.Fatalf("%d requests queued, want 5", n)
	}
	close(release)
	if err := <-put; err != nil {
		t.Fatal(err)
	}
	if err := <-delDone; err != nil || !del.existed {
		t.Fatalf("unmute: existed %v, %v", del.existed, err)
	}
	for i, want := range []error{nil, store.ErrMuted, nil} {
		if err := <-results; !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("message %d: %v, want %v", i, err, want)
		}
	}
	got := messages(t, s, "r")
	if len(got) != 2 || got[0].Message != "before" || got[1].Message != "after" || got[1].Seq != 2 {
		t.Fatalf("stored %+v; want before (1) and after (2)", got)
	}
}

// TestFailedModerationChangesNothing: a mute and an unmute whose batch
// fails after they were written in it (a message of the batch does not
// fit in a full file) fail with ErrUnavailable and change neither the
// file nor the committer's copy of the mutes: the mute check goes on as
// before them.
func TestFailedModerationChangesNothing(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "roomchat.db"), Options{})
	ctx := context.Background()
	if err := s.PutRestriction(ctx, "r", store.Mute, store.Restriction{UserID: "muted"}); err != nil {
		t.Fatal(err)
	}
	maxPages(t, s, 1) // the file is full as it is
	release := holdCommitter(s)
	queue := func(m *modReq) chan error {
		m.reply = make(chan error, 1)
		s.mu.RLock()
		s.queue <- request{mod: m}
		s.mu.RUnlock()
		return m.reply
	}
	put := queue(&modReq{room: "r", kind: store.Mute, put: &store.Restriction{UserID: "free"}})
	del := queue(&modReq{room: "r", kind: store.Mute, del: "muted"})
	rule := "moderators"
	setRule := queue(&modReq{room: "r", rule: &rule})
	big := make(chan error, 1)
	s.Append(storetest.Msg("r", strings.Repeat("x", 8000)), "", func(_ protocol.Message, _ bool, err error) { big <- err })
	close(release)
	for what, c := range map[string]chan error{"mute": put, "unmute": del, "post rule": setRule, "message": big} {
		if err := <-c; !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%s in a failing batch: %v, want ErrUnavailable", what, err)
		}
	}
	maxPages(t, s, 1<<30)
	m := storetest.Msg("r", "hello")
	m.From.UserID = "free"
	if r := storetest.MustAppend(t, s, m, ""); r.Msg.Seq != 1 {
		t.Fatalf("the user whose mute failed: seq %d, want 1", r.Msg.Seq)
	}
	m.From.UserID = "muted"
	if r := storetest.Append(t, s, m, ""); !errors.Is(r.Err, store.ErrMuted) {
		t.Fatalf("the user whose unmute failed: %v, want still muted", r.Err)
	}
	if got, err := s.Restrictions(ctx, "r", store.Mute, time.Now()); err != nil || len(got) != 1 || got[0].UserID != "muted" {
		t.Fatalf("mutes in the file = %+v, %v; want muted only", got, err)
	}
	if rule, err := s.PostRule(ctx, "r"); err != nil || rule != "" {
		t.Fatalf("post rule = %q, %v; want none", rule, err)
	}
}

// TestPruneEndedRestrictions: the trimmer deletes the rows of bans and
// mutes that have ended (reads skipped them already) and keeps those in
// force, with or without an end.
func TestPruneEndedRestrictions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	// The store's clock jumps ahead once the rows are in, past the wait
	// between two prunes (pruneEvery) that the step at Open started.
	var ahead atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	s := openT(t, path, Options{TrimInterval: 20 * time.Millisecond, now: clock})
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, p := range []struct {
		kind  store.Kind
		user  string
		until time.Time
	}{
		{store.Ban, "ended", now.Add(-time.Second)},
		{store.Mute, "ended", now.Add(-time.Minute)},
		{store.Ban, "forever", time.Time{}},
		{store.Mute, "later", now.Add(time.Hour)},
	} {
		if err := s.PutRestriction(ctx, "r", p.kind, store.Restriction{UserID: p.user, Until: p.until, At: now}); err != nil {
			t.Fatal(err)
		}
	}
	ahead.Store(int64(2 * pruneEvery))
	db := rawDB(t, path)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var users []string
		rows, err := db.Query("SELECT kind || ':' || user_id FROM restrictions ORDER BY kind, user_id")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				t.Fatal(err)
			}
			users = append(users, u)
		}
		rows.Close()
		if strings.Join(users, " ") == "ban:forever mute:later" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restriction rows %v after 10s; want the ended ones pruned: ban:forever mute:later", users)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holdCommitter holds s's committer until release is closed, so that
// everything queued meanwhile is in its next batch.
func holdCommitter(s *Store) (release chan struct{}) {
	release, held := make(chan struct{}), make(chan struct{})
	s.mu.RLock()
	s.queue <- request{do: func(*sql.Conn) { close(held); <-release }}
	s.mu.RUnlock()
	<-held
	return release
}
