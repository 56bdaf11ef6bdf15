package storetest

import (
	"math/big"
	"slices"

	"github.com/floodgate/floodgate"
)

// The reference models below decide from first principles, independently of
// the core's arithmetic: the windowed algorithms recount all admitted events,
// the token bucket keeps its level as an exact rational, GCRA follows the
// virtual-scheduling definition cell by cell, and the concurrency model keeps
// a set of leases. Results are derived by search, not by inverting formulas:
// RetryAfter is the first instant at which the same request would pass,
// ResetAfter the first instant at which the limit is back to full capacity,
// both found by binary search over microseconds (every model's admission and
// fullness are monotone in time when nothing more is admitted).
//
// The models assume instants that never decrease.

// model is one limit's reference model on one key.
type model interface {
	// admits reports whether a request of cost c >= 1 (for lease) would be
	// admitted at now.
	admits(now, c int64, lease string) bool
	// commit admits a request of cost c at now.
	commit(now, c int64, lease string)
	// release frees lease and reports whether it was held at now.
	release(now int64, lease string) bool
	// remaining is the cost that could be admitted at now.
	remaining(now int64) int64
	// full reports whether the limit is at full capacity at now.
	full(now int64) bool
	// prune forgets what can no longer matter at now or later.
	prune(now int64)
	// horizon bounds, in µs, every RetryAfter and ResetAfter.
	horizon() int64
	clone() model
}

func newModel(l floodgate.Limit) model {
	w := l.Window.Microseconds()
	switch l.Algorithm {
	case floodgate.FixedWindow:
		return &fixedModel{q: l.Quota, w: w}
	case floodgate.SlidingWindow:
		return &counterModel{q: l.Quota, w: w}
	case floodgate.SlidingWindowLog:
		return &logModel{q: l.Quota, w: w}
	case floodgate.TokenBucket:
		c := l.Capacity()
		return &bucketModel{
			c: c, w: w, q: l.Quota,
			level: new(big.Rat).SetInt64(c),
			rate:  big.NewRat(l.Quota, w),
		}
	case floodgate.GCRA:
		i := (w + l.Quota - 1) / l.Quota // the emission interval, rounded up
		return &gcraModel{i: i, l: (l.Capacity() - 1) * i, c: l.Capacity()}
	case floodgate.Concurrency:
		return &leaseModel{q: l.Quota, w: w}
	}
	panic("storetest: no model for " + l.Algorithm.String())
}

// event is one admitted request.
type event struct{ at, cost int64 }

// sumIn returns the cost of events with lo <= at < hi.
func sumIn(ev []event, lo, hi int64) int64 {
	var s int64
	for _, e := range ev {
		if e.at >= lo && e.at < hi {
			s += e.cost
		}
	}
	return s
}

func dropBefore(ev []event, t int64) []event {
	i := 0
	for i < len(ev) && ev[i].at < t {
		i++
	}
	return ev[i:]
}

// fixedModel recounts the admitted events of the aligned window.
type fixedModel struct {
	q, w int64
	ev   []event
}

func (m *fixedModel) start(now int64) int64 { return now - now%m.w }
func (m *fixedModel) used(now int64) int64 {
	s := m.start(now)
	return sumIn(m.ev, s, s+m.w)
}
func (m *fixedModel) admits(now, c int64, _ string) bool { return m.used(now)+c <= m.q }
func (m *fixedModel) commit(now, c int64, _ string)      { m.ev = append(m.ev, event{now, c}) }
func (m *fixedModel) release(int64, string) bool         { return false }
func (m *fixedModel) remaining(now int64) int64          { return m.q - m.used(now) }
func (m *fixedModel) full(now int64) bool                { return m.used(now) == 0 }
func (m *fixedModel) prune(now int64)                    { m.ev = dropBefore(m.ev, m.start(now)) }
func (m *fixedModel) horizon() int64                     { return 2 * m.w }
func (m *fixedModel) clone() model                       { c := *m; c.ev = slices.Clone(m.ev); return &c }

// counterModel recounts the current and previous aligned windows and weighs
// the previous one by the whole milliseconds of its overlap, rounded up.
type counterModel struct {
	q, w int64
	ev   []event
}

func (m *counterModel) estimate(now int64) int64 {
	start := now - now%m.w
	cur := sumIn(m.ev, start, start+m.w)
	prev := sumIn(m.ev, start-m.w, start)
	wms := m.w / 1000
	ems := (now - start) / 1000
	return cur + (prev*(wms-ems)+wms-1)/wms
}
func (m *counterModel) admits(now, c int64, _ string) bool { return m.estimate(now)+c <= m.q }
func (m *counterModel) commit(now, c int64, _ string)      { m.ev = append(m.ev, event{now, c}) }
func (m *counterModel) release(int64, string) bool         { return false }
func (m *counterModel) remaining(now int64) int64          { return max(0, m.q-m.estimate(now)) }
func (m *counterModel) full(now int64) bool                { return m.estimate(now) == 0 }
func (m *counterModel) prune(now int64)                    { m.ev = dropBefore(m.ev, now-now%m.w-m.w) }
func (m *counterModel) horizon() int64                     { return 3 * m.w }
func (m *counterModel) clone() model                       { c := *m; c.ev = slices.Clone(m.ev); return &c }

// logModel sums the admitted events of (now-W, now].
type logModel struct {
	q, w int64
	ev   []event
}

