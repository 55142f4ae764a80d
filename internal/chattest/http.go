package chattest

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Request makes an HTTP request to u with an optional bearer credential
// (SPEC §10) and JSON body, and returns the status and the body read
// whole. A request that gets no answer fails t.
func Request(t testing.TB, method, u, bearer, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read the body: %v", method, u, err)
	}
	return res.StatusCode, b
}
