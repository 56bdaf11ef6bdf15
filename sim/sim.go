// Package sim measures how each rate-limiting algorithm behaves, by
// running the algorithms' own state machines ([floodgate.Prepared]) over
// generated traffic at explicit instants: no clock, no store, the same
// figures on every run with the same seed.
//
// Two workloads, both at the limit's quota per window:
//
//   - steady: arrivals at random (a Poisson process) at Load times the
//     limit's rate, for Windows windows. It shows what share is admitted
//     and whether that exceeds the rate over time.
//   - edge: idle, then 2×quota requests in the last millisecond of an
//     aligned window and 2×quota more in the first millisecond of the next.
//     It shows the burst an algorithm lets through around a window
//     boundary.
//
// For each, the figure that matters is the most admitted in any span of one
// window's length (MaxInWindow), found exactly over the admitted instants:
// a limit of quota per window is exact when that never exceeds quota.
//
// Memory per key is measured too: the heap a memory store holds for many
// keys, one decision each, divided by their number.
package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/store/memory"
)

// Options configure [Run]. The zero value simulates every rate algorithm
// at 100 per minute.
type Options struct {
	// Algorithms to simulate. Default: the five rate algorithms
	// (Concurrency is not a rate and is skipped).
	Algorithms []floodgate.Algorithm
	// Quota and Window make each algorithm's limit. Default 100 per 1m.
	Quota  int64
	Window time.Duration
	// Load is the steady workload's offered rate as a multiple of the
	// limit's. Default 2.
	Load float64
	// Windows is the steady workload's length, in windows. Default 20.
	Windows int
	// Seed seeds the steady workload's arrivals. Default 1.
	Seed uint64
	// MemoryKeys is how many keys the memory measurement decides. Default
	// 100,000; negative skips it.
	MemoryKeys int
}

// Workload is the outcome of one workload under one algorithm.
type Workload struct {
	Offered, Admitted int64
	// MaxInWindow is the most admitted in any span of one window.
	MaxInWindow int64
	// Trail samples, every Window/10, how many were admitted in the window
	// ending then: the curve a plot draws.
	Trail []Point
}

// Point is one sample of a trail.
type Point struct {
	// At is the time since the workload started.
	At    time.Duration
	Count int64
}

// Result is one algorithm's figures.
type Result struct {
	Algorithm floodgate.Algorithm
	Limit     floodgate.Limit
	// Windows is the steady workload's length, in windows.
	Windows int
	Steady  Workload
	Edge    Workload
	// BytesPerKey is the heap a memory store holds per key, 0 when not
	// measured.
	BytesPerKey float64
}

// Bounds of a run: the arrivals of both workloads, and the sliding log's
// work (arrivals × events added up per decision).
const (
	maxArrivals = 20_000_000
	maxLogWork  = 4e9
)

// RateAlgorithms are the algorithms that limit a rate.
var RateAlgorithms = []floodgate.Algorithm{
	floodgate.FixedWindow, floodgate.SlidingWindowLog, floodgate.SlidingWindow, floodgate.TokenBucket, floodgate.GCRA,
}

