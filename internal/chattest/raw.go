package chattest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Raw is a WebSocket client that writes exactly the bytes a test gives
// it, for what no well-behaved library sends: a frame in pieces with
// pauses between them, a frame that never ends, floods of control frames.
// ClientFrame builds a client frame. It reads server frames itself (ReadFrame),
// and answers nothing on its own: no pong, no close.
type Raw struct {
	// Conn is the TCP connection; write to it with Write or directly.
	Conn net.Conn
	br   *bufio.Reader // the server's bytes after the handshake's response
}

// DialRaw upgrades to the /ws of the server at base (http://HOST:PORT) with
// query ("" or "?…") over a plain TCP connection and fails t unless the
// answer is 101. It reads nothing past the response: the welcome is the
// first frame ReadFrame returns. The connection is closed when the test
// ends.
func DialRaw(t testing.TB, base, query string) *Raw {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	c, err := net.DialTimeout("tcp", host, Timeout)
	if err != nil {
		t.Fatalf("dial %s: %v", host, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(Timeout))
	req := "GET /ws" + query + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write the upgrade request: %v", err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the upgrade response: %v", err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %s, want 101", res.Status)
	}
	c.SetDeadline(time.Time{})
	return &Raw{Conn: c, br: br}
}

// WebSocket opcodes (RFC 6455 §5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// rawMask is the masking key of every frame Frame builds: any key will do,
// and a fixed one makes the bytes on the wire predictable.
var rawMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// ClientFrame returns a client frame (masked, as RFC 6455 requires of clients)
// of opcode op with payload, marked final if fin. FrameHeader is its
// header alone, for a test that sends the payload in pieces.
func ClientFrame(op byte, fin bool, payload []byte) []byte {
	b := FrameHeader(op, fin, len(payload))
	for i, p := range payload {
		b = append(b, p^rawMask[i%4])
	}
	return b
}

// FrameHeader returns the header of a client frame of opcode op announcing
// n payload bytes, masking key included. The payload that follows must be
// masked with MaskAt.
func FrameHeader(op byte, fin bool, n int) []byte {
	b0 := op & 0x0f
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	return append(b, rawMask[:]...)
}

// MaskAt returns payload bytes p masked as bytes at offset off of a frame's
// payload (after FrameHeader).
func MaskAt(p []byte, off int) []byte {
	out := make([]byte, len(p))
	for i, c := range p {
		out[i] = c ^ rawMask[(off+i)%4]
	}
	return out
}

// Write writes b as it is, within Timeout.
func (r *Raw) Write(b []byte) error {
	r.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	_, err := r.Conn.Write(b)
	return err
}

// ReadFrame reads the server's next frame, waiting at most d: its opcode
// and payload (server frames are not masked). Fragments are returned one
// by one, as they come.
func (r *Raw) ReadFrame(d time.Duration) (op byte, payload []byte, err error) {
	r.Conn.SetReadDeadline(time.Now().Add(d))
	defer r.Conn.SetReadDeadline(time.Time{})
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("the server sent a masked frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r.br, ext[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r.br, ext[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > 16<<20 {
		return 0, nil, fmt.Errorf("a frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// Closed reads frames until the server's close frame, waiting at most d in
// all, and returns its code and reason and the frames before it; err when
// the connection ended (or d passed) without one.
func (r *Raw) Closed(d time.Duration) (code int, reason string, before [][]byte, err error) {
	deadline := time.Now().Add(d)
	for {
		op, p, err := r.ReadFrame(time.Until(deadline))
		if err != nil {
			return 0, "", before, err
		}
		if op == OpClose {
			if len(p) < 2 {
				return 1005, "", before, nil // no status (RFC 6455 §7.1.5)
			}
			return int(binary.BigEndian.Uint16(p)), string(p[2:]), before, nil
		}
		before = append(before, append([]byte{op}, p...))
	}
}
