package server_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

// rawWelcome dials ts with a raw client and reads the welcome.
func rawWelcome(t *testing.T, ts *chattest.InProcess) *chattest.Raw {
	t.Helper()
	r := chattest.DialRaw(t, ts.URL, "")
	op, p, err := r.ReadFrame(chattest.Timeout)
	if err != nil || op != chattest.OpText || !bytes.Contains(p, []byte(`"type":"welcome"`)) {
		t.Fatalf("first frame: op %d %q %v, want the welcome", op, p, err)
	}
	return r
}

// Pings and pongs from the client count against the rate limit as text
// frames do: a flood of either gets rate_limited, then close 1008, like a
// flood of messages. Of 60 pings at once, the 40 of the burst get their
// pong and the rest rate_limited; the abuse bucket (80) then has about 60
// left, and a flood of 200 more empties it and closes the connection.
func TestControlFrameFlood(t *testing.T) {
	flood := func(op byte, n int) []byte {
		var b []byte
		for range n {
			b = append(b, chattest.ClientFrame(op, true, []byte("x"))...)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		op   byte
	}{
		{"ping", chattest.OpPing},
		{"pong", chattest.OpPong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := chattest.StartInProcess(t)
			r := rawWelcome(t, ts)
			if err := r.Write(flood(tc.op, 60)); err != nil {
				t.Fatal(err)
			}
			pongs := 0
			for limited := false; !limited; {
				op, p, err := r.ReadFrame(chattest.Timeout)
				if err != nil {
					t.Fatalf("after 60 %ss, %d pongs and no rate_limited error: %v", tc.name, pongs, err)
				}
				switch {
				case op == chattest.OpPong:
					pongs++
				case op == chattest.OpText && strings.Contains(string(p), `"code":"rate_limited"`):
					limited = true
				default:
					t.Fatalf("unexpected frame: op %d %q", op, p)
				}
			}
			wantPongs := 0
			if tc.op == chattest.OpPing {
				wantPongs = 40
			}
			// The bucket refills at 20 a second meanwhile: a few more may
			// pass.
			if pongs < wantPongs || pongs > wantPongs+10 {
				t.Errorf("%d pongs before the first rate_limited, want about %d (the burst)", pongs, wantPongs)
			}

			if err := r.Write(flood(tc.op, 200)); err != nil {
				t.Fatal(err)
			}
			code, reason, _, err := r.Closed(chattest.Timeout)
			if err != nil {
				t.Fatalf("no close frame after 260 %ss: %v", tc.name, err)
			}
			if code != protocol.CloseRateAbuse.Code || reason != protocol.CloseRateAbuse.Reason {
				t.Errorf("closed with %d %q, want %d %q", code, reason, protocol.CloseRateAbuse.Code, protocol.CloseRateAbuse.Reason)
			}
		})
	}

	// Within the limit, pings are answered as always.
	ts := chattest.StartInProcess(t)
	r := rawWelcome(t, ts)
	for i := range 5 {
		if err := r.Write(chattest.ClientFrame(chattest.OpPing, true, []byte{byte(i)})); err != nil {
			t.Fatal(err)
		}
		op, p, err := r.ReadFrame(chattest.Timeout)
		if err != nil || op != chattest.OpPong || !bytes.Equal(p, []byte{byte(i)}) {
			t.Fatalf("ping %d: got op %d %q %v, want its pong", i, op, p, err)
		}
	}
}

