package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// ModFactory opens a fresh, empty store that keeps moderation state.
type ModFactory func(t *testing.T) interface {
	store.Store
	store.Moderation
}

// RunModeration runs the moderation part of the suite (SPEC §11: bans,
// mutes, the run-time post rule, and the mute check inside Append).
func RunModeration(t *testing.T, newStore ModFactory) {
	t.Run("Restrictions", func(t *testing.T) { testRestrictions(t, newStore) })
	t.Run("MuteRefusesAppend", func(t *testing.T) { testMuteRefusesAppend(t, newStore) })
	t.Run("PostRule", func(t *testing.T) { testPostRule(t, newStore) })
	t.Run("PostRuleRefusesAppend", func(t *testing.T) { testPostRuleRefusesAppend(t, newStore) })
}

func testRestrictions(t *testing.T, f ModFactory) {
	s := f(t)
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	mod := protocol.User{UserID: "mod", Name: "m"}
	put := func(kind store.Kind, r store.Restriction) {
		t.Helper()
		if err := s.PutRestriction(ctx, "room", kind, r); err != nil {
			t.Fatal(err)
		}
	}
	bob := store.Restriction{UserID: "bob", By: mod, Reason: "spam", At: now}
	al := store.Restriction{UserID: "al", Until: now.Add(time.Hour), By: mod, At: now}
	old := store.Restriction{UserID: "cy", Until: now.Add(-time.Second), By: mod, At: now.Add(-time.Hour)}
	put(store.Ban, bob)
	put(store.Ban, al)
	put(store.Ban, old)
	put(store.Mute, store.Restriction{UserID: "dee", By: mod, At: now})
	got, err := s.Restrictions(ctx, "room", store.Ban, now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.Restriction{al, bob}, got); diff != "" {
		t.Fatalf("bans in force, sorted by user (-want +got):\n%s", diff)
	}
	if got, err := s.Restrictions(ctx, "room", store.Ban, now.Add(2*time.Hour)); err != nil || len(got) != 1 || got[0].UserID != "bob" {
		t.Fatalf("bans two hours later: %+v, %v; want bob only", got, err)
	}
	if got, err := s.Restrictions(ctx, "other", store.Ban, now); err != nil || len(got) != 0 {
		t.Fatalf("bans of another room: %+v, %v", got, err)
	}
	if r, ok, err := s.Restricted(ctx, "room", store.Ban, "bob", now); err != nil || !ok || !cmp.Equal(r, bob) {
		t.Fatalf("Restricted(bob) = %+v, %v, %v", r, ok, err)
	}
	if _, ok, err := s.Restricted(ctx, "room", store.Ban, "cy", now); err != nil || ok {
		t.Fatalf("Restricted(expired) = %v, %v; want not in force", ok, err)
	}
	if _, ok, _ := s.Restricted(ctx, "room", store.Mute, "bob", now); ok {
		t.Fatal("a ban reads as a mute")
	}
	// Replacing an earlier one.
	bob2 := bob
	bob2.Until, bob2.Reason = now.Add(time.Minute), "again"
	put(store.Ban, bob2)
	if r, _, _ := s.Restricted(ctx, "room", store.Ban, "bob", now); !cmp.Equal(r, bob2) {
		t.Fatalf("after replacing: %+v, want %+v", r, bob2)
	}
	if existed, err := s.DeleteRestriction(ctx, "room", store.Ban, "bob"); err != nil || !existed {
		t.Fatalf("DeleteRestriction(bob) = %v, %v; want existed", existed, err)
	}
	if existed, err := s.DeleteRestriction(ctx, "room", store.Ban, "bob"); err != nil || existed {
		t.Fatalf("DeleteRestriction(bob) again = %v, %v; want not existed", existed, err)
	}
	if _, ok, _ := s.Restricted(ctx, "room", store.Ban, "bob", now); ok {
		t.Fatal("bob still banned after DeleteRestriction")
	}
}

