package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/breaker"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/membership"
	"github.com/floodgate/floodgate/overlimit"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
	redisstore "github.com/floodgate/floodgate/store/redis"

	goredis "github.com/redis/go-redis/v9"
)

// defaultOnStoreError is the failure policy for rules that name none:
// local keeps every limit enforced, at this instance's share, while the
// store is unreachable; fail_open would drop the limits and fail_closed
// would turn a store outage into an outage of the service.
const defaultOnStoreError = rules.FailLocal

// parsePolicy parses a failure policy as --on-store-error takes it.
func parsePolicy(s string) (rules.FailurePolicy, error) {
	switch s {
	case "fail_open":
		return rules.FailOpen, nil
	case "fail_closed":
		return rules.FailClosed, nil
	case "local":
		return rules.FailLocal, nil
	}
	return rules.FailureDefault, fmt.Errorf("unknown failure policy %q: want fail_open, fail_closed or local", s)
}

// resilience is what the store stack puts around a shared store: a deadline and a
// circuit breaker on every call, the membership heartbeat of the local
// policy, and in front of the breaker the fast path (see [fastPath]): the
// over-limit cache, then batching, one batch per cluster master. The
// memory store gets none of them: it has no network to fail or to save.
type resilience struct {
	store floodgate.Store // the store to decide with
	brk   *breaker.Store
	mem   *membership.Membership
	batch batcher          // nil when off or not a shared store
	cache *overlimit.Store // nil when off or not a shared store
}

// newResilience puts st behind the breaker and starts the heartbeat; timed
// wraps the store that calls go through (metrics.Metrics.Store), under the
// breaker, so that it times the calls that reach the store.
func newResilience(st floodgate.Store, cfg stackConfig, logger *slog.Logger, timed func(floodgate.Store) floodgate.Store) *resilience {
	if _, ok := st.(*memory.Store); ok {
		return &resilience{store: timed(st)}
	}
	r := &resilience{}
	if hb, ok := st.(membership.Heartbeater); ok {
		r.mem = membership.Start(hb, membership.Options{Assume: cfg.assumeInstances, Logger: logger})
	}
	bo := breaker.Options{
		Timeout:  cfg.storeTimeout,
		Failures: cfg.breakerFailures,
		Cooldown: cfg.breakerCooldown,
		Logger:   logger,
	}
	if rs, ok := st.(*redisstore.Store); ok {
		if cc, ok := rs.Client().(*goredis.ClusterClient); ok {
			// One circuit per master: a failed master opens only its own.
			lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second}
			bo.Shard = func(key string) string {
				node, err := cc.MasterForKey(context.Background(), rs.Key(key, lim))
				if err != nil {
					return ""
				}
				return node.Options().Addr
			}
			// After a master fails over, reload the slot map so that Shard
			// and the client name the promoted replica (go-redis reloads it
			// on its own only on MOVED, which a dead master never sends).
			bo.Refresh = func() { cc.ReloadState(context.Background()) }
		}
	}
	r.brk = breaker.New(timed(st), bo)
	// The engine applies the failure policy above these wrappers, to ops
	// that come back with an error; the cache remembers only the store's
	// own denials, never an op with an error, so a policy's denial is never
	// cached.
	r.store, r.batch, r.cache = fastPath(r.brk, cfg.throughput, bo.Shard)
	return r
}

// engineOptions are the engine's failure-policy options.
func (r *resilience) engineOptions(cfg stackConfig, logger *slog.Logger) engine.Options {
	opts := engine.Options{Logger: logger, OnStoreError: cfg.onStoreError}
	if opts.OnStoreError == rules.FailureDefault {
		opts.OnStoreError = defaultOnStoreError
	}
	if r.mem != nil {
		opts.Instances = r.mem.Live
	}
	return opts
}

// close stops the heartbeat (leaving the count); the store is closed by
// its owner afterwards.
func (r *resilience) close() {
	if r.mem != nil {
		r.mem.Close()
	}
}

// resilienceFlags are the store stack's flags of the failure handling. Their zero
// values stand for the defaults, resolved by newResilience.
func resilienceFlags(cfg *stackConfig, fs interface {
	Func(name, usage string, fn func(string) error)
	DurationVar(p *time.Duration, name string, value time.Duration, usage string)
	IntVar(p *int, name string, value int, usage string)
}) {
	fs.Func("on-store-error", "failure `policy` of rules that name none, when the store cannot decide: fail_open, fail_closed or local (default local)", func(s string) error {
		p, err := parsePolicy(s)
		cfg.onStoreError = p
		return err
	})
	fs.DurationVar(&cfg.storeTimeout, "store-timeout", 0, fmt.Sprintf("`deadline` of each call to a shared store; past it the failure policy decides (default %v)", breaker.DefaultTimeout))
	fs.IntVar(&cfg.breakerFailures, "breaker-failures", 0, fmt.Sprintf("consecutive failed store calls that open the circuit breaker (default %d)", breaker.DefaultFailures))
	fs.DurationVar(&cfg.breakerCooldown, "breaker-cooldown", 0, fmt.Sprintf("how long the open circuit waits before probing the store (default %v)", breaker.DefaultCooldown))
	fs.IntVar(&cfg.assumeInstances, "assume-instances", 0, fmt.Sprintf("live instances the local policy assumes before the store ever answered a heartbeat (default %d)", membership.DefaultAssume))
}