// A message must arrive whole within FrameTimeout of its first byte: one
// trickled in a byte at a time, which keeps the connection alive for the
// keepalive, is cut with 1008 once that has passed, whether a frame stops
// short or a fragmented message never gets its last fragment. The
// connection is gone afterwards (its goroutines and buffer with it).
func TestUnfinishedFrame(t *testing.T) {
	const timeout = 400 * time.Millisecond
	for _, tc := range []struct {
		name  string
		start []byte             // sent at once
		next  func(i int) []byte // then one of these every 50 ms
	}{
		{
			name:  "frame",
			start: append(chattest.FrameHeader(chattest.OpText, true, 1000), chattest.MaskAt([]byte(`{"type":"msg"`), 0)...),
			next:  func(i int) []byte { return chattest.MaskAt([]byte{' '}, 13+i) },
		},
		{
			name:  "header",
			start: chattest.FrameHeader(chattest.OpText, true, 1000)[:3],
			next:  func(int) []byte { return nil },
		},
		{
			name:  "fragments",
			start: chattest.ClientFrame(chattest.OpText, false, []byte(`{"type":"msg",`)),
			next:  func(int) []byte { return chattest.ClientFrame(chattest.OpContinuation, false, []byte(" ")) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := chattest.StartInProcess(t, func(c *server.Config) { c.FrameTimeout = timeout })
			r := rawWelcome(t, ts)
			start := time.Now()
			if err := r.Write(tc.start); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			trickled := make(chan struct{})
			go func() {
				defer close(trickled)
				for i := range 100 { // 5 s at most
					select {
					case <-done:
						return
					case <-time.After(50 * time.Millisecond):
					}
					if b := tc.next(i); len(b) > 0 && r.Write(b) != nil {
						return
					}
				}
			}()
			code, reason, _, err := r.Closed(5 * time.Second)
			close(done)
			<-trickled
			took := time.Since(start)
			if err != nil {
				t.Fatalf("no close frame after %v: %v", took, err)
			}
			if code != protocol.CloseFrameTimeout.Code || reason != protocol.CloseFrameTimeout.Reason {
				t.Fatalf("closed with %d %q, want %d %q", code, reason, protocol.CloseFrameTimeout.Code, protocol.CloseFrameTimeout.Reason)
			}
			if took < timeout || took > timeout+2*time.Second {
				t.Errorf("closed %v after the first byte, want a little over %v", took, timeout)
			}
			chattest.Eventually(t, 5*time.Second, func() bool { return metric(t, ts, "roomchat_connections") == 0 }, "the connection is gone")
		})
	}
}

// FrameTimeout bounds a message, not a connection: frames sent in pieces
// that finish in time are handled, and so is a frame sent long after the
// last one (the read deadline the last one left behind is cleared, not
// taken for a stalled frame).
func TestSlowFrameInTime(t *testing.T) {
	const timeout = 400 * time.Millisecond
	ts := chattest.StartInProcess(t, func(c *server.Config) { c.FrameTimeout = timeout })
	r := rawWelcome(t, ts)
	ping := []byte(`{"type":"ping","id":"p1"}`)
	frame := chattest.ClientFrame(chattest.OpText, true, ping)
	for i, piece := range [][]byte{frame[:3], frame[3:10], frame[10:]} {
		if i > 0 {
			time.Sleep(timeout / 4)
		}
		if err := r.Write(piece); err != nil {
			t.Fatal(err)
		}
	}
	expectPong := func(id string) {
		t.Helper()
		op, p, err := r.ReadFrame(chattest.Timeout)
		if err != nil || op != chattest.OpText || !strings.Contains(string(p), `"type":"pong","id":"`+id+`"`) {
			t.Fatalf("got op %d %q %v, want the pong of %s", op, p, err, id)
		}
	}
	expectPong("p1")
	time.Sleep(3 * timeout) // idle past the deadline the frame left
	if err := r.Write(chattest.ClientFrame(chattest.OpText, true, []byte(`{"type":"ping","id":"p2"}`))); err != nil {
		t.Fatal(err)
	}
	expectPong("p2")
	// A fragmented message whose fragments all come in time.
	for i, part := range []string{`{"type":"pi`, `ng","id"`, `:"p3"}`} {
		op := byte(chattest.OpContinuation)
		if i == 0 {
			op = chattest.OpText
		}
		if err := r.Write(chattest.ClientFrame(op, i == 2, []byte(part))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(timeout / 5)
	}
	expectPong("p3")
}
