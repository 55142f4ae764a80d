package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/roomchat/roomchat/internal/chattest"
)

// TestMetricsAddr: with -metrics-addr, /metrics is served on that address
// only: the main address answers it 404, and the rest of the server is
// unchanged.
func TestMetricsAddr(t *testing.T) {
	maddr := freeLoopback(t)
	d := chattest.Start(t, "-db", ":memory:", "-metrics-addr", maddr)
	get := func(u string) (int, string) {
		t.Helper()
		res, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if status, body := get(d.URL + "/metrics"); status != http.StatusNotFound {
		t.Fatalf("GET /metrics on -addr: %d %.100s, want 404", status, body)
	}
	if status, _ := get(d.URL + "/healthz"); status != http.StatusOK {
		t.Fatalf("GET /healthz on -addr: %d", status)
	}
	chattest.Dial(t, d.URL, "").Close()
	status, body := get("http://" + maddr + "/metrics")
	if status != http.StatusOK || !strings.Contains(body, "\nroomchat_connections_total 1\n") {
		t.Fatalf("GET /metrics on -metrics-addr: %d, want 200 counting the connection:\n%.2000s", status, body)
	}
	if !strings.Contains(d.Logs(), `msg="metrics listening" addr=`+maddr) {
		t.Errorf("no \"metrics listening\" line:\n%s", d.Logs())
	}
	d.Stop(t)
}
