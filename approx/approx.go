package approx

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate/floodgate"
)

// Defaults of [Options].
const (
	// DefaultSyncInterval is how often a store syncs its counters.
	DefaultSyncInterval = 100 * time.Millisecond
	// DefaultSyncTimeout bounds one sync's round trip.
	DefaultSyncTimeout = time.Second
)

// Options configure a [Store]. The zero value gives the defaults.
type Options struct {
	// SyncInterval is the time between the starts of two syncs. Default
	// [DefaultSyncInterval] (100ms). A negative value starts no background
	// sync: the owner calls [Store.Sync] itself (tests do, with explicit
	// instants).
	SyncInterval time.Duration
	// SyncTimeout bounds each sync, including the final flush of
	// [Store.Close]. Default [DefaultSyncTimeout] (1s).
	SyncTimeout time.Duration
	// Logger receives a warning at the first failed sync of a run of
	// failures, an info record when syncs succeed again, and the sync
	// statistics at Close. Default: discarded.
	Logger *slog.Logger
	// Clock is the local clock. Default time.Now. The store adds to it the
	// offset to the remote's clock learned at each sync.
	Clock func() time.Time
	// MaxKeys bounds the local table: the most (key, limit) entries it
	// holds, about 250 bytes each. A key that finds the table full shares a
	// local entry per limit with the other keys that found it full (see
	// the package documentation). Default [DefaultMaxKeys] (1<<20).
	MaxKeys int
}

// DefaultMaxKeys is the default Options.MaxKeys.
const DefaultMaxKeys = 1 << 20

// maxSharedLimits bounds the shared entries of one shard of the table: one
// per limit of the keys that found the table full. An op that would need
// one more fails with [ErrTableFull].
const maxSharedLimits = 1024

// ErrTableFull is the error of an op whose key found the local table full
// and whose limit found no room for a shared entry either: the engine's
// failure policy decides it.
var ErrTableFull = errors.New("approx: local table full")

// shardCount is the number of independently locked shards of the local
// table (a power of two).
const shardCount = 64

// Store decides fixed_window and sliding_window limits from local counts
// and periodically synced global totals: see the package documentation for
// the model and its over-admission bound. It implements [floodgate.Store].
// Create it with [New]; the zero value is not usable. It is safe for
// concurrent use. A background goroutine, stopped by [Store.Close], syncs
// every [Options.SyncInterval].
type Store struct {
	remote   Remote
	interval time.Duration
	timeout  time.Duration
	logger   *slog.Logger
	clock    func() time.Time
	seed     maphash.Seed
	perShard int // most entries of a shard's m
	shards   [shardCount]shard

	offset    atomic.Int64 // remote clock minus local clock, µs
	clockSync atomic.Int64 // local µs of the last successful sync; 0 before any
	closed    atomic.Bool
	syncMu    sync.Mutex // one sync at a time
	failing   bool       // under syncMu: the last sync failed

	syncs, syncErrors, counters atomic.Uint64
	maxSync                     atomic.Int64 // longest sync, ns
	lastErr                     atomic.Pointer[error]

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

var _ floodgate.Store = (*Store)(nil)

type shard struct {
	mu sync.Mutex
	m  map[entryKey]*entry
	// shared holds, per limit, the entry of the keys that found the table
	// full: counted locally only, never synced.
	shared map[floodgate.Limit]*entry
	_      [32]byte // keep shards' locks on separate cache lines
}

type entryKey struct {
	key   string
	limit floodgate.Limit
}

// entry is one key under one limit: the current window's counts and the
// previous window's (which the sliding window counter weighs, and whose
// pending cost a fixed window still pushes).
type entry struct {
	cur, prev window
	touched   bool // decided since the last sync
}

// window is one aligned window's counts. The store's estimate of the global
// count is global + sending + pending.
type window struct {
	start   int64 // window start, µs by the remote's clock; noWindow when unset
	global  int64 // the remote's total at the last sync (this instance's pushed cost included)
	sending int64 // cost pushed by the sync in flight
	pending int64 // cost admitted since, not pushed yet
	synced  bool  // a sync has read the remote's total
}

const noWindow = -1 << 63

func (w *window) count() int64 { return w.global + w.sending + w.pending }

// New returns a store counting locally and syncing with remote (for
// instance a store/redis Store). It starts the background sync unless
// opts.SyncInterval is negative. It does not contact the remote: decisions
// start from zero global counts and the local clock until the first sync.
func New(remote Remote, opts Options) (*Store, error) {
	if remote == nil {
		return nil, errors.New("approx: no remote")
	}
	if opts.SyncInterval == 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultMaxKeys
	}
	s := &Store{
		perShard: (opts.MaxKeys + shardCount - 1) / shardCount,
		remote:   remote,
		interval: opts.SyncInterval,
		timeout:  opts.SyncTimeout,
		logger:   opts.Logger,
		clock:    opts.Clock,
		seed:     maphash.MakeSeed(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i].m = make(map[entryKey]*entry)
		s.shards[i].shared = make(map[floodgate.Limit]*entry)
	}
	if s.interval > 0 {
		go s.loop()
	} else {
		close(s.done)
	}
	return s, nil
}

// Supports reports whether approximate counting can decide limits of
// algorithm a: FixedWindow and SlidingWindow, whose state is a sum of
// costs per aligned window, so that instances' counts add up. The other
// algorithms' states do not add (see docs/approximate.md).
func Supports(a floodgate.Algorithm) bool {
	return a == floodgate.FixedWindow || a == floodgate.SlidingWindow
}