func (o *Options) defaults() error {
	if o.Algorithms == nil {
		o.Algorithms = RateAlgorithms
	}
	if o.Quota == 0 {
		o.Quota = 100
	}
	if o.Window == 0 {
		o.Window = time.Minute
	}
	if o.Load == 0 {
		o.Load = 2
	}
	if o.Windows == 0 {
		o.Windows = 20
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.MemoryKeys == 0 {
		o.MemoryKeys = 100_000
	}
	switch {
	case o.Load < 0 || math.IsNaN(o.Load) || o.Load > 1000:
		return fmt.Errorf("sim: load %v: want 0 < load <= 1000", o.Load)
	case o.Windows < 1 || o.Windows > 10_000:
		return fmt.Errorf("sim: %d windows: want 1 to 10000", o.Windows)
	case o.Quota <= 0:
		return fmt.Errorf("sim: quota %d: want at least 1", o.Quota)
	case float64(o.Quota)*(o.Load*float64(o.Windows)+4) > maxArrivals:
		return fmt.Errorf("sim: quota %d × (load %v × %d windows + 4 for the edge): want at most %d requests", o.Quota, o.Load, o.Windows, maxArrivals)
	}
	for _, a := range o.Algorithms {
		// The log adds up the events of the window at each decision: its
		// cost is arrivals × quota.
		if a == floodgate.SlidingWindowLog && float64(o.Quota)*float64(o.Quota)*(o.Load*float64(o.Windows)+4) > maxLogWork {
			return fmt.Errorf("sim: sliding_window_log with quota %d: want quota² × (load × windows + 4) at most %g, so that it ends in seconds", o.Quota, float64(maxLogWork))
		}
		if a == floodgate.Concurrency {
			return fmt.Errorf("sim: concurrency limits work in flight, not a rate: nothing to simulate")
		}
		if err := (floodgate.Limit{Algorithm: a, Quota: o.Quota, Window: o.Window}).Validate(); err != nil {
			return fmt.Errorf("sim: %w", err)
		}
	}
	return nil
}

// Run simulates every algorithm of opts.
func Run(opts Options) ([]Result, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	out := make([]Result, 0, len(opts.Algorithms))
	for _, a := range opts.Algorithms {
		l := floodgate.Limit{Algorithm: a, Quota: opts.Quota, Window: opts.Window}
		r := Result{Algorithm: a, Limit: l, Windows: opts.Windows}
		r.Steady = run(l, steady(opts))
		r.Edge = run(l, edge(opts))
		if opts.MemoryKeys > 0 {
			b, err := bytesPerKey(l, opts.MemoryKeys)
			if err != nil {
				return nil, err
			}
			r.BytesPerKey = b
		}
		out = append(out, r)
	}
	return out, nil
}

// base is about when the workloads start, in µs: 2024-01-01 00:00:00 UTC.
// Each run starts at the window boundary at or before it ([start]).
const base int64 = 1704067200 * 1_000_000

// start returns the first instant of a run under a window of w µs: a
// window boundary (windows are aligned to the Unix epoch), so that the
// edge workload's boundary is one.
func start(w int64) int64 { return base - base%w }

// steady returns Poisson arrivals, in µs from base, at opts.Load times the
// limit's rate for opts.Windows windows.
func steady(opts Options) []int64 {
	w := opts.Window.Microseconds()
	mean := float64(w) / (float64(opts.Quota) * opts.Load) // µs between arrivals
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	end := int64(opts.Windows) * w
	var ts []int64
	for t := 0.0; ; {
		t += rng.ExpFloat64() * mean
		if int64(t) >= end {
			return ts
		}
		ts = append(ts, int64(t))
	}
}

// edge returns, after two idle windows, 2×quota arrivals spread over the
// last millisecond of a window and 2×quota over the first millisecond of
// the next, then one more idle window.
func edge(opts Options) []int64 {
	w := opts.Window.Microseconds()
	n := 2 * opts.Quota
	span := min(int64(1000), w/4)
	boundary := 2 * w
	ts := make([]int64, 0, 2*n)
	for i := range n {
		ts = append(ts, boundary-span+i*span/n)
	}
	for i := range n {
		ts = append(ts, boundary+i*span/n)
	}
	return ts
}

// run decides arrivals (µs from base) one unit each under l.
func run(l floodgate.Limit, arrivals []int64) Workload {
	p := l.Prepare()
	var st floodgate.State
	var r floodgate.Result
	wl := Workload{Offered: int64(len(arrivals))}
	admitted := make([]int64, 0, len(arrivals))
	t0 := start(l.Window.Microseconds())
	for _, t := range arrivals {
		p.Acquire(&st, t0+t, 1, "", &r)
		if r.Allowed {
			admitted = append(admitted, t)
		}
	}
	wl.Admitted = int64(len(admitted))
	w := l.Window.Microseconds()
	// The most admitted within any span [t, t+w): the span starting at an
	// admitted instant holds at least as many as any other.
	j := 0
	for i := range admitted {
		for j < len(admitted) && admitted[j] < admitted[i]+w {
			j++
		}
		wl.MaxInWindow = max(wl.MaxInWindow, int64(j-i))
	}
	// The trail: admitted in (t-w, t], every w/10.
	step := max(w/10, 1)
	var end int64
	if len(arrivals) > 0 {
		end = arrivals[len(arrivals)-1] + w
	}
	lo, hi := 0, 0
	for t := step; t <= end; t += step {
		for hi < len(admitted) && admitted[hi] <= t {
			hi++
		}
		for lo < hi && admitted[lo] <= t-w {
			lo++
		}
		wl.Trail = append(wl.Trail, Point{At: time.Duration(t) * time.Microsecond, Count: int64(hi - lo)})
	}
	return wl
}

// bytesPerKey measures the heap a memory store holds per key of l: the
// heap in use after a GC, with the store and n keys decided once each at
// one instant (so that none expires while it is measured), against before
// the store was made, over n; the keys' strings are made before and not
// counted (the store keeps a hash of each).
func bytesPerKey(l floodgate.Limit, n int) (float64, error) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "client-" + strconv.Itoa(i)
	}
	limits := []floodgate.Limit{l}
	ops := make([]floodgate.Op, 1)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st := memory.New(memory.Options{Capacity: 2 * n})
	defer st.Close()
	for _, k := range keys {
		ops[0] = floodgate.Op{Key: k, Limits: limits, Cost: 1, Now: base}
		if err := st.Decide(context.Background(), ops); err != nil {
			return 0, fmt.Errorf("sim: memory: %w", err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := st.Len(); got != n {
		return 0, fmt.Errorf("sim: memory: %d entries held for %d keys", got, n)
	}
	runtime.KeepAlive(keys)
	return max(0, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))) / float64(n), nil
}
