package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
)

// SeedEnv names the environment variable that fixes the seed of
// [RunProperties], to replay a failure. Unset, the seed is drawn at random
// and logged.
const SeedEnv = "FLOODGATE_PROPERTY_SEED"

// RunProperties feeds random event sequences to the stores newStore returns
// and to brute-force reference models, and compares every result field by
// field (Allowed, Limit, Remaining, ResetAfter, RetryAfter, and each limit's
// result for operations on several limits). n is the number of events per
// algorithm; each of the six algorithms, and pairs of limits on one key, get
// n events, split into sequences of a few hundred on fresh keys with random
// limits. Instants cluster around window edges, emission intervals, expiry
// instants and the RetryAfter and ResetAfter the store just returned; costs
// range over 0 to capacity+1; consecutive events are sometimes sent as one
// batch.
//
// After each sequence the admitted events are checked against each
// algorithm's guarantee: every aligned window (fixed window) and every
// interval of length Window (sliding log) holds at most Quota, every denial
// of the sliding log would have overflowed its window, and the token bucket
// and GCRA never admit more than their burst plus their rate over any
// interval.
//
// On a failure the seed is reported; set [SeedEnv] to it to replay. As in
// [Run], newStore is called once per sequence group and the store is closed
// when it ends.
func RunProperties(t *testing.T, newStore func(t *testing.T) floodgate.Store, n int) {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv(SeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", SeedEnv, s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with %s=%d)", seed, SeedEnv, seed)
	groups := []struct {
		name  string
		algos []floodgate.Algorithm
	}{
		{"FixedWindow", []floodgate.Algorithm{floodgate.FixedWindow}},
		{"SlidingWindowLog", []floodgate.Algorithm{floodgate.SlidingWindowLog}},
		{"SlidingWindow", []floodgate.Algorithm{floodgate.SlidingWindow}},
		{"TokenBucket", []floodgate.Algorithm{floodgate.TokenBucket}},
		{"GCRA", []floodgate.Algorithm{floodgate.GCRA}},
		{"Concurrency", []floodgate.Algorithm{floodgate.Concurrency}},
		{"SeveralLimits", nil},
	}
	for gi, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			s := newStore(t)
			if s == nil {
				t.Fatal("newStore returned nil")
			}
			t.Cleanup(func() { s.Close() })
			rng := rand.New(rand.NewPCG(seed, uint64(gi)))
			const perSeq = 250
			for done, seq := 0, 0; done < n; seq++ {
				k := min(perSeq, n-done)
				algos := g.algos
				if algos == nil {
					a := floodgate.Algorithms[rng.IntN(len(floodgate.Algorithms))]
					b := floodgate.Algorithms[rng.IntN(len(floodgate.Algorithms))]
					algos = []floodgate.Algorithm{a, b}
				}
				p := newProperty(t, s, rng, algos)
				if !p.run(k) {
					t.Fatalf("seed %d (replay with %s=%d), sequence %d: see above", seed, SeedEnv, seed, seq)
				}
				done += k
			}
		})
	}
}

// property is one random sequence on one key.
type property struct {
	t      *testing.T
	s      floodgate.Store
	rng    *rand.Rand
	key    string
	limits []floodgate.Limit
	models []model
	base   int64
	now    int64

	// hints are instants worth testing next: edges the store reported.
	hints []int64
	// log of the sequence, for failure reports.
	history []string
	// admitted events of each limit, and the denials of cost <= quota with
	// the number of events admitted before each, for the final checks.
	admitted [][]event
	denied   [][]denial
}

type denial struct {
	at, cost int64
	before   int
}

