package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/batch"
	"github.com/floodgate/floodgate/breaker"
	"github.com/floodgate/floodgate/metrics"
	"github.com/floodgate/floodgate/overlimit"
)

// throughputConfig is what the store stack's flags of the shared-store fast path set:
// batching of concurrent decisions and the over-limit cache.
type throughputConfig struct {
	batch         bool
	batchWindow   time.Duration
	batchMax      int
	batchFlight   int
	overlimit     bool
	overlimitSize int
	overlimitLife time.Duration
}

// flagSet is what the flag functions below need of a flag set.
type flagSet interface {
	BoolVar(p *bool, name string, value bool, usage string)
	DurationVar(p *time.Duration, name string, value time.Duration, usage string)
	IntVar(p *int, name string, value int, usage string)
}

// throughputFlags are the store stack's flags of batching and the over-limit cache.
func throughputFlags(cfg *throughputConfig, fs flagSet) {
	fs.BoolVar(&cfg.batch, "batch", true, "shared stores: coalesce concurrent decisions into batched store calls (one round trip for many decisions)")
	batchFlags(cfg, fs)
	fs.BoolVar(&cfg.overlimit, "overlimit-cache", true, "shared stores: answer keys known to be over their limit locally until their denial may end, without a store call")
	fs.IntVar(&cfg.overlimitSize, "overlimit-size", overlimit.DefaultCapacity, "with --overlimit-cache: the most keys the cache holds (a fixed table; at least 256)")
	fs.DurationVar(&cfg.overlimitLife, "overlimit-max-lifetime", overlimit.DefaultMaxLifetime, "with --overlimit-cache: the longest a cached denial answers, and so the longest a key reset through another instance's admin API stays denied here")
}

// batchFlags are the flags of how batches form: --batch-window, --batch-max
// and --batch-inflight (floodgate bench has them too).
func batchFlags(cfg *throughputConfig, fs flagSet) {
	fs.DurationVar(&cfg.batchWindow, "batch-window", 0, "with --batch: how long a batch waits for more decisions before it is sent (0: send what is already waiting, so a lone decision never waits)")
	fs.IntVar(&cfg.batchMax, "batch-max", batch.DefaultMaxBatch, "with --batch: the most decisions one store call carries")
	fs.IntVar(&cfg.batchFlight, "batch-inflight", batch.DefaultMaxInFlight, "with --batch: the most store calls in flight at once (per Redis Cluster master)")
}

// check validates the flags' values.
func (c throughputConfig) check() error {
	switch {
	case c.batchWindow < 0:
		return fmt.Errorf("--batch-window %v: want 0 or a positive duration", c.batchWindow)
	case c.batchWindow > time.Second:
		return fmt.Errorf("--batch-window %v: want at most 1s (every decision of a batch waits it)", c.batchWindow)
	case c.batchMax < 1:
		return fmt.Errorf("--batch-max %d: want at least 1", c.batchMax)
	case c.batchFlight < 1:
		return fmt.Errorf("--batch-inflight %d: want at least 1", c.batchFlight)
	case c.overlimitSize < 1:
		return fmt.Errorf("--overlimit-size %d: want at least 1", c.overlimitSize)
	case c.overlimitLife < 0:
		return fmt.Errorf("--overlimit-max-lifetime %v: want a positive duration", c.overlimitLife)
	}
	return nil
}

// batcher is a batching store: a [batch.Store], or a [shardedBatch] with
// one per shard.
type batcher interface {
	floodgate.Store
	Stats() (calls, ops int64)
}

// fastPath puts the over-limit cache and batching in front of st (the
// breaker of a shared store): cache → batch → st. shard, when not nil,
// names the shard of a key (a Redis Cluster master), and every shard gets a
// batch of its own, so that a slow or failed master delays only the
// decisions of its own keys and the breaker judges each shard on its own
// calls. It returns the store to decide with and the two wrappers (nil when
// off).
func fastPath(st floodgate.Store, cfg throughputConfig, shard func(key string) string) (floodgate.Store, batcher, *overlimit.Store) {
	var b batcher
	if cfg.batch {
		opts := batchOptions(cfg)
		if brk, ok := st.(*breaker.Store); ok {
			// A decision queued behind a call in flight waits at most one
			// deadline in all, not that call's and then its own.
			opts.MaxWait = brk.Timeout()
		}
		if shard != nil {
			b = newShardedBatch(st, shard, opts)
		} else {
			b = batch.New(st, opts)
		}
		st = b
	}
	var c *overlimit.Store
	if cfg.overlimit {
		c = overlimit.New(st, overlimit.Options{Capacity: cfg.overlimitSize, MaxLifetime: cfg.overlimitLife})
		st = c
	}
	return st, b, c
}

// batchOptions are the batch options the flags give.
func batchOptions(cfg throughputConfig) batch.Options {
	return batch.Options{Window: cfg.batchWindow, MaxBatch: cfg.batchMax, MaxInFlight: cfg.batchFlight}
}

