package bench

import (
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is cut into
// 2^subBits buckets, so a recorded value is off by at most 1/2^subBits
// (under 1.6%).
const subBits = 6

const (
	subCount = 1 << subBits
	// groups covers values up to 2^(groups+subBits-1) ns, about 36 minutes.
	groups   = 36
	nBuckets = (groups + 1) * subCount
)

// Histogram records latencies in log-linear buckets, as HDR histograms do:
// bounded memory (a few tens of kilobytes) whatever the number of values,
// and percentiles within 1.6%. The zero value is an empty histogram. It is
// not safe for concurrent use: give each worker its own and [Histogram.Merge]
// them.
type Histogram struct {
	counts [nBuckets]uint64
	n      uint64
	sum    uint64
	max    uint64
	min    uint64
}

// bucket returns the bucket index of v (ns).
func bucket(v uint64) int {
	if v < subCount {
		return int(v)
	}
	g := bits.Len64(v) - subBits // >= 1
	if g > groups {
		return nBuckets - 1
	}
	return g*subCount + int(v>>(g-1)) - subCount
}

// bucketHigh returns the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	g := i / subCount
	low := uint64(i%subCount+subCount) << (g - 1)
	return low + 1<<(g-1) - 1
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucket(v)]++
	h.n++
	h.sum += v
	if v > h.max {
		h.max = v
	}
	if h.n == 1 || v < h.min {
		h.min = v
	}
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Count returns the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest value recorded, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the mean of the values recorded.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}

// Quantile returns the value under which a fraction q (0 to 1) of the
// values fall: the upper edge of that value's bucket, never more than the
// maximum.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(max(bucketHigh(i), h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