func (m *logModel) used(now int64) int64               { return sumIn(m.ev, now-m.w+1, now+1) }
func (m *logModel) admits(now, c int64, _ string) bool { return m.used(now)+c <= m.q }
func (m *logModel) commit(now, c int64, _ string)      { m.ev = append(m.ev, event{now, c}) }
func (m *logModel) release(int64, string) bool         { return false }
func (m *logModel) remaining(now int64) int64          { return m.q - m.used(now) }
func (m *logModel) full(now int64) bool                { return m.used(now) == 0 }
func (m *logModel) prune(now int64)                    { m.ev = dropBefore(m.ev, now-m.w+1) }
func (m *logModel) horizon() int64                     { return 2 * m.w }
func (m *logModel) clone() model                       { c := *m; c.ev = slices.Clone(m.ev); return &c }

// bucketModel keeps the bucket's level as an exact rational: it refills
// continuously at Quota/Window tokens per µs, up to the capacity.
type bucketModel struct {
	c, w, q int64
	level   *big.Rat // tokens at time last
	last    int64
	rate    *big.Rat // tokens per µs
}

// levelAt returns the level at now (>= last).
func (m *bucketModel) levelAt(now int64) *big.Rat {
	lv := new(big.Rat).Set(m.level)
	if now > m.last {
		add := new(big.Rat).Mul(m.rate, new(big.Rat).SetInt64(now-m.last))
		lv.Add(lv, add)
		if capacity := new(big.Rat).SetInt64(m.c); lv.Cmp(capacity) > 0 {
			lv = capacity
		}
	}
	return lv
}
func (m *bucketModel) admits(now, c int64, _ string) bool {
	return m.levelAt(now).Cmp(new(big.Rat).SetInt64(c)) >= 0
}
func (m *bucketModel) commit(now, c int64, _ string) {
	lv := m.levelAt(now)
	m.level = lv.Sub(lv, new(big.Rat).SetInt64(c))
	m.last = max(m.last, now)
}
func (m *bucketModel) release(int64, string) bool { return false }
func (m *bucketModel) remaining(now int64) int64 {
	lv := m.levelAt(now)
	return new(big.Int).Quo(lv.Num(), lv.Denom()).Int64() // the level is never negative
}
func (m *bucketModel) full(now int64) bool {
	return m.levelAt(now).Cmp(new(big.Rat).SetInt64(m.c)) == 0
}
func (m *bucketModel) prune(int64)    {}
func (m *bucketModel) horizon() int64 { return (m.c+1)*m.w/m.q + m.w + 2 }
func (m *bucketModel) clone() model {
	c := *m
	c.level = new(big.Rat).Set(m.level)
	return &c
}

// gcraModel is the virtual-scheduling form of GCRA (ITU-T I.371): a cell
// arriving at ta conforms when TAT <= ta + L, and then TAT = max(TAT, ta) + I.
// With burst B, L = (B-1)×I, so B cells conform back to back from rest. A
// request of cost c is c cells that must all conform.
type gcraModel struct {
	i, l, c int64
	tat     int64
}

// cells returns how many cells in a row would conform at now.
func (m *gcraModel) cells(now int64) int64 {
	tat := max(m.tat, now)
	var n int64
	for tat <= now+m.l && n <= m.c {
		n++
		tat += m.i
	}
	return n
}
func (m *gcraModel) admits(now, c int64, _ string) bool { return m.cells(now) >= c }
func (m *gcraModel) commit(now, c int64, _ string) {
	for range c {
		m.tat = max(m.tat, now) + m.i
	}
}
func (m *gcraModel) release(int64, string) bool { return false }
func (m *gcraModel) remaining(now int64) int64  { return m.cells(now) }
func (m *gcraModel) full(now int64) bool        { return m.tat <= now }
func (m *gcraModel) prune(int64)                {}
func (m *gcraModel) horizon() int64             { return (m.c+2)*m.i + 2 }
func (m *gcraModel) clone() model               { c := *m; return &c }

// leaseModel is a set of leases, each live until its expiry.
type leaseModel struct {
	q, w   int64
	leases []lease
}

type lease struct {
	id          string
	expiry, qty int64
}

func (m *leaseModel) held(now int64) int64 {
	var n int64
	for _, l := range m.leases {
		if l.expiry > now {
			n += l.qty
		}
	}
	return n
}

func (m *leaseModel) live(now int64, id string) int {
	for i, l := range m.leases {
		if id != "" && l.id == id && l.expiry > now {
			return i
		}
	}
	return -1
}

func (m *leaseModel) admits(now, c int64, id string) bool {
	return m.live(now, id) >= 0 || m.held(now)+c <= m.q
}

func (m *leaseModel) commit(now, c int64, id string) {
	if i := m.live(now, id); i >= 0 {
		m.leases[i].expiry = now + m.w // a renewal keeps its units
		return
	}
	m.leases = slices.DeleteFunc(m.leases, func(l lease) bool { return id != "" && l.id == id })
	m.leases = append(m.leases, lease{id: id, expiry: now + m.w, qty: c})
}

func (m *leaseModel) release(now int64, id string) bool {
	held := m.live(now, id) >= 0
	if id != "" {
		m.leases = slices.DeleteFunc(m.leases, func(l lease) bool { return l.id == id })
	}
	return held
}
func (m *leaseModel) remaining(now int64) int64 { return m.q - m.held(now) }
func (m *leaseModel) full(now int64) bool       { return m.held(now) == 0 }
func (m *leaseModel) prune(now int64) {
	m.leases = slices.DeleteFunc(m.leases, func(l lease) bool { return l.expiry <= now })
}
func (m *leaseModel) horizon() int64 { return 2 * m.w }
func (m *leaseModel) clone() model {
	c := *m
	c.leases = slices.Clone(m.leases)
	return &c
}
