package protocol

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

// EncodeJoined with a pre-encoded member list writes the same bytes as
// Encode of the whole Joined, and joinedWire has Joined's fields, in its
// order, with its JSON names.
func TestEncodeJoined(t *testing.T) {
	j := Joined{
		RoomID: "r", You: User{UserID: "u1", Name: "al\"ice"},
		Members: []User{{UserID: "u1", Name: "al\"ice"}, {UserID: "u2", Name: "bob <&>"}},
		Count:   2, LastSeq: 7, Epoch: "e", Truncated: true, More: true, Post: "moderators",
		History: []Message{{ID: "m", RoomID: "r", Seq: 7, From: User{UserID: "u2", Name: "bob"}, Message: "hi\n", TS: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)}},
	}
	for _, members := range [][]User{j.Members, {}, nil} {
		j.Members = members
		want := Encode(TypeJoined, "q1", j)
		if members == nil {
			j.Members = []User{} // answer never sends null
			want = Encode(TypeJoined, "q1", j)
		}
		if got := EncodeJoined("q1", j, EncodeUsers(members)); !bytes.Equal(got, want) {
			t.Errorf("EncodeJoined\n got %s\nwant %s", got, want)
		}
	}
	jt, wt := reflect.TypeFor[Joined](), reflect.TypeFor[joinedWire]()
	if jt.NumField() != wt.NumField() {
		t.Fatalf("Joined has %d fields, joinedWire %d", jt.NumField(), wt.NumField())
	}
	for i := range jt.NumField() {
		if jf, wf := jt.Field(i), wt.Field(i); jf.Name != wf.Name || jf.Tag != wf.Tag {
			t.Errorf("field %d: Joined's %s %q, joinedWire's %s %q", i, jf.Name, jf.Tag, wf.Name, wf.Tag)
		}
	}
}

func TestAppendUser(t *testing.T) {
	for _, u := range []User{{}, {"u1", "alice"}, {"x", "q\"uote\\ <&> \u2028 é \t"}, {"y", "😀"}} {
		want := EncodeUsers([]User{u})
		got := append(append([]byte("["), AppendUser(nil, u)...), ']')
		if !bytes.Equal(got, want) {
			t.Errorf("AppendUser(%q) = %s, want %s", u, got, want)
		}
	}
}
