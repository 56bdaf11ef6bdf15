package sim_test

import (
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/sim"
)

func byAlg(t *testing.T, rs []sim.Result) map[floodgate.Algorithm]sim.Result {
	t.Helper()
	m := map[floodgate.Algorithm]sim.Result{}
	for _, r := range rs {
		m[r.Algorithm] = r
	}
	return m
}

// The figures the algorithms' formulas predict (docs/algorithms.md): at a
// window boundary a fixed window lets 2×quota through within one window's
// span, the sliding log never more than quota, the token bucket its burst
// plus what refills; under a steady 2× load no algorithm admits much more
// than quota per window on average.
func TestKnownFigures(t *testing.T) {
	rs, err := sim.Run(sim.Options{Quota: 100, Window: time.Minute, MemoryKeys: -1})
	if err != nil {
		t.Fatal(err)
	}
	m := byAlg(t, rs)
	if len(m) != 5 {
		t.Fatalf("%d algorithms, want the 5 rate ones", len(m))
	}
	if got := m[floodgate.FixedWindow].Edge.MaxInWindow; got != 200 {
		t.Errorf("fixed window at an edge: %d in a window's span, want 200 (quota on each side)", got)
	}
	if got := m[floodgate.SlidingWindowLog].Edge.MaxInWindow; got != 100 {
		t.Errorf("sliding log at an edge: %d, want exactly 100", got)
	}
	if got := m[floodgate.SlidingWindowLog].Steady.MaxInWindow; got != 100 {
		t.Errorf("sliding log, steady: %d in a window's span, want exactly 100", got)
	}
	if got := m[floodgate.SlidingWindow].Edge.MaxInWindow; got < 100 || got > 102 {
		t.Errorf("sliding counter at an edge: %d, want about 100 (the previous window weighs almost all)", got)
	}
	for _, a := range []floodgate.Algorithm{floodgate.TokenBucket, floodgate.GCRA} {
		if got := m[a].Edge.MaxInWindow; got < 100 || got > 101 {
			t.Errorf("%v at an edge: %d, want the burst of 100 (and at most a unit refilled in 2ms)", a, got)
		}
		if got := m[a].Steady.MaxInWindow; got < 100 || got > 200 {
			t.Errorf("%v, steady: %d in a window's span, want between quota and burst+quota", a, got)
		}
	}
	for a, r := range m {
		windows := 20.0
		if avg := float64(r.Steady.Admitted) / windows; avg < 90 || avg > 106 {
			t.Errorf("%v, steady 2× load: %.1f admitted per window on average, want about 100", a, avg)
		}
		if r.Steady.Offered < 3600 || r.Steady.Offered > 4400 {
			t.Errorf("%v: %d offered, want about 4000 (2 × 100 × 20 windows)", a, r.Steady.Offered)
		}
		if len(r.Steady.Trail) == 0 || len(r.Edge.Trail) == 0 {
			t.Errorf("%v: no trail", a)
		}
	}
}

// The same seed gives the same figures; another seed other arrivals.
func TestDeterministic(t *testing.T) {
	o := sim.Options{Algorithms: []floodgate.Algorithm{floodgate.SlidingWindow}, MemoryKeys: -1, Seed: 7}
	a, _ := sim.Run(o)
	b, _ := sim.Run(o)
	if a[0].Steady.Admitted != b[0].Steady.Admitted || a[0].Steady.MaxInWindow != b[0].Steady.MaxInWindow {
		t.Errorf("one seed, two runs: %+v and %+v", a[0].Steady, b[0].Steady)
	}
	o.Seed = 8
	c, _ := sim.Run(o)
	if c[0].Steady.Offered == a[0].Steady.Offered {
		t.Errorf("seeds 7 and 8 offered the same %d requests", a[0].Steady.Offered)
	}
}

func TestMemory(t *testing.T) {
	rs, err := sim.Run(sim.Options{Algorithms: []floodgate.Algorithm{floodgate.FixedWindow, floodgate.SlidingWindowLog}, MemoryKeys: 20000, Windows: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		// A key and its entry take tens to hundreds of bytes; the log keeps
		// its events besides.
		if r.BytesPerKey < 8 || r.BytesPerKey > 2000 {
			t.Errorf("%v: %.0f bytes per key", r.Algorithm, r.BytesPerKey)
		}
	}
	t.Logf("bytes per key: %v %.0f, %v %.0f", rs[0].Algorithm, rs[0].BytesPerKey, rs[1].Algorithm, rs[1].BytesPerKey)
}

// A window that does not divide a day still has its edge workload on a
// window boundary: the fixed window lets 2×quota through there.
func TestUnalignedWindows(t *testing.T) {
	for _, w := range []time.Duration{7 * time.Second, 7 * time.Minute, 48 * time.Hour} {
		rs, err := sim.Run(sim.Options{Algorithms: []floodgate.Algorithm{floodgate.FixedWindow, floodgate.SlidingWindowLog}, Window: w, MemoryKeys: -1, Windows: 3})
		if err != nil {
			t.Fatal(err)
		}
		if rs[0].Edge.MaxInWindow != 200 || rs[1].Edge.MaxInWindow != 100 {
			t.Errorf("window %v: edge figures %d and %d, want 200 (fixed) and 100 (log)", w, rs[0].Edge.MaxInWindow, rs[1].Edge.MaxInWindow)
		}
	}
}

// The memory measurement takes any valid limit, whatever its window.
func TestMemoryAnyLimit(t *testing.T) {
	if _, err := sim.Run(sim.Options{Algorithms: []floodgate.Algorithm{floodgate.TokenBucket}, Quota: 1999993, Window: time.Second, Windows: 1, Load: 0.001, MemoryKeys: 1000}); err != nil {
		t.Error(err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []sim.Options{
		{Algorithms: []floodgate.Algorithm{floodgate.Concurrency}},
		{Load: -1},
		{Windows: -3},
		{Quota: 1_000_000, Windows: 100},
		{Quota: 5_000_000, Windows: 1, Load: 0.01},
		{Quota: 100_000, Algorithms: []floodgate.Algorithm{floodgate.SlidingWindowLog}},
		{Quota: -5},
	} {
		if _, err := sim.Run(o); err == nil {
			t.Errorf("Run(%+v): no error", o)
		}
	}
}
