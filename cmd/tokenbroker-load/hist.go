package main

import (
	"math"
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram in the manner of HdrHistogram:
// values below 2*histSub nanoseconds are counted exactly; above, each power
// of two is split into histSub equal buckets, so a reported percentile is
// within 1/histSub (0.8%) of the true value. Recording is a few shifts and
// one increment; each client goroutine owns one and they are merged at the
// end, so the hot path shares nothing.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64 // nanoseconds
	max    uint64
	min    uint64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // 128 buckets per power of two
	// histMaxBits bounds the tracked range: 2^36 ns is about 69 s. Longer
	// values land in the last bucket; max stays exact.
	histMaxBits = 36
	histBuckets = 2*histSub + (histMaxBits-histSubBits-1)*histSub
)

func newHist() *hist { return &hist{min: math.MaxUint64} }

// bucket returns v's bucket index.
func bucket(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(v) - (histSubBits + 1) // >= 1
	if shift > histMaxBits-histSubBits-1 {
		return histBuckets - 1
	}
	mant := v >> uint(shift) // in [histSub, 2*histSub)
	return 2*histSub + (shift-1)*histSub + int(mant-histSub)
}

// bucketHigh is the highest value that lands in bucket i.
func bucketHigh(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	j := i - 2*histSub
	shift := j/histSub + 1
	mant := uint64(j%histSub + histSub)
	return (mant+1)<<uint(shift) - 1
}

func (h *hist) record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucket(v)]++
	h.n++
	h.sum += v
	if v > h.max {
		h.max = v
	}
	if v < h.min {
		h.min = v
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
	h.min = min(h.min, o.min)
}

// quantile returns the value at quantile q (0 < q <= 1): the highest value
// equivalent to the bucket holding the ceil(q*n)-th smallest recording,
// never above the recorded maximum.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketHigh(i), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}
