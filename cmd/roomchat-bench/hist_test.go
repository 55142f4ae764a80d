package main

import (
	"math"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	for i := 0; i < nBuckets-1; i++ {
		lo, hi := bucketBounds(i)
		if got := bucketOf(lo); got != i {
			t.Fatalf("bucketOf(lo=%d) = %d, want %d", lo, got, i)
		}
		if got := bucketOf(hi); got != i {
			t.Fatalf("bucketOf(hi=%d) = %d, want %d", hi, got, i)
		}
		if got := bucketOf(hi + 1); got != i+1 {
			t.Fatalf("bucketOf(hi+1=%d) = %d, want %d", hi+1, got, i+1)
		}
		if lo >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-9 {
			t.Fatalf("bucket %d [%d,%d] wider than 1/%d of its value", i, lo, hi, subCount)
		}
	}
	if got := bucketOf(-5); got != 0 {
		t.Errorf("bucketOf(-5) = %d, want 0", got)
	}
	if got := bucketOf(math.MaxInt64); got != nBuckets-1 {
		t.Errorf("bucketOf(MaxInt64) = %d, want the last bucket %d", got, nBuckets-1)
	}
}

func TestQuantileExactSmall(t *testing.T) {
	var h hist
	for v := 1; v <= 50; v++ { // exact buckets below 64 ns
		h.record(time.Duration(v))
	}
	s := h.snapshot()
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.01, 1}, {0.5, 25}, {0.9, 45}, {0.99, 50}, {1, 50}} {
		if got := s.quantile(tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %d, want %d", tc.q, got, tc.want)
		}
	}
	if s.n != 50 || s.max != 50 {
		t.Errorf("n=%d max=%d, want 50 and 50", s.n, s.max)
	}
}

func TestQuantileRelativeError(t *testing.T) {
	var h hist
	// 1 ms … 1000 ms in 1 ms steps: the nearest-rank q-quantile is q·1000 ms.
	for v := 1; v <= 1000; v++ {
		h.record(time.Duration(v) * time.Millisecond)
	}
	s := h.snapshot()
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := time.Duration(math.Ceil(q*1000)) * time.Millisecond
		got := s.quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 1.0/subCount {
			t.Errorf("quantile(%v) = %v, want %v within %.1f%%", q, got, want, 100.0/subCount)
		}
	}
	if got := s.quantile(1); got != time.Second {
		t.Errorf("quantile(1) = %v, want the max 1s", got)
	}
}

func TestQuantileEmptyAndSkewed(t *testing.T) {
	var h hist
	if got := h.snapshot().quantile(0.99); got != 0 {
		t.Errorf("empty quantile = %v, want 0", got)
	}
	// 99 fast and 1 slow: p99 is still fast, p99.9 and max are the slow one.
	for range 99 {
		h.record(2 * time.Millisecond)
	}
	h.record(3 * time.Second)
	s := h.snapshot()
	if got := s.quantile(0.99); got < 1960*time.Microsecond || got > 2040*time.Microsecond {
		t.Errorf("p99 = %v, want about 2ms", got)
	}
	if got := s.quantile(0.999); got < 2950*time.Millisecond || got > 3*time.Second {
		t.Errorf("p99.9 = %v, want about 3s", got)
	}
}
