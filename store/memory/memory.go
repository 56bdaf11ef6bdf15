package memory

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate/floodgate"
)

// Overflow says what a new key gets when its shard of the table is full of
// live entries. The zero value is [OverflowShare].
type Overflow uint8

const (
	// OverflowShare decides every new key that finds no room against one
	// state per limit shared by all such keys (the overflow state): together
	// they get one quota, so spraying keys cannot buy more admissions. A key
	// that later finds room starts from a copy of the overflow state while
	// that is live, so it keeps the debt it ran up there. At most 4096
	// distinct limits have an overflow state at once; a new key whose limit
	// finds none of the 4096 expired is denied as with OverflowDeny.
	OverflowShare Overflow = iota
	// OverflowDeny denies every new key that finds no room, with RetryAfter
	// equal to the limit's Window. Keys already held are decided as usual.
	OverflowDeny
)

// String returns "share" or "deny".
func (o Overflow) String() string {
	if o == OverflowDeny {
		return "deny"
	}
	return "share"
}

// Defaults of [Options].
const (
	// DefaultCapacity is the default Options.Capacity: about 40 MB of
	// FixedWindow, TokenBucket or GCRA states when full.
	DefaultCapacity = 1 << 20
	// DefaultSweepInterval is the default Options.SweepInterval.
	DefaultSweepInterval = 10 * time.Second
	// DefaultClockResolution is the default Options.ClockResolution.
	DefaultClockResolution = time.Millisecond
	minShardCapacity       = 64
	maxOverflowLimits      = 4096
)

// Options configure a [Store]. The zero value is valid: every field has a
// default.
type Options struct {
	// Capacity is the most entries the store holds, one entry per key and
	// limit with state to remember. It holds under any number of distinct
	// keys; see [Overflow] for what new keys get when it is reached.
	// Default [DefaultCapacity] (1<<20).
	Capacity int
	// Shards is the number of independently locked parts of the table,
	// rounded up to a power of two. Each holds Capacity/Shards entries.
	// Default: 16 × GOMAXPROCS, at least 64 but at most Capacity/64 (so that
	// a shard holds at least about 64 entries), rounded up to a power of two.
	Shards int
	// Clock returns the current time in microseconds since the Unix epoch,
	// read under the shard's lock; it must never go backwards. Default: a
	// coarse clock updated every ClockResolution by a goroutine (see the
	// package documentation); [PreciseClock] reads the clock on every call.
	Clock func() int64
	// ClockResolution is the tick of the default coarse clock. Ignored when
	// Clock is set. Default [DefaultClockResolution] (1ms).
	ClockResolution time.Duration
	// SweepInterval is the time in which a janitor goroutine sweeps the
	// whole table once, one shard at a time, dropping expired entries.
	// Default [DefaultSweepInterval] (10s).
	SweepInterval time.Duration
	// Overflow is what new keys get when their shard is full of live
	// entries. Default [OverflowShare].
	Overflow Overflow
}

