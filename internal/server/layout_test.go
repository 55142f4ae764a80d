package server

import (
	"testing"
	"unsafe"
)

// TestConnLayout keeps what Queue touches of every member's conn in one
// cache line (see conn): the fields in the first 64 bytes, and the struct
// a multiple of 64 bytes (its size class then starts every conn on a
// line).
func TestConnLayout(t *testing.T) {
	var c conn
	for name, end := range map[string]uintptr{
		"srv":      unsafe.Offsetof(c.srv) + unsafe.Sizeof(c.srv),
		"mu":       unsafe.Offsetof(c.mu) + unsafe.Sizeof(c.mu),
		"queue":    unsafe.Offsetof(c.queue) + unsafe.Sizeof(c.queue),
		"queued":   unsafe.Offsetof(c.queued) + unsafe.Sizeof(c.queued),
		"writing":  unsafe.Offsetof(c.writing) + unsafe.Sizeof(c.writing),
		"closing":  unsafe.Offsetof(c.closing) + unsafe.Sizeof(c.closing),
		"byServer": unsafe.Offsetof(c.byServer) + unsafe.Sizeof(c.byServer),
	} {
		if end > 64 {
			t.Errorf("conn.%s ends at byte %d; Queue's fields must be within the first 64", name, end)
		}
	}
	// The allocator rounds a conn up to its size class, 320 bytes for
	// 289 to 320 (the class below is 288, not a multiple of 64).
	if size := unsafe.Sizeof(c); size > 320 || size <= 288 {
		t.Errorf("conn is %d bytes: outside the 320-byte size class (5 lines) the layout assumes", size)
	}
}
