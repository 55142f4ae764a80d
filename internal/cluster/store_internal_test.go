package cluster

import (
	"slices"
	"testing"
)

// roomKeys cuts the keys publish.lua gets from one string: each is the
// one its own function names, and the stream key less its suffix is the
// room's channel.
func TestRoomKeys(t *testing.T) {
	s := &Store{prefix: "pre"}
	for _, room := range []string{"r", "a longer room-ID_with {braces}"} {
		k := s.roomKeys(room)
		want := [6]string{s.streamKey(room), s.metaKey(room), s.tombKey(room), s.muteKey(room), s.banKey(room), s.ruleKey(room)}
		if k != want {
			t.Fatalf("roomKeys(%q) = %q, want %q", room, k, want)
		}
		// The roster's presence keys share the hash tag: none may be one
		// of these (a SET of the post rule would replace the presence hash).
		for _, pk := range (&Roster{st: s}).keys(room) {
			if slices.Contains(k[:], pk) {
				t.Fatalf("roster key %q is also one of roomKeys(%q) = %q", pk, room, k)
			}
		}
		if ch := k[0][:len(k[0])-2]; ch != s.channel(room) {
			t.Fatalf("channel %q, want %q", ch, s.channel(room))
		}
	}
}
