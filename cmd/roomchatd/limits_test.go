package main

import (
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
)

func TestMaxConnsFor(t *testing.T) {
	for _, tc := range []struct {
		nofile           uint64
		maxConns, maxTCP int
	}{
		{1024, 768, 896},                // a common soft limit: 128 for other files, 128 for HTTP
		{20000, 19744, 19872},           // 19,500 WebSockets fit under 20,000 files
		{1 << 20, 1048320, 1048448},     // Linux's default hard limit
		{300, 150, 225},                 // too small for 128 + 128: a quarter each
		{1<<64 - 1, 16776960, 16777088}, // RLIM_INFINITY: capped at 2^24
		{0, 0, 0},                       // nothing to give
		{512, 256, 384},                 // exactly 128 + 128
	} {
		if got, tcp := maxConnsFor(tc.nofile), tcpConnsFor(tc.nofile); got != tc.maxConns || tcp != tc.maxTCP {
			t.Errorf("nofile %d: maxConnsFor %d, tcpConnsFor %d; want %d, %d", tc.nofile, got, tcp, tc.maxConns, tc.maxTCP)
		}
	}
}

// TestLimitFlags: the limit and timeout flags are read from the
// environment and the command line (which wins), and bad values stop
// start-up.
func TestLimitFlags(t *testing.T) {
	t.Setenv("ROOMCHAT_MAX_CONNS", "5000")
	t.Setenv("ROOMCHAT_IP_CONNS", "20")
	t.Setenv("ROOMCHAT_IP_CONN_RATE", "2.5")
	t.Setenv("ROOMCHAT_IP_HTTP_RATE", "30")
	t.Setenv("ROOMCHAT_IP_HTTP_CONNS", "12")
	t.Setenv("ROOMCHAT_TRUST_PROXY", "10.0.0.0/8, ::1")
	t.Setenv("ROOMCHAT_HTTP_TIMEOUT", "45s")
	c, err := parseConfig([]string{"-ip-conns", "7", "-http-idle-timeout", "2m"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(c.maxConns, c.ipConns, c.ipConnRate, c.ipConnBurst, c.ipHTTPRate, c.ipHTTPBurst, c.ipHTTPConns, c.trustedProxies, c.httpTimeout, c.httpIdle)
	want := fmt.Sprint(5000, 7, 2.5, 20, 30.0, 100, 12, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}, 45*time.Second, 2*time.Minute)
	if got != want {
		t.Errorf("got=%s, want=%s", got, want)
	}

	// The room budgets: defaults, the environment, the flag, 0 for off
	// (as in room.Budgets).
	t.Setenv("ROOMCHAT_ROOM_EVENTS", "0")
	t.Setenv("ROOMCHAT_ROOM_BYTES", "100000")
	c, err = parseConfig([]string{"-room-joins", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b := c.budgets()
	got = fmt.Sprint(c.roomRate, c.roomEvents, c.roomBytes, c.roomJoins, b.RoomMsgs, b.RoomEvents)
	want = fmt.Sprint(50.0, 0.0, 100000.0, 5.0, 50.0, 0.0)
	if got != want {
		t.Errorf("room budgets: got=%s, want=%s", got, want)
	}

	for _, args := range [][]string{
		{"-max-conns", "-1"},
		{"-ip-conns", "-1"},
		{"-ip-http-conns", "-1"},
		{"-ip-conn-rate", "-1"},
		{"-ip-http-rate", "-0.5"},
		{"-room-rate", "-1"},
		{"-room-bytes", "-1"},
		{"-ip-conn-burst", "0"},
		{"-ip-http-burst", "0"},
		{"-http-timeout", "0s"},
		{"-http-idle-timeout", "-1s"},
		{"-resume-max-age", "4m"}, // under 2 × (2m + 25s): a renewed token would expire within the window
		{"-resume-max-age", "1h", "-resume-window", "31m"},
		{"-trust-proxy", "10.0.0.0/33"},
		{"-trust-proxy", "proxy.example.com"},
		{"-hosts", "https://chat.example.com"},
		{"-hosts", "chat.example.com:0"},
		{"-url", "chat.example.com"},
		{"-url", "ftp://chat.example.com"},
	} {
		if _, err := parseConfig(args, io.Discard); err != errUsage {
			t.Errorf("parseConfig(%q) = %v, want a usage error", args, err)
		}
	}
}

// TestDefaultMaxConns: without -max-conns, roomchatd derives the limit
// from its open-files limit and logs it.
func TestDefaultMaxConns(t *testing.T) {
	nofile, ok := openFilesLimit()
	if !ok {
		t.Skip("no open-files limit on this system")
	}
	d := chattest.Start(t)
	m := regexp.MustCompile(`msg="connection limit" max_conns=([0-9]+) max_tcp_conns=([0-9]+) open_files_limit=([0-9]+)`).FindStringSubmatch(d.Logs())
	if m == nil {
		t.Fatalf("no connection limit logged:\n%s", d.Logs())
	}
	// The child runs with the limit this process started with, which
	// Go's runtime raises the same way in both.
	if n, _ := strconv.ParseUint(m[3], 10, 64); n != nofile {
		t.Logf("the server's open-files limit is %d, this test's %d", n, nofile)
		nofile = n
	}
	if got, want := m[1], strconv.Itoa(maxConnsFor(nofile)); got != want {
		t.Fatalf("max_conns=%s, want %s for an open-files limit of %d", got, want, nofile)
	}
	if got, want := m[2], strconv.Itoa(tcpConnsFor(nofile)); got != want {
		t.Fatalf("max_tcp_conns=%s, want %s for an open-files limit of %d", got, want, nofile)
	}
	d.Stop(t)
}
