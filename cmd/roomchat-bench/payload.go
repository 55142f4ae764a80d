package main

import (
	"bytes"

	"github.com/roomchat/roomchat/internal/protocol"
)

// A bench message is exactly msgSize bytes of ASCII text:
//
//	rcb:<19-digit unix ns scheduled send time>:<phase>:<padding x…>
//
// The marker lets a receiver find the timestamp with one bytes.Index in a
// roomchat msg event (or in each line of a batch) without decoding JSON, and
// the phase byte tells a round's measured messages ('A'…'Z', one letter
// per round) from warm-up ones ('w'), so that warm-up traffic or an earlier
// round's stragglers arriving in the measured window are neither counted
// as measured deliveries nor as loss. The text needs no JSON
// escaping, so the relay and roomchat carry the same 64 bytes.
const (
	msgSize     = 64
	marker      = "rcb:"
	tsDigits    = 19
	phaseOffset = len(marker) + tsDigits + 1
	minMsgSize  = phaseOffset + 2
)

const phaseWarmup = 'w'

var markerBytes = []byte(marker)

// fillMsg writes a bench message with scheduled send time ns and phase into b, which
// must be msgSize long and whose padding fillMsg leaves alone after the
// first call (newMsgBuf prepares it).
func fillMsg(b []byte, ns int64, phase byte) {
	// Fixed-width decimal, most significant digit first.
	for i := len(marker) + tsDigits - 1; i >= len(marker); i-- {
		b[i] = byte('0' + ns%10)
		ns /= 10
	}
	b[phaseOffset] = phase
}

// newMsgBuf returns a msgSize buffer with the marker, separators and padding
// in place.
func newMsgBuf() []byte {
	b := bytes.Repeat([]byte{'x'}, msgSize)
	copy(b, marker)
	b[len(marker)+tsDigits] = ':'
	b[phaseOffset+1] = ':'
	return b
}

// parseMsgAt reads the timestamp and phase of the bench message that starts
// at the marker at b[0:]. ok is false when b does not hold a whole header.
func parseMsgAt(b []byte) (ns int64, phase byte, ok bool) {
	if len(b) < minMsgSize || !bytes.HasPrefix(b, markerBytes) {
		return 0, 0, false
	}
	for _, c := range b[len(marker) : len(marker)+tsDigits] {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		ns = ns*10 + int64(c-'0')
	}
	return ns, b[phaseOffset], true
}

// scanMsgs calls fn for every bench message header in frame. A roomchat
// frame holds one event, or with ?batch=1 several events separated by '\n';
// a relay frame is the raw message. Each event carries at most one message,
// so scanning for the marker is enough and no JSON is decoded.
func scanMsgs(frame []byte, fn func(ns int64, phase byte)) (n int) {
	for {
		i := bytes.Index(frame, markerBytes)
		if i < 0 {
			return n
		}
		frame = frame[i:]
		if ns, ph, ok := parseMsgAt(frame); ok {
			fn(ns, ph)
			n++
			frame = frame[minMsgSize:]
			continue
		}
		frame = frame[len(marker):]
	}
}

// msgFrame returns the frame a sender writes, and the msgSize bytes in it
// that hold the bench message: for the relay the frame is the raw message,
// for roomchat a msg frame encoded from protocol.Send. The frame is a
// template: it is encoded once per sender, and each message only rewrites
// the timestamp digits and the phase byte in place (fillMsg). Encoding a
// frame per message would cost ~1.7 µs and 7 allocations each against
// ~0.12 µs and none (BenchmarkMsgFrame on the project's machine), on the
// generator's one core that also reads every delivery. The bench message
// needs no JSON escaping, so it appears in the encoded frame byte for byte.
func msgFrame(k kind) (frame, msg []byte) {
	msg = newMsgBuf()
	if k == kindRelay {
		return msg, msg
	}
	frame = protocol.Encode(protocol.TypeMsg, "", protocol.Send{Message: string(msg)})
	i := bytes.Index(frame, markerBytes)
	return frame, frame[i : i+msgSize]
}
