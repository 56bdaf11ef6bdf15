package memory

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/floodgate/floodgate"
)

// Options configure a [Store]. The zero value is valid: every field has a
// default.
type Options struct {
	// Capacity is the most entries (one per key and limit) the store holds.
	// Default 1<<20.
	Capacity int
	// Shards is the number of independently locked parts of the table, rounded
	// up to a power of two. Default 256.
	Shards int
	// Clock returns the current time in microseconds since the Unix epoch.
	// Default: the wall clock read at New plus the monotonic time elapsed.
	Clock func() int64
	// SweepInterval is how often the whole table is swept of expired entries.
	// Default 10s.
	SweepInterval time.Duration
}

// Store is the in-memory store. It is safe for concurrent use. Use [New].
type Store struct {
	seed   maphash.Seed
	shards []shard
	clock  func() int64
	mu     sync.RWMutex
	closed bool
}

var _ floodgate.Store = (*Store)(nil)

type entryKey struct {
	key   string
	limit floodgate.Limit
}

type shard struct {
	mu sync.Mutex
	m  map[entryKey]floodgate.State
}

// New returns a store configured by opts.
func New(opts Options) *Store {
	n := opts.Shards
	if n <= 0 {
		n = 256
	}
	s := &Store{seed: maphash.MakeSeed(), shards: make([]shard, n), clock: opts.Clock}
	for i := range s.shards {
		s.shards[i].m = make(map[entryKey]floodgate.State)
	}
	if s.clock == nil {
		base := time.Now()
		wall := base.UnixMicro()
		s.clock = func() int64 { return wall + int64(time.Since(base)/time.Microsecond) }
	}
	return s
}

// Decide decides ops in order; see [floodgate.Store].
func (s *Store) Decide(ctx context.Context, ops []floodgate.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return floodgate.ErrClosed
	}
	var first error
	for i := range ops {
		op := &ops[i]
		if err := op.Check(); err != nil {
			op.Err = err
			if first == nil {
				first = err
			}
			continue
		}
		now := op.Now
		if now == 0 {
			now = s.clock()
		}
		sh := &s.shards[maphash.String(s.seed, op.Key)%uint64(len(s.shards))]
		sh.mu.Lock()
		states := make([]floodgate.State, len(op.Limits))
		for j, l := range op.Limits {
			states[j] = sh.m[entryKey{op.Key, l}]
		}
		if floodgate.Apply(op, states, now) {
			for j, l := range op.Limits {
				sh.m[entryKey{op.Key, l}] = states[j]
			}
		}
		sh.mu.Unlock()
	}
	return first
}

// Close releases the store; later calls to Decide return [floodgate.ErrClosed].
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// Len returns the number of entries held.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.Lock()
		n += len(s.shards[i].m)
		s.shards[i].mu.Unlock()
	}
	return n
}