func newProperty(t *testing.T, s floodgate.Store, rng *rand.Rand, algos []floodgate.Algorithm) *property {
	p := &property{t: t, s: s, rng: rng}
	for _, a := range algos {
		l := randomLimit(rng, a)
		if err := l.Validate(); err != nil {
			t.Fatalf("random limit: %v", err)
		}
		p.limits = append(p.limits, l)
		p.models = append(p.models, newModel(l))
	}
	p.admitted = make([][]event, len(algos))
	p.denied = make([][]denial, len(algos))
	p.key = "storetest:property:" + strconv.FormatUint(rng.Uint64(), 36)
	// A day boundary, or a random instant in 2024-2025.
	p.base = dayBase
	if rng.IntN(2) == 0 {
		p.base += rng.Int64N(2 * 365 * 86_400_000_000)
	}
	p.now = p.base
	return p
}

var propertyWindows = []time.Duration{
	time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond, 250 * time.Millisecond,
	time.Second, 1001 * time.Millisecond, 1500 * time.Millisecond, 7 * time.Second, time.Minute,
}

func randomLimit(rng *rand.Rand, a floodgate.Algorithm) floodgate.Limit {
	l := floodgate.Limit{Algorithm: a, Window: propertyWindows[rng.IntN(len(propertyWindows))]}
	switch rng.IntN(4) {
	case 0:
		l.Quota = 1 + rng.Int64N(3)
	case 1, 2:
		l.Quota = 1 + rng.Int64N(12)
	default:
		l.Quota = 1 + rng.Int64N(40)
	}
	if (a == floodgate.TokenBucket || a == floodgate.GCRA) && rng.IntN(2) == 0 {
		l.Burst = 1 + rng.Int64N(2*l.Quota+2)
	}
	return l
}

// op is one generated operation.
type propOp struct {
	now     int64
	cost    int64
	lease   string
	release bool
}

func (o propOp) String(base int64) string {
	s := fmt.Sprintf("+%dµs cost %d", o.now-base, o.cost)
	if o.lease != "" {
		s += fmt.Sprintf(" lease %q", o.lease)
	}
	if o.release {
		s += " release"
	}
	return s
}

// next draws the next operation.
func (p *property) next() propOp {
	rng := p.rng
	l := p.limits[rng.IntN(len(p.limits))]
	w := l.Window.Microseconds()
	now := p.now
	switch x := rng.IntN(100); {
	case x < 20: // same instant
	case x < 40: // a little later
		now += rng.Int64N(max(w/8, 2))
	case x < 55: // at a window edge, or a microsecond either side
		edge := now - now%w + w*(1+rng.Int64N(2))
		now = max(now, edge+rng.Int64N(3)-1)
		if rng.IntN(4) == 0 {
			now = max(p.now, edge-1000) // a millisecond early: the counter's steps
		}
	case x < 75: // an instant the store named, or next to it
		if len(p.hints) > 0 {
			h := p.hints[rng.IntN(len(p.hints))]
			now = max(now, h+rng.Int64N(3)-1)
		}
	case x < 85: // whole emission intervals later
		i := (w + l.Quota - 1) / l.Quota
		now += i*(1+rng.Int64N(3)) + rng.Int64N(3) - 1
	case x < 95:
		now += rng.Int64N(2 * w)
	default:
		now += w * (3 + rng.Int64N(8))
	}
	p.now = max(now, p.now)

	o := propOp{now: p.now}
	capacity := l.Capacity()
	switch x := rng.IntN(10); {
	case x < 1:
		o.cost = 0
	case x < 5:
		o.cost = 1
	default:
		o.cost = rng.Int64N(capacity + 2)
	}
	for _, l := range p.limits {
		if l.Algorithm == floodgate.Concurrency {
			o.lease = [...]string{"", "a", "b", "c", "d"}[rng.IntN(5)]
			if o.lease != "" && rng.IntN(5) == 0 {
				o.release, o.cost = true, 0
			}
		}
	}
	return o
}

