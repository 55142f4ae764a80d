package main

// Helpers for the tests that run the built roomchatd as a subprocess
// (chattest.Server) and speak to it with chattest's raw client.

import (
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
)

func TestMain(m *testing.M) { os.Exit(chattest.Main(m)) }

// roomchatdBin is the path of roomchatd, built once per test binary (or
// $ROOMCHAT_TEST_ROOMCHATD).
func roomchatdBin(t *testing.T) string {
	t.Helper()
	return chattest.Bin(t, chattest.ServerPackage)
}

// startDaemon runs roomchatd -addr 127.0.0.1:0 -rate 0 -db db args… and
// waits until it logs its address. It is killed at the end of the test if
// it still runs.
func startDaemon(t *testing.T, db string, args ...string) *chattest.Server {
	t.Helper()
	return chattest.Start(t, roomchatdBin(t), append([]string{"-db", db}, args...)...)
}

// getJSON GETs u, checks the status and decodes the body into v.
func getJSON(t *testing.T, u string, status int, v any) {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != status {
		t.Fatalf("GET %s: status %d (%s), want %d", u, res.StatusCode, b, status)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %s: %v", u, b, err)
		}
	}
}
