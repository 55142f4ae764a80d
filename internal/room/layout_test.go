package room

import (
	"testing"
	"unsafe"
)

// TestMemberLayout keeps what deliver reads of every member within one
// cache line (see member): the fields it reads in the first 32 bytes, and
// the struct a multiple of 32 bytes, so that no member's first 32 bytes
// straddle a 64-byte line.
func TestMemberLayout(t *testing.T) {
	var m member
	for name, end := range map[string]uintptr{
		"conn":    unsafe.Offsetof(m.conn) + unsafe.Sizeof(m.conn),
		"seqSeen": unsafe.Offsetof(m.seqSeen) + unsafe.Sizeof(m.seqSeen),
		"joining": unsafe.Offsetof(m.joining) + unsafe.Sizeof(m.joining),
	} {
		if end > 32 {
			t.Errorf("member.%s ends at byte %d; deliver's fields must be within the first 32", name, end)
		}
	}
	if size := unsafe.Sizeof(m); size%32 != 0 {
		t.Errorf("member is %d bytes, not a multiple of 32: its first 32 bytes may straddle a cache line", size)
	}
}
