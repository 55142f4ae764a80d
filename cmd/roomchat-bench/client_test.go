package main

import "testing"

func TestLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"ws://127.0.0.1:8080", true},
		{"http://127.0.0.9:80", true},
		{"127.0.0.1:1", true},
		{"ws://localhost:8080", true},
		{"ws://10.0.0.1:8080", false},
		{"ws://example.com:80", false},
		{"ws://[::1]:80", false},
		{"wss://127.0.0.1:80", false},
	} {
		_, err := parseTarget(tc.in, kindRoomchat)
		if (err == nil) != tc.ok {
			t.Errorf("parseTarget(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}
