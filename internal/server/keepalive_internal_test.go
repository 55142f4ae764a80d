package server

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
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

// deadlineCounter counts the write deadlines set on a real connection.
type deadlineCounter struct {
	net.Conn
	sets int
}

func (c *deadlineCounter) SetWriteDeadline(t time.Time) error {
	c.sets++
	return c.Conn.SetWriteDeadline(t)
}

// writeSteady keeps a deadline that is far enough away, and sets one when
// the one in place is near, past, or further than the timeout allows.
func TestWriteSteadyKeepsDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { // owned by the test; ends with the listener
		c, err := ln.Accept()
		if err == nil {
			go io.Copy(io.Discard, c) // ends when the client side closes
			accepted <- c
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	defer func() { (<-accepted).Close() }()
	conn := &deadlineCounter{Conn: raw}

	const timeout = 10 * time.Second // step: 2 s
	var deadline int64
	for i := range 100 {
		if n, err := writeSteady(conn, []byte("frame"), timeout, &deadline); n != 5 || err != nil {
			t.Fatalf("write %d: %d bytes, %v", i, n, err)
		}
	}
	if conn.sets != 1 {
		t.Fatalf("100 quick writes set %d deadlines, want 1", conn.sets)
	}
	for _, c := range []struct {
		what string
		at   time.Duration // from now
	}{
		{"less than half a step away", 900 * time.Millisecond},
		{"past", -time.Second},
		{"beyond the timeout", time.Minute},
	} {
		conn.sets = 0
		deadline = time.Now().Add(c.at).UnixNano()
		if _, err := writeSteady(conn, []byte("frame"), timeout, &deadline); err != nil {
			t.Fatal(err)
		}
		if left := time.Until(time.Unix(0, deadline)); conn.sets != 1 || left <= time.Second || left > 2*time.Second {
			t.Errorf("deadline %s: %d set, now %s away; want 1 set, 1–2 s away", c.what, conn.sets, left)
		}
	}
}
