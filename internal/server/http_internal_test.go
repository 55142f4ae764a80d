package server

import (
	"testing"
	"time"
)

// TestPageDeadline: a page of n bytes has RequestTimeout per 128 KiB in
// all, and never less than RequestTimeout.
func TestPageDeadline(t *testing.T) {
	s := &Server{cfg: Config{RequestTimeout: 30 * time.Second}}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{0, 30 * time.Second},
		{64 << 10, 30 * time.Second},
		{128 << 10, 30 * time.Second},
		{256 << 10, time.Minute},
		{320 << 10, 75 * time.Second},
	} {
		if got := s.pageDeadline(tc.n); got != tc.want {
			t.Errorf("pageDeadline(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}
