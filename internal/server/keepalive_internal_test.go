package server

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// frameTracker finds frame ends in a stream written in arbitrary pieces.
func TestFrameTracker(t *testing.T) {
	frame := func(n int) []byte {
		switch {
		case n < 126:
			return append([]byte{0x81, byte(n)}, bytes.Repeat([]byte("x"), n)...)
		case n < 1<<16:
			h := []byte{0x81, 126, 0, 0}
			binary.BigEndian.PutUint16(h[2:], uint16(n))
			return append(h, bytes.Repeat([]byte("x"), n)...)
		default:
			h := []byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 0}
			binary.BigEndian.PutUint64(h[2:], uint64(n))
			return append(h, bytes.Repeat([]byte("x"), n)...)
		}
	}
	for _, n := range []int{0, 1, 125, 126, 300, 65535, 70000} {
		f := frame(n)
		for _, piece := range []int{1, 2, 3, 7, 16, len(f)} {
			var tr frameTracker
			for i := 0; i < len(f); i += piece {
				if tr.boundary() != (i == 0) {
					t.Fatalf("frame of %d in pieces of %d: boundary %v at byte %d", n, piece, tr.boundary(), i)
				}
				tr.feed(f[i:min(i+piece, len(f))])
			}
			if !tr.boundary() {
				t.Fatalf("frame of %d in pieces of %d: no boundary at its end", n, piece)
			}
		}
	}
}

// A ping asked for while a frame is half written goes after that frame.
func TestPingBetweenFrames(t *testing.T) {
	w := &netWriter{}
	w.track()
	w.hold()
	w.Write([]byte{0x81, 5})
	w.ping()
	w.Write([]byte("hello"))
	w.Write([]byte{0x81, 2, 'h', 'i'})
	w.ping()
	got := *w.buf
	want := []byte{0x81, 5, 'h', 'e', 'l', 'l', 'o', 0x89, 0, 0x81, 2, 'h', 'i', 0x89, 0}
	if !bytes.Equal(got, want) {
		t.Fatalf("drain % x, want % x", got, want)
	}
}