func testMuteRefusesAppend(t *testing.T, f ModFactory) {
	s := f(t)
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	if err := s.PutRestriction(ctx, "room", store.Mute, store.Restriction{UserID: "u1", Until: until, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r := Append(t, s, Msg("room", "from a muted user"), store.DedupKey("u1", "room", "c1"))
	var me *store.MutedError
	if !errors.Is(r.Err, store.ErrMuted) || errors.Is(r.Err, store.ErrUnavailable) || !errors.As(r.Err, &me) || !me.Until.Equal(until) {
		t.Fatalf("Append of a muted user: err = %v; want a MutedError until %v, not ErrUnavailable", r.Err, until)
	}
	// Nothing stored, no seq used; other users, other rooms, redactions
	// and messages without a user go on.
	other := Msg("room", "from u2")
	other.From.UserID = "u2"
	if got := MustAppend(t, s, other, ""); got.Msg.Seq != 1 {
		t.Fatalf("next message's seq = %d, want 1 (the refused one used none)", got.Msg.Seq)
	}
	if got := MustAppend(t, s, Msg("elsewhere", "x"), ""); got.Msg.Seq != 1 {
		t.Fatalf("muted user in another room: seq %d", got.Msg.Seq)
	}
	red := Redaction("room", 1, protocol.User{UserID: "u1"})
	if got := Append(t, s, red, ""); got.Err != nil {
		t.Fatalf("a muted user's redaction: %v; want it stored", got.Err)
	}
	anon := Msg("room", "server notice")
	anon.From.UserID = ""
	if got := Append(t, s, anon, ""); got.Err != nil {
		t.Fatalf("a message without a user: %v", got.Err)
	}
	// Lifted: the user may send again, and the retried key was not kept.
	if _, err := s.DeleteRestriction(ctx, "room", store.Mute, "u1"); err != nil {
		t.Fatal(err)
	}
	if got := MustAppend(t, s, Msg("room", "from a muted user"), store.DedupKey("u1", "room", "c1")); got.Dup || got.Msg.Seq != 4 {
		t.Fatalf("after unmute: %+v dup=%v; want a new message with seq 4", got.Msg, got.Dup)
	}
	// An expired mute refuses nothing.
	if err := s.PutRestriction(ctx, "room", store.Mute, store.Restriction{UserID: "u3", Until: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	m := Msg("room", "from u3")
	m.From.UserID = "u3"
	if got := Append(t, s, m, ""); got.Err != nil {
		t.Fatalf("expired mute: %v", got.Err)
	}
}

func testPostRule(t *testing.T, f ModFactory) {
	s := f(t)
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if rule, err := s.PostRule(ctx, "room"); err != nil || rule != "" {
		t.Fatalf("PostRule of a new room = %q, %v", rule, err)
	}
	if err := s.SetPostRule(ctx, "room", "moderators"); err != nil {
		t.Fatal(err)
	}
	if rule, err := s.PostRule(ctx, "room"); err != nil || rule != "moderators" {
		t.Fatalf("PostRule = %q, %v; want moderators", rule, err)
	}
	if rule, _ := s.PostRule(ctx, "other"); rule != "" {
		t.Fatalf("another room's PostRule = %q", rule)
	}
	if err := s.SetPostRule(ctx, "room", ""); err != nil {
		t.Fatal(err)
	}
	if rule, err := s.PostRule(ctx, "room"); err != nil || rule != "" {
		t.Fatalf("PostRule after removing = %q, %v", rule, err)
	}
}

// testPostRuleRefusesAppend checks the post rule inside Append (SPEC §11
// configure): while a room's rule is moderators, a message marked
// BelowModerator is refused with a *PostRuleError, storing nothing and
// taking no seq; the others, and every message once the rule is members
// again, are stored at once.
func testPostRuleRefusesAppend(t *testing.T, f ModFactory) {
	s := f(t)
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	member := func(text string) protocol.Message {
		m := Msg("room", text)
		m.BelowModerator = true
		return m
	}
	if got := MustAppend(t, s, member("before"), ""); got.Msg.Seq != 1 || got.Msg.BelowModerator {
		t.Fatalf("a member's message under no rule: %+v; want seq 1, BelowModerator not kept", got.Msg)
	}
	if err := s.SetPostRule(ctx, "room", store.ModeratorsOnly); err != nil {
		t.Fatal(err)
	}
	r := Append(t, s, member("under moderators"), store.DedupKey("u1", "room", "c1"))
	var pe *store.PostRuleError
	if !errors.Is(r.Err, store.ErrPostRule) || errors.Is(r.Err, store.ErrUnavailable) || !errors.As(r.Err, &pe) || pe.Rule != store.ModeratorsOnly {
		t.Fatalf("a member's message under moderators: err = %v; want a PostRuleError naming %q, not ErrUnavailable", r.Err, store.ModeratorsOnly)
	}
	// A moderator's message, a redaction and another room's member go on;
	// the refused message used no seq.
	if got := MustAppend(t, s, Msg("room", "from a moderator"), ""); got.Msg.Seq != 2 {
		t.Fatalf("a moderator's message: seq %d, want 2 (the refused one used none)", got.Msg.Seq)
	}
	red := Redaction("room", 1, protocol.User{UserID: "u1"})
	red.BelowModerator = true
	if got := Append(t, s, red, ""); got.Err != nil {
		t.Fatalf("a member's redaction under moderators: %v; want it stored", got.Err)
	}
	other := member("elsewhere")
	other.RoomID = "other"
	if got := Append(t, s, other, ""); got.Err != nil {
		t.Fatalf("a member in a room without a rule: %v", got.Err)
	}
	// Back to members: the next message, with the refused one's key, is
	// new and stored.
	if err := s.SetPostRule(ctx, "room", "members"); err != nil {
		t.Fatal(err)
	}
	if got := MustAppend(t, s, member("under members"), store.DedupKey("u1", "room", "c1")); got.Dup || got.Msg.Seq != 4 {
		t.Fatalf("after members: %+v dup=%v; want a new message with seq 4", got.Msg, got.Dup)
	}
	if err := s.SetPostRule(ctx, "room", store.ModeratorsOnly); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPostRule(ctx, "room", ""); err != nil {
		t.Fatal(err)
	}
	if got := Append(t, s, member("rule removed"), ""); got.Err != nil {
		t.Fatalf("after the rule is removed: %v", got.Err)
	}
	msgs, err := s.Messages(ctx, "room", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Message == "under moderators" || m.BelowModerator {
			t.Fatalf("stored %+v: the refused message, or BelowModerator kept", m)
		}
	}
}
