package approx_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
)

// maxIn returns the most of xs's elements summed over any run of n
// consecutive elements: the most an instance admitted in any interval of n
// steps.
func maxIn(xs []int64, n int) int64 {
	var best, sum int64
	for i, x := range xs {
		sum += x
		if i >= n {
			sum -= xs[i-n]
		}
		best = max(best, sum)
	}
	return best
}

// TestBoundSimulated runs N instances against one Redis in simulated time:
// one step per millisecond, instance j receiving rates[j] requests per step
// and syncing every interval at its own phase (before the step's
// decisions, so a sync takes no simulated time). It checks the admitted
// cost of one fixed window against the bound derived in
// docs/approximate.md with Δ = I:
//
//	admitted ≤ Quota + max over i of Σ_{j≠i} n_j(2I)
//
// where n_j(2I) is the most instance j admitted in any 2I steps.
func TestBoundSimulated(t *testing.T) {
	const (
		window   = time.Second
		interval = 100 // steps (ms)
	)
	cases := []struct {
		quota int64
		rates []int64 // requests per ms, per instance
	}{
		{1000, []int64{1, 1, 1, 1}},
		{1000, []int64{1, 2, 3, 4}},
		{5000, []int64{2, 2, 2, 2}},
		{300, []int64{5, 0, 0, 1}},
		{20000, []int64{4, 4, 4, 4}}, // never reached: exact
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("quota=%d/rates=%v", c.quota, c.rates), func(t *testing.T) {
			remote := newRemote(t)
			n := len(c.rates)
			stores := make([]*approx.Store, n)
			for j := range stores {
				stores[j] = newStore(t, remote)
			}
			l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: c.quota, Window: window}
			start := base(window)
			steps := int(window / time.Millisecond)
			adm := make([][]int64, n)
			for j := range adm {
				adm[j] = make([]int64, steps)
			}
			var admitted int64
			for step := range steps {
				now := start + int64(step)*1000
				for j, s := range stores {
					if (step-j*interval/n)%interval == 0 {
						syncNow(t, s)
					}
				}
				for j, s := range stores {
					for range c.rates[j] {
						if decide(t, s, "hot", now, 1, l).Allowed {
							adm[j][step]++
							admitted++
						}
					}
				}
			}
			var blind int64
			for i := range n {
				var sum int64
				for j := range n {
					if j != i {
						sum += maxIn(adm[j], 2*interval)
					}
				}
				blind = max(blind, sum)
			}
			var offered int64
			for _, r := range c.rates {
				offered += r * int64(steps)
			}
			bound := c.quota + blind
			t.Logf("offered %d, quota %d, admitted %d (excess %d), bound %d (hard cap N×quota %d)", offered, c.quota, admitted, admitted-c.quota, bound, int64(n)*c.quota)
			if admitted > bound || admitted > int64(n)*c.quota {
				t.Fatalf("admitted %d exceeds the bound %d", admitted, min(bound, int64(n)*c.quota))
			}
			if offered <= c.quota && admitted != offered {
				t.Fatalf("admitted %d of %d offered under quota %d: an approximate store must not deny below quota", admitted, offered, c.quota)
			}
		})
	}
}

// TestBurstBeforeSync is the worst case: every instance bursts before any
// sync, each seeing a global count of zero, so each admits its whole quota
// (N×quota in all) and no more.
func TestBurstBeforeSync(t *testing.T) {
	remote := newRemote(t)
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 50, Window: 10 * time.Second}
	now := base(l.Window)
	var admitted int64
	stores := make([]*approx.Store, 4)
	for i := range stores {
		stores[i] = newStore(t, remote)
		for range 2 * l.Quota {
			if decide(t, stores[i], "hot", now, 1, l).Allowed {
				admitted++
			}
		}
	}
	for _, s := range stores {
		syncNow(t, s)
	}
	if admitted != 4*l.Quota {
		t.Fatalf("admitted %d, want N×quota = %d", admitted, 4*l.Quota)
	}
	// Once synced, a fifth instance sees the whole count and admits nothing.
	s := newStore(t, remote)
	decide(t, s, "hot", now, 0, l)
	syncNow(t, s)
	if r := decide(t, s, "hot", now+1, 1, l); r.Allowed || r.Remaining != 0 {
		t.Fatalf("after sync: %+v, want a denial", r)
	}
}
