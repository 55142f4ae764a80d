package main

// The tests run the built roomchatd as a subprocess (chattest.Start) and
// speak to it with chattest's raw client.

import (
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
)

func TestMain(m *testing.M) { os.Exit(chattest.Main(m)) }

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
