// Package overlimit answers keys known to be over their limit without asking
// the store, until the moment their denial may end.
//
// # What is cached
//
// [Store] wraps a [floodgate.Store]. When the inner store denies an op whose
// result says nothing can pass before RetryAfter (Remaining 0), the wrapper
// remembers (key, limits, cost, result) and answers later ops for the same
// key with the same limits (compared field by field, so a rule change is a
// different entry) and a cost at least as high, locally, until the denial
// may end. Such an answer is a true denial: the store would have denied the
// op too.
//
// Why that holds: while a limit denies a cost, its state can only get worse
// from other decisions (more cost admitted), never better, except by the
// passing of time, and RetryAfter is the time the state needs to admit the
// cost if nothing else is admitted. That is checked algorithm by algorithm:
//
//   - fixed window: the count only grows within a window, and the denial
//     ends at the window's end (RetryAfter). Cached for any cost.
//   - token bucket and GCRA: tokens (or the theoretical arrival time) only
//     recover with time. For cost 1, Remaining stays 0 until RetryAfter. For
//     cost c > 1 a first unit may come back (Remaining 1) up to (c-1)×
//     ceil(Window/Quota) before RetryAfter, so the entry lives that much
//     less, and Remaining stays 0 as answered.
//   - sliding window log and sliding window counter: the count only falls
//     as events leave the window, and RetryAfter is the first moment the
//     cost fits. Cached for cost 1 only, where Remaining stays 0 until then
//     (for larger costs a unit may free earlier, at a time the result does
//     not tell).
//   - concurrency: not cached, since a release frees units at any moment.
//
// Peeks (cost 0), releases and ops that ask for per-limit results ([Op.Each])
// of several limits always go to the store.
//
// A reset ([floodgate.Reset]) is the one event that makes a state better
// before its time: the Store that resets a key forgets its entries of the
// key at once, and no entry made on the store's clock answers longer than
// [Options.MaxLifetime] (default 1s), so that a reset made through another
// instance, or a denial that was on its way back while the reset ran, holds
// here within that bound. Entries made by ops with an explicit Now are timed
// in those instants and are not bounded so.
//
// # Answers
//
// An answer from the cache is the stored result with ResetAfter and
// RetryAfter shrunk by the time elapsed since the store decided, and
// Remaining 0: exactly what the store would answer when the key's limits are
// not also charged by other ops with a smaller cost or another set of
// limits. When they are, the store's RetryAfter may be longer (its state got
// worse); the cached one is then a lower bound.
//
// # Clocks
//
// The store's clock decides; the local clock is used only to expire entries.
// Entry lifetimes are measured on the local monotonic clock from the moment
// the op was sent (before the store decided), so the local elapsed time never
// falls behind the store's; [Options.Margin] and a 0.1% allowance for clock
// rate differences are also taken off. An op with an explicit [floodgate.Op.Now]
// is matched only against entries made by ops with explicit instants, and
// their lifetimes are measured in those instants: no local clock at all.
//
// # Memory
//
// The cache is a fixed-size table ([Options.Capacity] entries in
// [Options.Shards] independently locked shards, 4-way set associative): a
// full set replaces the entry that expires soonest. Besides the table, an
// entry holds its key (shared with the caller's string) and a copy of its
// limits.
package overlimit

import (
	"context"
	"hash/maphash"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate/floodgate"
)

// Defaults of [Options].
const (
	// DefaultCapacity is the default Options.Capacity.
	DefaultCapacity = 1 << 16
	// DefaultShards is the default Options.Shards.
	DefaultShards = 64
	// DefaultMargin is the default Options.Margin.
	DefaultMargin = time.Millisecond
	// DefaultMaxLifetime is the default Options.MaxLifetime.
	DefaultMaxLifetime = time.Second
)

// ways is the number of entries one hash may use in its shard.
const ways = 4

// Options configure a [Store]. The zero value is valid: every field has a
// default.
type Options struct {
	// Capacity is the most entries the cache holds. Default
	// [DefaultCapacity] (65536).
	Capacity int
	// Shards is the number of independently locked parts of the table,
	// rounded up to a power of two. Default [DefaultShards] (64).
	Shards int
	// Margin is taken off every entry's lifetime on the local clock, for
	// anything that makes the local clock run fast against the store's.
	// Default [DefaultMargin] (1ms). Not applied to ops with an explicit Now.
	Margin time.Duration
	// MaxLifetime bounds how long an entry answers, however long its denial
	// lasts: a key reset in the store ([floodgate.Reset]) by another
	// instance is denied here at most that long after. A key denied for
	// longer costs one store call per MaxLifetime. Default
	// [DefaultMaxLifetime] (1s). Not applied to ops with an explicit Now,
	// whose instants say nothing of the time a reset takes to arrive.
	MaxLifetime time.Duration
}

