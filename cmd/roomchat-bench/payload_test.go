package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

func TestMsgRoundTrip(t *testing.T) {
	b := newMsgBuf()
	if len(b) != msgSize {
		t.Fatalf("len = %d, want %d", len(b), msgSize)
	}
	ns := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano()
	fillMsg(b, ns, 'C')
	// A batch frame of two roomchat events and one other event.
	ev := protocol.Encode(protocol.TypeMsg, "", protocol.Message{ID: "x", RoomID: "r", Seq: 1, Message: string(b), TS: time.Unix(0, ns)})
	other := protocol.Encode(protocol.TypePresence, "", protocol.Presence{RoomID: "rcb:", Event: protocol.PresenceJoin})
	frame := bytes.Join([][]byte{ev, other, ev}, []byte("\n"))
	var got []int64
	n := scanMsgs(frame, func(v int64, phase byte) {
		if phase != 'C' {
			t.Errorf("phase = %q, want 'C'", phase)
		}
		got = append(got, v)
	})
	if n != 2 || len(got) != 2 || got[0] != ns || got[1] != ns {
		t.Errorf("scanMsgs = %d %v, want 2 × %d", n, got, ns)
	}
	// The raw relay frame is the message itself.
	if n := scanMsgs(b, func(int64, byte) {}); n != 1 {
		t.Errorf("scanMsgs(raw) = %d, want 1", n)
	}
}

// TestMsgFrame checks that the sender's template, rewritten in place, is
// still the msg frame that protocol.Encode makes of the same message.
func TestMsgFrame(t *testing.T) {
	for _, k := range []kind{kindRoomchat, kindRelay} {
		frame, msg := msgFrame(k)
		fillMsg(msg, 1234567890123456789, 'B')
		want := []byte("rcb:1234567890123456789:B:")
		if !bytes.HasPrefix(msg, want) || len(msg) != msgSize {
			t.Fatalf("%s: message %q, want %d bytes starting %q", k, msg, msgSize, want)
		}
		if k == kindRelay {
			if !bytes.Equal(frame, msg) {
				t.Errorf("relay frame %q, want the bare message", frame)
			}
			continue
		}
		if enc := protocol.Encode(protocol.TypeMsg, "", protocol.Send{Message: string(msg)}); !bytes.Equal(frame, enc) {
			t.Errorf("frame %s, want %s", frame, enc)
		}
		env, perr := protocol.DecodeEnvelope(frame)
		var s protocol.Send
		if perr == nil {
			perr = protocol.DecodePayload(env, &s)
		}
		if perr != nil || env.Type != protocol.TypeMsg || s.Message != string(msg) {
			t.Errorf("frame %s decodes to %q %+v (%v)", frame, env.Type, s, perr)
		}
	}
}

// BenchmarkMsgFrame compares what a sender does per message, rewriting the
// template, with encoding a fresh frame from protocol.Send.
func BenchmarkMsgFrame(b *testing.B) {
	b.Run("template", func(b *testing.B) {
		_, msg := msgFrame(kindRoomchat)
		b.ReportAllocs()
		for b.Loop() {
			fillMsg(msg, time.Now().UnixNano(), 'A')
		}
	})
	b.Run("encode", func(b *testing.B) {
		msg := newMsgBuf()
		b.ReportAllocs()
		for b.Loop() {
			fillMsg(msg, time.Now().UnixNano(), 'A')
			_ = protocol.Encode(protocol.TypeMsg, "", protocol.Send{Message: string(msg)})
		}
	})
}
