package sqlite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// TestKeepNothingAcrossRestart: a room that keeps no message (SPEC §9
// history size = 0) writes no row of its messages, and its seqs go on
// after a restart with no gap and no reuse.
func TestKeepNothingAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	rules := storetest.NewRules(storetest.Rule{Max: 10000})
	rules.Set("none", storetest.Rule{Max: 0})
	opts := Options{Retention: store.Retention{Room: rules.Room}}
	s := mustOpen(t, path, opts)
	for i := 1; i <= 3; i++ {
		storetest.MustAppend(t, s, storetest.Msg("none", fmt.Sprintf("secret-%d", i)), "")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, opts)
	if r := storetest.MustAppend(t, s, storetest.Msg("none", "secret-4"), ""); r.Msg.Seq != 4 {
		t.Fatalf("seq after restart = %d, want 4", r.Msg.Seq)
	}
	if ri := roomInfo(t, s, "none"); ri.LastSeq != 4 || ri.FirstSeq != 0 {
		t.Fatalf("Room = %+v, want LastSeq 4, FirstSeq 0", ri)
	}
	var n int
	if err := s.rdb.QueryRow("SELECT count(*) FROM messages").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d message rows for a room that keeps nothing", n)
	}
}

// TestRoomRetentionTrimsRows: a room's own size is applied to the file
// by the trimmer, not only by reads.
func TestRoomRetentionTrimsRows(t *testing.T) {
	rules := storetest.NewRules(storetest.Rule{Max: 10000})
	rules.Set("small", storetest.Rule{Max: 2})
	s := openT(t, filepath.Join(t.TempDir(), "roomchat.db"), Options{
		Retention: store.Retention{Room: rules.Room}, TrimInterval: 20 * time.Millisecond,
	})
	for i := range 10 {
		storetest.MustAppend(t, s, storetest.Msg("small", fmt.Sprint(i)), "")
		storetest.MustAppend(t, s, storetest.Msg("big", fmt.Sprint(i)), "")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var small, big int
		if err := s.rdb.QueryRow("SELECT (SELECT count(*) FROM messages m JOIN rooms r ON r.id = m.room WHERE r.room_id = 'small'), (SELECT count(*) FROM messages m JOIN rooms r ON r.id = m.room WHERE r.room_id = 'big')").Scan(&small, &big); err != nil {
			t.Fatal(err)
		}
		if small == 2 && big == 10 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows: small %d (want 2), big %d (want 10)", small, big)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedactedTextLeavesTheFile: a redacted message's text is gone from
// the database file and its WAL (SPEC §11: not hidden, gone), and the
// tombstone survives a restart.
func TestRedactedTextLeavesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{})
	const secret = "the-secret-text-Zq81"
	storetest.MustAppend(t, s, storetest.Msg("r", "before"), "")
	m := storetest.Msg("r", secret+" in a longer message, so that the row shrinks")
	m.ID = "msg-2" // storetest.Msg's ID holds the text, and IDs are kept
	storetest.MustAppend(t, s, m, store.DedupKey("u1", "r", "c1"))
	storetest.MustAppend(t, s, storetest.Msg("r", "after"), "")
	// A checkpoint copies the text into the database file first.
	if _, err := s.ckdb.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
		t.Fatal(err)
	}
	mod := protocol.User{UserID: "mod", Name: "m"}
	storetest.MustAppend(t, s, storetest.Redaction("r", 2, mod), "")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(secret)) {
			i := bytes.Index(b, []byte(secret))
			t.Fatalf("%s (%d bytes) still holds the redacted text at %d (page %d): %q", filepath.Base(p), len(b), i, i/4096+1, b[max(0, i-64):i+64])
		}
	}
	s = openT(t, path, Options{})
	got := messages(t, s, "r")
	if len(got) != 4 || got[1].Message != "" || got[1].Redacted == nil || got[1].Redacted.Seq != 4 || got[1].Redacted.By != mod || got[1].ID != m.ID || got[3].Redacts != 2 {
		t.Fatalf("after restart: %+v; want seq 2 a tombstone redacted by seq 4", got)
	}
}

// TestClearAcrossRestart: a cleared room stays cleared after a restart,
// with its seqs and epoch.
func TestClearAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.db")
	s := mustOpen(t, path, Options{})
	for i := range 3 {
		storetest.MustAppend(t, s, storetest.Msg("r", fmt.Sprint(i)), "")
	}
	if err := s.Clear(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	before := roomInfo(t, s, "r")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, Options{})
	if got := roomInfo(t, s, "r"); got != before || got.FirstSeq != 4 || len(messages(t, s, "r")) != 0 {
		t.Fatalf("after restart: %+v, want %+v with FirstSeq 4 and no messages", got, before)
	}
	if r := storetest.MustAppend(t, s, storetest.Msg("r", "next"), ""); r.Msg.Seq != 4 {
		t.Fatalf("seq after restart = %d, want 4", r.Msg.Seq)
	}
}