// registerFastPath registers the metrics of the batch and the cache; nil
// parts are skipped.
func registerFastPath(mx *metrics.Metrics, b batcher, c *overlimit.Store) []error {
	var errs []error
	switch b := b.(type) {
	case *batch.Store:
		errs = append(errs, mx.Batch(b))
	case *shardedBatch:
		// The same series as metrics.Batch, summed over the shards.
		calls := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "floodgate_batch_calls_total", Help: "Calls the batching store made to the store behind it."},
			func() float64 { n, _ := b.Stats(); return float64(n) })
		ops := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "floodgate_batch_ops_total", Help: "Ops those calls carried."},
			func() float64 { _, n := b.Stats(); return float64(n) })
		errs = append(errs, mx.Registry().Register(calls), mx.Registry().Register(ops))
	}
	if c != nil {
		errs = append(errs, mx.Overlimit(c))
	}
	return errs
}

// shardedBatch batches each shard's decisions apart: one [batch.Store] per
// shard name, all in front of one inner store. A call whose ops span
// several shards is split, its parts decided concurrently, and the results
// put back in place. It is safe for concurrent use.
type shardedBatch struct {
	inner floodgate.Store
	shard func(key string) string
	opts  batch.Options

	mu     sync.Mutex
	byName map[string]*batch.Store
	closed bool
}

var _ floodgate.Store = (*shardedBatch)(nil)

func newShardedBatch(inner floodgate.Store, shard func(key string) string, opts batch.Options) *shardedBatch {
	return &shardedBatch{inner: inner, shard: shard, opts: opts, byName: map[string]*batch.Store{}}
}

// Unwrap returns the store behind the batches, for [floodgate.Reset].
func (s *shardedBatch) Unwrap() floodgate.Store { return s.inner }

// unclosed is a store whose Close does nothing: the shards' batches share
// one inner store, which shardedBatch closes once.
type unclosed struct{ floodgate.Store }

func (unclosed) Close() error { return nil }

// of returns the batch of a shard, nil after Close.
func (s *shardedBatch) of(name string) *batch.Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	b, ok := s.byName[name]
	if !ok {
		b = batch.New(unclosed{s.inner}, s.opts)
		s.byName[name] = b
	}
	return b
}

// Decide implements [floodgate.Store].
func (s *shardedBatch) Decide(ctx context.Context, ops []floodgate.Op) error {
	if len(ops) == 0 {
		return nil
	}
	first := s.shard(ops[0].Key)
	split := -1
	for i := 1; i < len(ops); i++ {
		if s.shard(ops[i].Key) != first {
			split = i
			break
		}
	}
	if split < 0 {
		b := s.of(first)
		if b == nil {
			return closedOps(ops)
		}
		return b.Decide(ctx, ops)
	}
	// Several shards: one part per shard, in the ops' order.
	type part struct {
		b   *batch.Store
		idx []int
		ops []floodgate.Op
	}
	var parts []*part
	byName := map[string]*part{}
	for i := range ops {
		name := first
		if i >= split {
			name = s.shard(ops[i].Key)
		}
		p, ok := byName[name]
		if !ok {
			b := s.of(name)
			if b == nil {
				return closedOps(ops)
			}
			p = &part{b: b}
			byName[name] = p
			parts = append(parts, p)
		}
		p.idx = append(p.idx, i)
		p.ops = append(p.ops, ops[i])
	}
	var wg sync.WaitGroup
	for _, p := range parts[1:] {
		wg.Go(func() { p.b.Decide(ctx, p.ops) })
	}
	parts[0].b.Decide(ctx, parts[0].ops)
	wg.Wait()
	for _, p := range parts {
		for j, i := range p.idx {
			// Each is shared with the caller's op and already filled.
			ops[i].Result, ops[i].Err = p.ops[j].Result, p.ops[j].Err
		}
	}
	for i := range ops {
		if ops[i].Err != nil {
			return ops[i].Err
		}
	}
	return nil
}

// closedOps gives every op [floodgate.ErrClosed].
func closedOps(ops []floodgate.Op) error {
	for i := range ops {
		ops[i].Err = floodgate.ErrClosed
	}
	return floodgate.ErrClosed
}

// Stats sums the shards' batch calls and ops.
func (s *shardedBatch) Stats() (calls, ops int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.byName {
		c, o := b.Stats()
		calls += c
		ops += o
	}
	return calls, ops
}

// Close waits for every shard's queued and in-flight calls, then closes the
// inner store. Decide after Close returns [floodgate.ErrClosed].
func (s *shardedBatch) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	bs := make([]*batch.Store, 0, len(s.byName))
	for _, b := range s.byName {
		bs = append(bs, b)
	}
	s.mu.Unlock()
	var errs []error
	for _, b := range bs {
		errs = append(errs, b.Close())
	}
	if err := s.inner.Close(); err != nil {
		errs = append(errs, fmt.Errorf("batch: closing the inner store: %w", err))
	}
	return errors.Join(errs...)
}