// Store is the in-memory store: a hash table split in shards, each under its
// own mutex, holding at most Options.Capacity entries. It is safe for
// concurrent use. Create it with [New] and stop its goroutines with
// [Store.Close]; the zero value is not usable.
type Store struct {
	seed     maphash.Seed
	shards   []shard
	shift    uint // shard index = key hash >> shift
	now      func() int64
	coarse   *coarseClock
	policy   Overflow
	capacity int
	interval time.Duration
	ov       overflow
	limits   [256]atomic.Pointer[limitInfo] // validated limits, by fingerprint
	closed   atomic.Bool
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

var _ floodgate.Store = (*Store)(nil)

// New returns a store configured by opts, with its janitor (and, without
// opts.Clock, its clock) goroutine running until [Store.Close].
func New(opts Options) *Store {
	capacity := opts.Capacity
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	n := opts.Shards
	if n <= 0 {
		n = max(64, 16*runtime.GOMAXPROCS(0))
		n = min(n, max(1, capacity/minShardCapacity))
	}
	n = 1 << bits.Len(uint(n-1)) // round up to a power of two
	s := &Store{
		seed:     maphash.MakeSeed(),
		shards:   make([]shard, n),
		shift:    uint(64 - bits.TrailingZeros(uint(n))),
		policy:   opts.Overflow,
		capacity: capacity,
		interval: opts.SweepInterval,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.interval <= 0 {
		s.interval = DefaultSweepInterval
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.cap = capacity / n
		if i < capacity%n {
			sh.cap++
		}
		sh.sw = make(map[uint64][3]int64)
		sh.ev = make(map[uint64]events)
	}
	s.ov.m = make(map[uint64]ovEntry)
	if opts.Clock == nil {
		res := opts.ClockResolution
		if res <= 0 {
			res = DefaultClockResolution
		}
		s.coarse = newCoarseClock(res)
		s.now = s.coarse.read
	} else {
		s.now = opts.Clock
	}
	go s.janitor()
	return s
}

// Decide decides ops in order; see [floodgate.Store]. An invalid op gets an
// Err wrapping [floodgate.ErrInvalid], and the others are still decided.
// After [Store.Close] every op gets [floodgate.ErrClosed].
func (s *Store) Decide(ctx context.Context, ops []floodgate.Op) error {
	if err := ctx.Err(); err != nil {
		for i := range ops {
			ops[i].Err = err
		}
		return err
	}
	if s.closed.Load() {
		for i := range ops {
			ops[i].Err = floodgate.ErrClosed
		}
		return floodgate.ErrClosed
	}
	var first error
	for i := range ops {
		op := &ops[i]
		op.Err = nil
		if err := s.decide(op); err != nil {
			op.Err = err
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// Reset forgets key's state under each of limits; see [floodgate.Resetter].
// Keys counted together in the overflow states (see [Options.Overflow])
// keep those shared counts. After [Store.Close] it returns
// [floodgate.ErrClosed].
func (s *Store) Reset(ctx context.Context, key string, limits []floodgate.Limit) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return floodgate.ErrClosed
	}
	if err := floodgate.ValidateKey(key); err != nil {
		return err
	}
	infos := make([]*limitInfo, len(limits))
	for j := range limits {
		if infos[j] = s.info(&limits[j]); infos[j] == nil {
			return fmt.Errorf("limits[%d]: %w", j, limits[j].Validate())
		}
	}
	h := maphash.String(s.seed, key)
	sh := &s.shards[h>>s.shift]
	sh.mu.Lock()
	for _, li := range infos {
		sh.remove(li.limit, entryID(h, li))
	}
	sh.mu.Unlock()
	return nil
}

// Close stops the store's goroutines and waits for them. Decisions after
// Close return [floodgate.ErrClosed]. Close is idempotent.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.done
		if s.coarse != nil {
			s.coarse.close()
		}
	})
	return nil
}

// Len returns the number of entries held (one per key and limit with state
// to remember), not counting the overflow states. It never exceeds
// Options.Capacity.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// janitor sweeps one shard per tick, the whole table once per interval, and
// the overflow states after each full round.
func (s *Store) janitor() {
	defer close(s.done)
	tick := max(s.interval/time.Duration(len(s.shards)), time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	next := 0
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.shards[next].sweep(s.now)
		next++
		if next == len(s.shards) {
			next = 0
			s.ov.sweep(s.now)
		}
	}
}

// clock returns the store's current time; the default coarse clock's common
// case is inlined.
func (s *Store) clock() int64 {
	if c := s.coarse; c != nil {
		if !c.parked.Load() && c.used.Load() {
			return c.now.Load()
		}
	}
	return s.now()
}

// limitInfo is a validated limit with what the decision path derives from
// it.
type limitInfo struct {
	limit floodgate.Limit
	prep  floodgate.Prepared
	fp    uint64 // fingerprint
	w     int64  // Window in µs
	// Token bucket: Quota/Window = qr/wr in lowest terms.
	qr, wr   int64
	capacity int64 // Limit.Capacity()
	interval int64 // GCRA emission interval, µs
}

// info returns l's limitInfo, or nil when l is invalid. Validated limits are
// cached by fingerprint; a hit compares the whole limit.
func (s *Store) info(lp *floodgate.Limit) *limitInfo {
	// A cheap slot index; the fingerprint is computed on a miss only.
	x := (uint64(lp.Quota)*k0 ^ uint64(lp.Window)*k1 ^ uint64(lp.Burst)*k2) + uint64(lp.Algorithm)
	slot := &s.limits[(x>>56)%uint64(len(s.limits))]
	if p := slot.Load(); p != nil && p.limit == *lp {
		return p
	}
	l := *lp
	fp := fingerprint(lp)
	if l.Validate() != nil {
		return nil
	}
	w := int64(l.Window / time.Microsecond)
	qr := refill(l)
	p := &limitInfo{
		limit:    l,
		prep:     l.Prepare(),
		fp:       fp,
		w:        w,
		qr:       qr,
		wr:       w / (l.Quota / qr),
		capacity: l.Capacity(),
		interval: (w + l.Quota - 1) / l.Quota,
	}
	slot.Store(p)
	return p
}