// run generates k operations, sends them in batches of 1 to 3, and checks
// each result against the models. It reports whether all matched.
func (p *property) run(k int) bool {
	for k > 0 {
		b := min(k, 1+p.rng.IntN(3))
		k -= b
		pops := make([]propOp, b)
		ops := make([]floodgate.Op, b)
		for i := range ops {
			pops[i] = p.next()
			ops[i] = floodgate.Op{
				Key: p.key, Limits: p.limits, Cost: pops[i].cost, Lease: pops[i].lease,
				Release: pops[i].release, Now: pops[i].now,
			}
			if len(p.limits) > 1 || p.rng.IntN(2) == 0 {
				ops[i].Each = make([]floodgate.Result, len(p.limits))
			}
		}
		if err := p.s.Decide(context.Background(), ops); err != nil {
			p.fail("Decide: %v", err)
			return false
		}
		p.hints = p.hints[:0]
		for i, op := range ops {
			p.history = append(p.history, pops[i].String(p.base))
			if op.Err != nil {
				p.fail("op %s: error %v", pops[i].String(p.base), op.Err)
				return false
			}
			want, each, ok := p.decide(pops[i])
			if !ok {
				return false
			}
			if op.Result != want {
				p.fail("op %s:\n got %s\nwant %s", pops[i].String(p.base), FormatResult(op.Result), FormatResult(want))
				return false
			}
			if op.Each != nil {
				for j := range each {
					if op.Each[j] != each[j] {
						p.fail("op %s, limit %d:\n got %s\nwant %s", pops[i].String(p.base), j, FormatResult(op.Each[j]), FormatResult(each[j]))
						return false
					}
				}
			}
			for _, d := range []time.Duration{want.RetryAfter, want.ResetAfter} {
				if d > 0 && d != floodgate.Never {
					p.hints = append(p.hints, op.Now+d.Microseconds())
				}
			}
		}
	}
	return p.checkInvariants()
}

func (p *property) fail(format string, args ...any) {
	p.t.Helper()
	hist := p.history
	if len(hist) > 12 {
		hist = hist[len(hist)-12:]
	}
	p.t.Errorf("key %s, limits %v, base %d:\n%s\nlast operations: %s", p.key, p.limits, p.base,
		fmt.Sprintf(format, args...), strings.Join(hist, "; "))
}

// decide applies o to the models, and returns the combined result and each
// limit's, as the documented semantics define them.
func (p *property) decide(o propOp) (floodgate.Result, []floodgate.Result, bool) {
	each := make([]floodgate.Result, len(p.models))
	for _, m := range p.models {
		m.prune(o.now)
	}
	if o.release {
		held := false
		for i, m := range p.models {
			if p.limits[i].Algorithm == floodgate.Concurrency && m.release(o.now, o.lease) {
				held = true
			}
			r, ok := p.current(i, o.now)
			if !ok {
				return floodgate.Result{}, nil, false
			}
			r.Allowed = true
			each[i] = r
		}
		acc := combineResults(each)
		acc.Allowed = held
		return acc, each, true
	}
	c := max(o.cost, 1)
	all := true
	for i, m := range p.models {
		l := p.limits[i]
		r := floodgate.Result{Limit: l, Allowed: m.admits(o.now, c, o.lease)}
		if !r.Allowed {
			all = false
			if c > l.Capacity() {
				r.RetryAfter = floodgate.Never
			} else {
				d, ok := p.search(i, 1, func(d int64) bool { return m.admits(o.now+d, c, o.lease) })
				if !ok {
					return floodgate.Result{}, nil, false
				}
				r.RetryAfter = time.Duration(d) * time.Microsecond
			}
			if c <= l.Quota && o.cost > 0 {
				p.denied[i] = append(p.denied[i], denial{o.now, c, len(p.admitted[i])})
			}
		}
		each[i] = r
	}
	commit := all && o.cost > 0
	for i, m := range p.models {
		if commit {
			m.commit(o.now, o.cost, o.lease)
			p.admitted[i] = append(p.admitted[i], event{o.now, o.cost})
		}
		cur, ok := p.current(i, o.now)
		if !ok {
			return floodgate.Result{}, nil, false
		}
		each[i].Remaining, each[i].ResetAfter = cur.Remaining, cur.ResetAfter
	}
	return combineResults(each), each, true
}

