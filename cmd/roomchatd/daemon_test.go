package main

// The tests run the built roomchatd as a subprocess (chattest.Start) and
// speak to it with chattest's raw client.

import (
	"os"
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
)

func TestMain(m *testing.M) { os.Exit(chattest.Main(m)) }

// getJSON GETs u, checks the status and decodes the body into v.
func getJSON(t *testing.T, u string, status int, v any) {
	t.Helper()
	httpJSON(t, "GET", u, "", "", status, v)
}

// httpJSON makes a request (bearer and body optional), fails t unless it
// answers status, and decodes the body into v (if not nil).
func httpJSON(t *testing.T, method, u, bearer, body string, status int, v any) {
	t.Helper()
	code, b := chattest.Request(t, method, u, bearer, body)
	if code != status {
		t.Fatalf("%s %s: %d %s, want %d", method, u, code, b, status)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, u, err, b)
		}
	}
}