// check validates op for approximate counting, with an error wrapping
// [floodgate.ErrInvalid].
func check(op *floodgate.Op) error {
	if err := op.Check(); err != nil {
		return err
	}
	if op.Release {
		return fmt.Errorf("approx: key %q: release: %w: approximate counting has no concurrency leases", op.Key, floodgate.ErrInvalid)
	}
	for i, l := range op.Limits {
		if !Supports(l.Algorithm) {
			return fmt.Errorf("approx: key %q: limits[%d] %v: %w: approximate counting supports fixed_window and sliding_window only", op.Key, i, l, floodgate.ErrInvalid)
		}
	}
	return nil
}

// now returns the current instant by the remote's clock as this store
// knows it: the local clock plus the learned offset.
func (s *Store) now() int64 { return s.clock().UnixMicro() + s.offset.Load() }

func (s *Store) shardOf(key string) *shard {
	return &s.shards[maphash.String(s.seed, key)&(shardCount-1)]
}

// Decide implements [floodgate.Store]. It never waits on the network: each
// op is decided at once from the last synced global totals plus the costs
// this instance admitted since, and an admitted op's cost is pushed at the
// next sync. Ops with other algorithms than fixed_window and
// sliding_window, or releasing a lease, get an Err wrapping
// [floodgate.ErrInvalid].
func (s *Store) Decide(ctx context.Context, ops []floodgate.Op) error {
	if s.closed.Load() {
		for i := range ops {
			ops[i].Err = floodgate.ErrClosed
		}
		return floodgate.ErrClosed
	}
	var first error
	var buf [4]floodgate.State
	var ents [4]*entry
	var nbuf [4]int64
	for i := range ops {
		op := &ops[i]
		op.Err = nil
		if err := check(op); err != nil {
			op.Err = err
			first = cmpErr(first, err)
			continue
		}
		now := op.Now
		if now == 0 {
			now = s.now()
		}
		states, es, before := buf[:0], ents[:0], nbuf[:0]
		if len(op.Limits) > len(buf) {
			states, es, before = make([]floodgate.State, 0, len(op.Limits)), make([]*entry, 0, len(op.Limits)), make([]int64, 0, len(op.Limits))
		}
		sh := s.shardOf(op.Key)
		sh.mu.Lock()
		if s.closed.Load() {
			// Checked under the shard's lock: Close sets closed before its
			// final sync collects the shard, so a cost admitted here is
			// always pushed by that sync.
			sh.mu.Unlock()
			op.Err = floodgate.ErrClosed
			first = cmpErr(first, op.Err)
			continue
		}
		full := false
		for _, l := range op.Limits {
			e := s.entry(sh, op.Key, l)
			if e == nil {
				full = true
				break
			}
			es = append(es, e)
			// Never decide in a window older than one already counted in:
			// the clock offset may step back a little after a sync.
			now = max(now, e.cur.start)
		}
		if full {
			sh.mu.Unlock()
			op.Err = ErrTableFull
			first = cmpErr(first, op.Err)
			continue
		}
		for j, l := range op.Limits {
			e := es[j]
			e.roll(l, now)
			e.touched = true
			st := floodgate.State{T: e.cur.start, N: e.cur.count()}
			if l.Algorithm == floodgate.FixedWindow {
				// Instances together may have admitted more than the quota;
				// the fixed window reports Quota-N remaining.
				st.N = min(st.N, l.Quota)
			}
			if l.Algorithm == floodgate.SlidingWindow && e.prev.start == e.cur.start-int64(l.Window/time.Microsecond) {
				st.P = e.prev.count()
			}
			states = append(states, st)
			before = append(before, st.N)
		}
		if floodgate.Apply(op, states, now) {
			for j := range es {
				es[j].cur.pending += states[j].N - before[j]
			}
		}
		sh.mu.Unlock()
	}
	return first
}

// entry returns the entry of key under l, made if need be: its own while
// the shard has room, else the shard's shared entry of l; nil when there is
// no room for that either. The caller holds the shard's lock.
func (s *Store) entry(sh *shard, key string, l floodgate.Limit) *entry {
	k := entryKey{key, l}
	if e := sh.m[k]; e != nil {
		return e
	}
	fresh := func() *entry { return &entry{cur: window{start: noWindow}, prev: window{start: noWindow}} }
	if len(sh.m) < s.perShard {
		e := fresh()
		sh.m[k] = e
		return e
	}
	if e := sh.shared[l]; e != nil {
		return e
	}
	if len(sh.shared) >= maxSharedLimits {
		return nil
	}
	e := fresh()
	sh.shared[l] = e
	return e
}

func cmpErr(first, err error) error {
	if first == nil {
		return err
	}
	return first
}

// roll moves e to the window that holds now: the current window becomes the
// previous one when now is in the next window; both are cleared when now is
// further on.
func (e *entry) roll(l floodgate.Limit, now int64) {
	w := int64(l.Window / time.Microsecond)
	start := now - now%w
	switch {
	case e.cur.start == start:
	case e.cur.start == start-w:
		e.prev = e.cur
		e.cur = window{start: start}
	default:
		e.prev = window{start: start - w}
		e.cur = window{start: start}
	}
}

// expired reports whether e holds nothing that matters at now: no cost to
// push, and windows that no decision at now or later uses. An entry never
// rolled into a window (made for an op that then found the table full) holds
// nothing.
func (e *entry) expired(l floodgate.Limit, now int64) bool {
	if e.cur.pending != 0 || e.cur.sending != 0 || e.prev.pending != 0 || e.prev.sending != 0 {
		return false
	}
	if e.cur.start == noWindow {
		return true
	}
	w := int64(l.Window / time.Microsecond)
	end := e.cur.start + w
	if l.Algorithm == floodgate.SlidingWindow {
		end += w
	}
	return now >= end
}
