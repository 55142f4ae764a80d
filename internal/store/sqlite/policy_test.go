package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

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
