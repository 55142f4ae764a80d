package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a lock-free latency histogram with log-linear buckets, in the
// spirit of HdrHistogram: values below 2^subBits are exact, larger ones
// keep their top subBits+1 significant bits, so a bucket is at most 1/64
// (1.6 %) wide relative to its value. Recording is two atomic adds and no
// allocation, which keeps the load generator's per-delivery cost small.
// The zero value is ready to use. Values are nanoseconds; negative values
// count as 0 and values past 2^maxExp ns (about 18 minutes) clamp.
type hist struct {
	counts [nBuckets]atomic.Int64
	n      atomic.Int64
	max    atomic.Int64
}

const (
	subBits  = 6 // 64 sub-buckets per power of two: ≤ 1.6 % error
	subCount = 1 << subBits
	maxExp   = 40 // 2^40 ns ≈ 1100 s
	nBuckets = (maxExp - subBits + 2) * subCount
)

// bucketOf maps a value to its bucket index.
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < subCount {
		return int(u)
	}
	// shift keeps the top subBits+1 bits: sub is in [subCount, 2*subCount).
	shift := bits.Len64(u) - subBits - 1
	if shift > maxExp-subBits {
		return nBuckets - 1
	}
	sub := u >> uint(shift)
	return (shift+1)*subCount + int(sub-subCount)
}

// bucketBounds returns the smallest and largest value that fall in bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	shift := i/subCount - 1
	sub := uint64(i%subCount + subCount)
	lo = int64(sub << uint(shift))
	hi = lo + int64(1)<<uint(shift) - 1
	return lo, hi
}

// record adds one value.
func (h *hist) record(v time.Duration) {
	h.counts[bucketOf(int64(v))].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if int64(v) <= m || h.max.CompareAndSwap(m, int64(v)) {
			return
		}
	}
}

// snapshot copies the histogram so that percentiles are computed on one
// consistent view while readers keep recording.
func (h *hist) snapshot() *histSnap {
	s := &histSnap{max: h.max.Load()}
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] = c
		s.n += c
	}
	return s
}

type histSnap struct {
	counts [nBuckets]int64
	n      int64
	max    int64
}

// quantile returns the q-quantile (0 ≤ q ≤ 1) by the nearest-rank method:
// the smallest recorded value v such that at least ⌈q·n⌉ values are ≤ v,
// reported as the midpoint of v's bucket (exact below 64 ns) and never above
// the recorded maximum. It returns 0 for an empty histogram.
func (s *histSnap) quantile(q float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q*float64(s.n) - 1e-9))
	if rank < 1 {
		rank = 1
	}
	if rank > s.n {
		rank = s.n
	}
	var seen int64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketBounds(i)
			v := lo + (hi-lo)/2
			if v > s.max {
				v = s.max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(s.max)
}