type entry struct {
	hash     uint64
	key      string
	limits   []floodgate.Limit
	cost     int64
	explicit bool
	used     bool
	at       int64 // µs: when the store decided (or the op was sent)
	until    int64 // µs: the entry answers ops with at <= now < until
	res      floodgate.Result
}

type shard struct {
	mu   sync.Mutex
	ents []entry
	_    [40]byte // keep shards' locks on separate cache lines
}

// Store answers ops for keys known to be over their limit locally, and
// passes everything else to an inner store. It is safe for concurrent use.
// Create it with [New]; the zero value is not usable.
type Store struct {
	inner   floodgate.Store
	shards  []shard
	mask    uint64
	sets    uint64 // sets per shard
	seed    maphash.Seed
	margin  int64
	maxLife int64 // µs
	start   time.Time

	hits, calls atomic.Int64
}

var _ floodgate.Store = (*Store)(nil)

// New returns a Store caching denials of inner, which it owns: [Store.Close]
// closes it.
func New(inner floodgate.Store, opts Options) *Store {
	if opts.Capacity <= 0 {
		opts.Capacity = DefaultCapacity
	}
	if opts.Shards <= 0 {
		opts.Shards = DefaultShards
	}
	if opts.Margin <= 0 {
		opts.Margin = DefaultMargin
	}
	if opts.MaxLifetime <= 0 {
		opts.MaxLifetime = DefaultMaxLifetime
	}
	n := 1 << bits.Len(uint(opts.Shards-1))
	sets := max(1, opts.Capacity/n/ways)
	s := &Store{
		inner:   inner,
		shards:  make([]shard, n),
		mask:    uint64(n - 1),
		sets:    uint64(sets),
		seed:    maphash.MakeSeed(),
		margin:  opts.Margin.Microseconds(),
		maxLife: opts.MaxLifetime.Microseconds(),
		start:   time.Now(),
	}
	for i := range s.shards {
		s.shards[i].ents = make([]entry, sets*ways)
	}
	return s
}

// Stats reports the ops answered from the cache and the calls made to the
// inner store so far.
func (s *Store) Stats() (hits, calls int64) { return s.hits.Load(), s.calls.Load() }

// Len returns the number of entries held, live or expired; never more than
// the table's size.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for j := range sh.ents {
			if sh.ents[j].used {
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Purge forgets every entry, for instance after a key was reset in the
// store.
func (s *Store) Purge() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		clear(sh.ents)
		sh.mu.Unlock()
	}
}

// Close closes the inner store.
func (s *Store) Close() error { return s.inner.Close() }

// Reset forgets every cached denial of key, under any limits, then resets
// key in the inner store (see [floodgate.Reset]). Other instances' caches
// are not reached: each keeps a denial it holds until the end of the wait
// it was cached for.
func (s *Store) Reset(ctx context.Context, key string, limits []floodgate.Limit) error {
	s.forget(key)
	err := floodgate.Reset(ctx, s.inner, key, limits)
	// A denial cached while the reset was on its way is forgotten too; one
	// still on its way back is bounded by MaxLifetime.
	s.forget(key)
	return err
}

// forget drops every entry of key.
func (s *Store) forget(key string) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for j := range sh.ents {
			if sh.ents[j].used && sh.ents[j].key == key {
				sh.ents[j] = entry{}
			}
		}
		sh.mu.Unlock()
	}
}

// mono returns the local monotonic clock in µs.
func (s *Store) mono() int64 { return time.Since(s.start).Microseconds() }

// Decide implements [floodgate.Store]: ops answered from the cache get their
// result without a store call, the others go to the inner store in one call,
// in order, and its denials are remembered.
func (s *Store) Decide(ctx context.Context, ops []floodgate.Op) error {
	var small [8]bool
	hit := small[:0]
	if len(ops) > len(small) {
		hit = make([]bool, 0, len(ops))
	}
	now := s.mono()
	hits := 0
	for i := range ops {
		h := s.answer(&ops[i], now)
		if h {
			hits++
		}
		hit = append(hit, h)
	}
	if hits > 0 {
		s.hits.Add(int64(hits))
	}
	if hits == len(ops) {
		return nil
	}
	s.calls.Add(1)
	if hits == 0 {
		err := s.inner.Decide(ctx, ops)
		for i := range ops {
			s.remember(&ops[i], now)
		}
		return err
	}
	miss := make([]floodgate.Op, 0, len(ops)-hits)
	for i := range ops {
		if !hit[i] {
			miss = append(miss, ops[i])
		}
	}
	err := s.inner.Decide(ctx, miss)
	j := 0
	for i := range ops {
		if !hit[i] {
			ops[i].Result, ops[i].Err = miss[j].Result, miss[j].Err
			s.remember(&ops[i], now)
			j++
		}
	}
	if err != nil {
		return err
	}
	for i := range ops {
		if ops[i].Err != nil {
			return ops[i].Err
		}
	}
	return nil
}