// current returns limit i's Remaining and ResetAfter at now.
func (p *property) current(i int, now int64) (floodgate.Result, bool) {
	m := p.models[i]
	d, ok := p.search(i, 0, func(d int64) bool { return m.full(now + d) })
	return floodgate.Result{
		Limit:      p.limits[i],
		Remaining:  m.remaining(now),
		ResetAfter: time.Duration(d) * time.Microsecond,
	}, ok
}

// search returns the least d >= lo for which f holds, f being monotone.
func (p *property) search(i int, lo int64, f func(int64) bool) (int64, bool) {
	hi := p.models[i].horizon()
	if !f(hi) {
		p.fail("reference model of %v: nothing changes within its horizon of %dµs", p.limits[i], hi)
		return 0, false
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if f(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo, true
}

// combineResults folds each limit's result as [floodgate.Result] documents:
// of the denying limits, the one with the longest RetryAfter (the first on a
// tie); when all allow, the one with the fewest Remaining, then the longest
// ResetAfter, then the first.
func combineResults(each []floodgate.Result) floodgate.Result {
	best := -1
	for i, r := range each {
		if !r.Allowed && (best < 0 || r.RetryAfter > each[best].RetryAfter) {
			best = i
		}
	}
	if best >= 0 {
		return each[best]
	}
	best = 0
	for i, r := range each {
		b := each[best]
		if r.Remaining < b.Remaining || (r.Remaining == b.Remaining && r.ResetAfter > b.ResetAfter) {
			best = i
		}
	}
	return each[best]
}

// checkInvariants checks the admitted events against each algorithm's
// guarantee.
func (p *property) checkInvariants() bool {
	for i, l := range p.limits {
		ev := p.admitted[i]
		w := l.Window.Microseconds()
		switch l.Algorithm {
		case floodgate.FixedWindow:
			sums := map[int64]int64{}
			for _, e := range ev {
				sums[e.at-e.at%w] += e.cost
			}
			for start, s := range sums {
				if s > l.Quota {
					p.fail("%v admitted %d in the window starting at +%dµs", l, s, start-p.base)
					return false
				}
			}
		case floodgate.SlidingWindowLog:
			// The busiest interval of length W ends at an admitted event.
			for j, e := range ev {
				if s := sumIn(ev[:j+1], e.at-w+1, e.at+1); s > l.Quota {
					p.fail("%v admitted %d in (+%dµs, +%dµs]", l, s, e.at-w-p.base, e.at-p.base)
					return false
				}
			}
			for _, d := range p.denied[i] {
				if s := sumIn(ev[:d.before], d.at-w+1, d.at+1); s+d.cost <= l.Quota {
					p.fail("%v denied cost %d at +%dµs with only %d in its window", l, d.cost, d.at-p.base, s)
					return false
				}
			}
		case floodgate.TokenBucket, floodgate.GCRA:
			// Over [a, b]: at most capacity + (b-a)×rate, where the GCRA
			// rate is one per emission interval.
			interval := (w + l.Quota - 1) / l.Quota
			for a := range ev {
				var s int64
				for b := a; b < len(ev); b++ {
					s += ev[b].cost
					span := ev[b].at - ev[a].at
					bound := l.Capacity()*w + span*l.Quota // × w, for the bucket
					if l.Algorithm == floodgate.GCRA {
						bound = (l.Capacity() + span/interval) * w
					}
					if s*w > bound {
						p.fail("%v admitted %d in [+%dµs, +%dµs]", l, s, ev[a].at-p.base, ev[b].at-p.base)
						return false
					}
				}
			}
		}
	}
	return true
}
