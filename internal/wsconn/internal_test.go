package wsconn

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"testing/synctest"
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

// msgTracker tells whether a client's bytes stop inside a data message,
// whatever pieces they come in: inside a frame's header or payload, or
// between the fragments of a message, control frames among them.
func TestMsgTracker(t *testing.T) {
	frame := func(op byte, fin bool, n int) []byte {
		b0 := op
		if fin {
			b0 |= 0x80
		}
		var h []byte
		switch {
		case n < 126:
			h = []byte{b0, 0x80 | byte(n)}
		case n < 1<<16:
			h = binary.BigEndian.AppendUint16([]byte{b0, 0x80 | 126}, uint16(n))
		default:
			h = binary.BigEndian.AppendUint64([]byte{b0, 0x80 | 127}, uint64(n))
		}
		h = append(h, 1, 2, 3, 4) // the masking key
		return append(h, bytes.Repeat([]byte{'x'}, n)...)
	}
	type part struct {
		b     []byte
		inMsg bool // after it
	}
	for _, tc := range []struct {
		name  string
		parts []part
	}{
		{"small", []part{{frame(0x1, true, 20), false}}},
		{"empty", []part{{frame(0x1, true, 0), false}}},
		{"16-bit length", []part{{frame(0x1, true, 300), false}}},
		{"64-bit length", []part{{frame(0x2, true, 70000), false}}},
		{"pings", []part{{frame(0x9, true, 4), false}, {frame(0xA, true, 0), false}}},
		{"fragments", []part{
			{frame(0x1, false, 10), true},
			{frame(0x9, true, 2), true}, // a ping between fragments
			{frame(0x0, false, 10), true},
			{frame(0x0, true, 10), false},
		}},
	} {
		for _, piece := range []int{1, 2, 3, 5, 13, 1 << 20} {
			var tr msgTracker
			for k, p := range tc.parts {
				for i := 0; i < len(p.b); i += piece {
					if i > 0 && !tr.inMessage() {
						t.Fatalf("%s in pieces of %d: part %d: not in a message at byte %d", tc.name, piece, k, i)
					}
					tr.feed(p.b[i:min(i+piece, len(p.b))])
				}
				if tr.inMessage() != p.inMsg {
					t.Fatalf("%s in pieces of %d: after part %d, inMessage %v, want %v", tc.name, piece, k, tr.inMessage(), p.inMsg)
				}
			}
		}
	}
}

// text waits while the library is in the middle of one of its own
// frames, and goes right after it: the library's write that ends the
// frame wakes it.
func TestTextWaitsForTheLibrarysFrame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &netWriter{}
		w.boundary.L = &w.mu
		w.track()
		w.hold()
		w.Write([]byte{0x8a, 3}) // a pong's header: its payload is to come
		done := make(chan error)
		go func() { done <- w.text([][]byte{[]byte("hi")}, false) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("text returned (%v) inside the library's frame", err)
		default:
		}
		w.Write([]byte("abc"))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := []byte{0x8a, 3, 'a', 'b', 'c', 0x81, 2, 'h', 'i'}
		if got := *w.buf; !bytes.Equal(got, want) {
			t.Fatalf("drain % x, want % x", got, want)
		}
	})
}
