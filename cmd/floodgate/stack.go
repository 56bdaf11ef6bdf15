package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/metrics"
	"github.com/floodgate/floodgate/overrides"
	"github.com/floodgate/floodgate/rules"
)

// stackConfig is what the flags of the store stack set (see [stackFlags]),
// the same for every command that decides: serve and proxy. Zero durations
// and counts stand for their defaults, resolved where they are used.
type stackConfig struct {
	store        string
	syncInterval time.Duration
	approxKeys   int

	onStoreError    rules.FailurePolicy
	storeTimeout    time.Duration
	breakerFailures int
	breakerCooldown time.Duration
	assumeInstances int

	throughput throughputConfig
}

// stackFlags defines the flags of the store stack on fs: --store, the
// failure handling (--on-store-error, --store-timeout, --breaker-*,
// --assume-instances), the fast path (--batch*, --overlimit-*) and
// --sync-interval.
func stackFlags(cfg *stackConfig, fs *flag.FlagSet) {
	fs.StringVar(&cfg.store, "store", "memory", "store `url`: memory (in-process), redis://, rediss://, redis-cluster://, rediss-cluster:// or redis-sentinel://")
	fs.DurationVar(&cfg.syncInterval, "sync-interval", 0, fmt.Sprintf("`interval` at which rules with consistency approximate sync their local counts with a shared store (default %v)", approx.DefaultSyncInterval))
	fs.IntVar(&cfg.approxKeys, "approximate-max-keys", approx.DefaultMaxKeys, "the most keys × limits rules with consistency approximate count in this process (about 250 bytes each); keys past it share a local count per limit")
	resilienceFlags(cfg, fs)
	throughputFlags(&cfg.throughput, fs)
}

// check validates the flags' values.
func (c stackConfig) check() error {
	if c.syncInterval < 0 {
		return fmt.Errorf("--sync-interval %v: want a positive duration", c.syncInterval)
	}
	if c.approxKeys < 1 {
		return fmt.Errorf("--approximate-max-keys %d: want at least 1", c.approxKeys)
	}
	return c.throughput.check()
}

// stack is the store stack and the engine of a command that decides, built
// by [newStack]. For a shared store (Redis) it is, from the top:
//
//	engine (failure policy, local fallback sized by membership, approximate store)
//	→ over-limit cache → batch (one per cluster master) → breaker (deadline, circuit)
//	→ metrics.Metrics.Store → the store
//
// The memory store gets only the engine and the metrics: it has no network
// to fail or to save. A stack is closed once, with close, after the last
// decision.
type stack struct {
	// store is the store the engine decides with, the top of the stack.
	store floodgate.Store
	// engine decides with store under the rules in force.
	engine *engine.Engine

	res       *resilience
	apx       *approx.Store // nil unless the store syncs counters
	overrides *overrides.Table
	// base is the store the stack was built over (memory or Redis), for
	// what it offers besides decisions (the shared audit log).
	base   floodgate.Store
	mx     *metrics.Metrics
	name   string // the --store url, for logs
	logger *slog.Logger
}

// newStack opens the store cfg.store and builds the stack over it, with an
// engine deciding under the rules ruleSet gives; front names the engine's
// front for metrics ([engine.Options.Front]). The stack's calls and
// decisions are counted in mx. On error nothing is left open.
func newStack(ctx context.Context, cfg stackConfig, ruleSet func() *rules.Set, front string, logger *slog.Logger, mx *metrics.Metrics) (*stack, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	quietRedis(logger)
	st, err := openStore(ctx, cfg.store)
	if err != nil {
		return nil, fmt.Errorf("cannot open store: %w", err)
	}
	logger.Info("store opened", "store", cfg.store)
	apx, err := newApprox(st, cfg, logger)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("cannot start approximate counting: %w", err)
	}
	res := newResilience(st, cfg, logger, mx.Store)
	opts := res.engineOptions(cfg, logger)
	// Runtime overrides (the admin API's) live in the shared store when it
	// can keep them, so that every instance applies them.
	var backend overrides.Backend = overrides.NewMemory()
	if b, ok := st.(overrides.Backend); ok {
		backend = b
	}
	ov := overrides.Open(ctx, backend, overrides.Options{Logger: logger})
	opts.Overrides = ov
	if apx != nil {
		opts.Approximate = apx
	}
	opts.Observe, opts.Front = mx.Observe, front
	s := &stack{
		store:     res.store,
		engine:    engine.NewWithOptions(res.store, ruleSet, opts),
		res:       res,
		apx:       apx,
		overrides: ov,
		base:      st,
		mx:        mx,
		name:      cfg.store,
		logger:    logger,
	}
	return s, nil
}

// registerMetrics registers the scrape-time collectors of the stack and of
// w (nil: none); a failure is logged only.
func (s *stack) registerMetrics(w *rules.Watcher) {
	registerMetrics(s.mx, s.logger, s.engine, s.res, w, s.apx)
}

// close pushes the approximate counts admitted since the last sync, stops
// the membership heartbeat, closes the store stack (waiting for queued
// batches) and the engine's local fallback store. Every failure is logged;
// the error returned is the store's only: counts that could not be pushed
// to a store that is down are an outage's loss, not a failed shutdown.
func (s *stack) close() error {
	if s.apx != nil {
		if err := s.apx.Close(); err != nil {
			s.logger.Error("closing approximate counters", "err", err)
		}
	}
	s.overrides.Close()
	s.res.close()
	err := s.store.Close()
	if err != nil {
		s.logger.Error("closing store", "store", s.name, "err", err)
		err = fmt.Errorf("closing store %q: %w", s.name, err)
	}
	if err := s.engine.Close(); err != nil {
		s.logger.Error("closing the engine's local store", "err", err)
	}
	return err
}