// hash returns the hash of key and limits.
func (s *Store) hash(key string, limits []floodgate.Limit) uint64 {
	h := maphash.String(s.seed, key)
	for _, l := range limits {
		h ^= uint64(l.Algorithm)
		h *= 0x100000001b3
		h ^= uint64(l.Quota)
		h *= 0x100000001b3
		h ^= uint64(l.Window)
		h *= 0x100000001b3
		h ^= uint64(l.Burst)
		h *= 0x100000001b3
	}
	return h ^ h>>29
}

// set returns the shard and the entries of h's set.
func (s *Store) set(h uint64) (*shard, []entry) {
	sh := &s.shards[h&s.mask]
	i := (h >> 32) % s.sets * ways
	return sh, sh.ents[i : i+ways]
}

// answer answers op from the cache if it can, and reports whether it did.
func (s *Store) answer(op *floodgate.Op, mono int64) bool {
	if op.Release || op.Cost < 1 || op.Cost > floodgate.MaxCost || len(op.Limits) == 0 ||
		len(op.Key) == 0 || len(op.Key) > floodgate.MaxKeyLen ||
		(len(op.Each) == len(op.Limits) && len(op.Limits) > 1) {
		return false
	}
	explicit := op.Now != 0
	now := mono
	if explicit {
		now = op.Now
	}
	h := s.hash(op.Key, op.Limits)
	sh, set := s.set(h)
	sh.mu.Lock()
	for i := range set {
		e := &set[i]
		if !e.used || e.hash != h || e.explicit != explicit || e.key != op.Key ||
			op.Cost < e.cost || now < e.at || now >= e.until || !slices.Equal(e.limits, op.Limits) {
			continue
		}
		r := e.res
		elapsed := time.Duration(now-e.at) * time.Microsecond
		sh.mu.Unlock()
		r.RetryAfter -= elapsed
		r.ResetAfter = max(0, r.ResetAfter-elapsed)
		op.Result, op.Err = r, nil
		if len(op.Each) == 1 {
			op.Each[0] = r
		}
		return true
	}
	sh.mu.Unlock()
	return false
}

// lifetime returns how long, in µs from the decision, op's denial r stays
// true with Remaining 0, or 0 when it must not be cached.
func lifetime(op *floodgate.Op, r floodgate.Result) int64 {
	if r.Allowed || r.Remaining != 0 || r.RetryAfter <= 0 || r.RetryAfter == floodgate.Never ||
		op.Release || op.Cost < 1 {
		return 0
	}
	life := r.RetryAfter.Microseconds()
	l := r.Limit
	switch l.Algorithm {
	case floodgate.FixedWindow:
	case floodgate.TokenBucket, floodgate.GCRA:
		if op.Cost > 1 {
			// A first unit may come back (c-1) unit intervals before the
			// cost c fits.
			unit := (l.Window.Microseconds() + l.Quota - 1) / l.Quota
			if op.Cost-1 > math.MaxInt64/unit {
				return 0
			}
			life -= (op.Cost - 1) * unit
		}
	case floodgate.SlidingWindowLog, floodgate.SlidingWindow:
		if op.Cost != 1 {
			return 0
		}
	default:
		return 0
	}
	return max(life, 0)
}

// remember caches op's result if it is a denial that stays true for a while.
func (s *Store) remember(op *floodgate.Op, sent int64) {
	if op.Err != nil {
		return
	}
	life := lifetime(op, op.Result)
	if life <= 0 {
		return
	}
	explicit := op.Now != 0
	at := sent
	if explicit {
		at = op.Now
	} else {
		life = min(life-s.margin-life>>10, s.maxLife)
		if life <= 0 {
			return
		}
	}
	h := s.hash(op.Key, op.Limits)
	sh, set := s.set(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	victim := -1
	for i := range set {
		e := &set[i]
		if e.used && e.hash == h && e.explicit == explicit && e.key == op.Key && slices.Equal(e.limits, op.Limits) {
			if e.cost < op.Cost && e.until > at {
				// The entry answers more costs already.
				return
			}
			victim = i
			break
		}
		switch {
		case victim < 0:
			victim = i
		case !set[victim].used:
		case !e.used || e.until < set[victim].until:
			victim = i
		}
	}
	e := &set[victim]
	lim := e.limits[:0]
	if cap(lim) < len(op.Limits) {
		lim = make([]floodgate.Limit, 0, len(op.Limits))
	}
	*e = entry{
		hash: h, key: op.Key, limits: append(lim, op.Limits...), cost: op.Cost,
		explicit: explicit, used: true, at: at, until: at + life, res: op.Result,
	}
	e.res.Remaining = 0
}
