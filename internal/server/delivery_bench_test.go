package server_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
)

// BenchmarkDeliveryPath measures the server's whole path for one chat
// message, from the sender's frame on its socket to every member's socket
// write: read loop, decode, registry, store, encode once, each member's
// queue and writer. The clients are raw TCP sockets that write pre-built
// frames and count msg frames in a fixed buffer, so that they allocate
// nothing: allocs/op is the server's, per message (divide by the members
// for per delivery; ns/delivery is reported).
func BenchmarkDeliveryPath(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			ts := chattest.StartInProcess(b, chattest.NoRate)
			members := make([]*rawWS, n)
			for i := range members {
				members[i] = dialRaw(b, ts.URL)
				members[i].write(b, `{"type":"join","payload":{"roomID":"bench"}}`)
			}
			// Let the joins' presence events go out (coalesced: up to a
			// second), then count from here.
			time.Sleep(1500 * time.Millisecond)
			sender := members[0]
			frame := maskedFrame(`{"type":"msg","payload":{"roomID":"bench","message":"a message of some sixty-four bytes, like the benchmark's one"}}`)
			var want int64
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				want++
				if _, err := sender.conn.Write(frame); err != nil {
					b.Fatal(err)
				}
				for _, m := range members {
					m.waitMsgs(b, want)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// rawWS is a WebSocket client on a bare TCP socket: a goroutine (read,
// ended by closing the socket) parses the server's frames in place and
// counts those that are msg events.
type rawWS struct {
	conn net.Conn
	msgs atomic.Int64
	wake chan struct{}
	done chan struct{}
}

func dialRaw(tb testing.TB, base string) *rawWS {
	tb.Helper()
	addr := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	key := make([]byte, 16)
	rand.Read(key)
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", addr, base64.StdEncoding.EncodeToString(key))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade: %v %v", res, err)
	}
	r := &rawWS{conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go r.read(br)
	tb.Cleanup(func() {
		c.Close()
		<-r.done
	})
	return r
}

// read parses frames: 2 header bytes, an extended length, the payload;
// a payload that starts with msgPrefix counts.
func (r *rawWS) read(br *bufio.Reader) {
	defer close(r.done)
	var hdr [10]byte
	prefix := []byte(`{"type":"msg"`)
	head := make([]byte, len(prefix))
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		n := int64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[2:4]); err != nil {
				return
			}
			n = int64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err := io.ReadFull(br, hdr[2:10]); err != nil {
				return
			}
			n = int64(binary.BigEndian.Uint64(hdr[2:10]))
		}
		k := min(n, int64(len(head)))
		if _, err := io.ReadFull(br, head[:k]); err != nil {
			return
		}
		if _, err := br.Discard(int(n - k)); err != nil {
			return
		}
		if k == int64(len(prefix)) && bytes.Equal(head, prefix) {
			r.msgs.Add(1)
			select {
			case r.wake <- struct{}{}:
			default:
			}
		}
	}
}

// waitMsgs waits until the client has counted n msg events. It has no
// timer of its own (a timer per wait would be the client's allocation):
// the benchmark's -timeout bounds it.
func (r *rawWS) waitMsgs(tb testing.TB, n int64) {
	for r.msgs.Load() < n {
		select {
		case <-r.wake:
		case <-r.done:
			tb.Fatalf("connection ended after %d msg events, want %d", r.msgs.Load(), n)
		}
	}
}

func (r *rawWS) write(tb testing.TB, text string) {
	if _, err := r.conn.Write(maskedFrame(text)); err != nil {
		tb.Fatal(err)
	}
}

// maskedFrame is a client text frame of text (clients must mask; a zero
// mask keeps the payload as it is).
func maskedFrame(text string) []byte {
	var f []byte
	f = append(f, 0x81)
	switch n := len(text); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	default:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	}
	f = append(f, 0, 0, 0, 0)
	return append(f, text...)
}
