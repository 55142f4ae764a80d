package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
)

// TestMain removes the roomchatd that TestStorm builds.
func TestMain(m *testing.M) { os.Exit(chattest.Main(m)) }

// A small storm against the built roomchatd, once with SIGTERM and once
// with kill -9: every member comes back, and nothing is lost or repeated.
func TestStorm(t *testing.T) {
	bin := chattest.Bin(t, chattest.ServerPackage)
	for _, sig := range []string{"term", "kill"} {
		t.Run(sig, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			cfg := stormConfig{
				Bin: bin, DB: filepath.Join(t.TempDir(), "storm.db"), Addr: addr,
				Rooms: 3, Members: 4, Rate: 10, Signal: sig,
				Settle: 500 * time.Millisecond, Down: 200 * time.Millisecond, Timeout: time.Minute, Par: 8,
			}
			res, err := runStorm(context.Background(), cfg, &env{stdout: io.Discard, stderr: t.Output()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Lost != 0 || res.Duplicated != 0 || res.Acked == 0 || res.BackMS <= 0 || res.StormSamples == 0 {
				t.Fatalf("storm: %+v; want no loss or duplicate, acked messages, and a measured comeback", res)
			}
		})
	}
}

func TestGaps(t *testing.T) {
	lost, dup := gaps([]int64{1, 2, 2, 4, 5, 5, 5}, 6)
	if lost != 2 || dup != 3 {
		t.Fatalf("gaps: lost %d dup %d, want 2 (3, 6) and 3", lost, dup)
	}
}
