// Package breaker wraps a [floodgate.Store] with a deadline on every call and
// a circuit breaker, so that a store that is down, paused or slow costs a
// decision at most its deadline, and after a run of failures costs nothing
// at all.
//
// # Deadline
//
// Every [Store.Decide] runs under a context whose deadline is at most
// [Options.Timeout] away (default [DefaultTimeout], 10ms). The Redis store
// bounds its dials, writes, reads and pool waits by that deadline, and never
// retries, so a killed, paused (SIGSTOP) or black-holed Redis answers an
// error within the deadline plus scheduling noise.
//
// # Circuit
//
// The breaker is Closed while the store answers. After [Options.Failures]
// consecutive failed calls (default 5) it opens. Consecutive in time: a
// failed call counts only if it started after the previous failure was
// counted, so calls in flight together that fail in one stall (a pause of
// the process, a burst of CPU starvation on a loaded machine) count once,
// and a run of N failures takes at least N deadlines when every call times
// out. Once open, calls fail at once with [ErrOpen], without touching the
// network, and the caller (the engine) applies its failure policy. After
// [Options.Cooldown] (default 500ms) the next call is let through as a
// probe (HalfOpen; concurrent calls keep failing fast): if the store
// decides it, the breaker closes; if not, it opens for another cooldown.
//
// A call fails when the store decided none of its ops and at least one op
// has an error other than [floodgate.ErrInvalid]; a call where the caller's
// own context ended is not counted either way. A call that decides at least
// one op is a success. With [Options.Shard] each shard (on a Redis Cluster,
// each master) has its own circuit, judged by its own ops: a failed master
// opens its circuit and the keys on the other masters are not affected.
//
// # Failover
//
// When a shard fails over (a Redis Cluster replica promoted in place of a
// failed master), the keys of the failed shard must leave its open circuit
// for the new master's. [Options.Refresh] is called when a circuit opens
// and before each of its half-open probes, at most once per cooldown and
// never while every circuit is closed: on a Redis Cluster it reloads the
// slot map in the background, so that once the replica is promoted,
// [Options.Shard] names it for the failed slots and their calls go to its
// circuit, closed, within a cooldown of the promotion. The circuit left
// behind, which no key maps to any more, is retired: [Store.State] and
// [Store.Shards] drop it (logged, counted in [Stats].Retired, and reported
// to [Options.OnStateChange] as a change to Closed).
//
// State changes are logged (slog, warn when opening, info otherwise) and
// counted ([Store.Stats]); [Store.State] is the gauge.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate/floodgate"
)

// Defaults of [Options].
const (
	// DefaultTimeout bounds one store call. A decision on a healthy local
	// Redis takes 0.06ms at the median and 2.6ms at the 99.9th percentile
	// with one caller, 6.5ms at the 99.9th percentile with 16 concurrent
	// callers (measured on a loaded 2-core machine; docs/failure-modes.md):
	// 10ms stays above that tail and below the 20ms Envoy's rate-limit
	// filter waits by default, so the policy answers before Envoy gives up.
	DefaultTimeout = 10 * time.Millisecond
	// DefaultFailures is the run of consecutive failed calls that opens the
	// circuit.
	DefaultFailures = 5
	// DefaultCooldown is how long the circuit stays open before a probe.
	DefaultCooldown = 500 * time.Millisecond
)

// ErrOpen is the error of every op of a call refused because the circuit is
// open: no decision was attempted.
var ErrOpen = errors.New("breaker: circuit open, store not called")

// State is the circuit's state. The zero value is Closed.
type State int32

// The states.
const (
	// Closed: calls go to the store.
	Closed State = iota
	// Open: calls fail at once with [ErrOpen].
	Open
	// HalfOpen: one probe call is in flight; other calls fail with [ErrOpen].
	HalfOpen
)

// String returns "closed", "open" or "half_open".
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// Options configure a [Store]. The zero value gives every default.
type Options struct {
	// Timeout bounds each call to the inner store, on top of the caller's
	// own deadline. Default [DefaultTimeout] (10ms).
	Timeout time.Duration
	// Failures is how many consecutive failed calls open the circuit; a
	// call in flight when the previous failure was counted does not count.
	// Default [DefaultFailures] (5).
	Failures int
	// Cooldown is how long the circuit stays open before a probe call is
	// let through. Default [DefaultCooldown] (500ms).
	Cooldown time.Duration
	// Logger receives a record at every state change. Default: discarded.
	Logger *slog.Logger
	// OnStateChange, when set, is called after every state change, outside
	// the breaker's lock (for a metrics gauge). It must not block. shard is
	// the shard's name, "" without Shard.
	OnStateChange func(shard string, from, to State)
	// Shard, when set, names the part of the store an op's key lives on
	// (on a Redis Cluster, the master that holds the key's slot), and each
	// shard gets its own circuit: one failed master opens only its own.
	// Default: one circuit for the whole store.
	Shard func(key string) string
	// Refresh, when set, is called on the calling goroutine when a circuit
	// opens and before each of its half-open probes (at most once per
	// Cooldown per open circuit; never while every circuit is closed, so a
	// healthy store costs nothing). It must not block: on a Redis Cluster
	// it is ClusterClient.ReloadState, which reloads the slot map in the
	// background, so that after a failover Shard names the promoted
	// replica. Default: nothing.
	Refresh func()
}

// Stats are the breaker's counters since [New]; all only grow.
type Stats struct {
	// Calls is the number of Decide calls, refused ones included.
	Calls uint64
	// Failures is the number of calls that reached the store and failed.
	Failures uint64
	// Timeouts is the number of those failures that hit the deadline.
	Timeouts uint64
	// Rejected is the number of calls refused with [ErrOpen].
	Rejected uint64
	// Opened, HalfOpened and Closed count the transitions to each state.
	Opened, HalfOpened, Closed uint64
	// Retired counts the circuits dropped because no key maps to their
	// shard any more (a failed master replaced by its replica).
	Retired uint64
}

// Store is a [floodgate.Store] with a deadline and circuit breakers in
// front of another. Create it with [New]; the zero value is not usable. It
// is safe for concurrent use.
type Store struct {
	inner    floodgate.Store
	timeout  time.Duration
	failures int64
	cooldown time.Duration
	logger   *slog.Logger
	onChange func(shard string, from, to State)
	shard    func(key string) string
	refresh  func()

	one    circuit  // without Shard
	shards sync.Map // shard name → *circuit, with Shard

	calls, failed, timeouts, rejected atomic.Uint64
	opened, halfOpened, closed        atomic.Uint64
	retired                           atomic.Uint64
}

// circuit is the state of one breaker.
type circuit struct {
	name     string
	state    atomic.Int32
	run      atomic.Int64 // consecutive failed calls
	lastFail atomic.Int64 // unix nanoseconds when the run last grew
	openedAt atomic.Int64 // unix nanoseconds of the last opening

	mu      sync.Mutex
	probing bool
	sample  string // a key of the last call that opened or probed the circuit
	retired bool   // dropped from Store.shards: no key maps to it any more
}

var _ floodgate.Store = (*Store)(nil)

// New returns inner behind a deadline and a circuit breaker. Closing the
// returned store closes inner.
func New(inner floodgate.Store, opts Options) *Store {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Failures <= 0 {
		opts.Failures = DefaultFailures
	}
	if opts.Cooldown <= 0 {
		opts.Cooldown = DefaultCooldown
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{
		inner:    inner,
		timeout:  opts.Timeout,
		failures: int64(opts.Failures),
		cooldown: opts.Cooldown,
		logger:   opts.Logger,
		onChange: opts.OnStateChange,
		shard:    opts.Shard,
		refresh:  opts.Refresh,
	}
}

// Inner returns the wrapped store.
func (s *Store) Inner() floodgate.Store { return s.inner }

// Timeout returns the deadline of each call.
func (s *Store) Timeout() time.Duration { return s.timeout }

// State returns the circuit's state; with Options.Shard, the worst state of
// any shard (Open, then HalfOpen, then Closed).
func (s *Store) State() State {
	if s.shard == nil {
		return State(s.one.state.Load())
	}
	worst := Closed
	s.shards.Range(func(_, v any) bool {
		c := v.(*circuit)
		if !s.live(c) {
			return true
		}
		switch st := State(c.state.Load()); {
		case st == Open:
			worst = Open
			return false
		case st == HalfOpen:
			worst = HalfOpen
		}
		return true
	})
	return worst
}

// Shards returns the state of each shard's circuit (empty without
// Options.Shard). Circuits that no key maps to any more are retired first
// (see the package doc's Failover).
func (s *Store) Shards() map[string]State {
	m := map[string]State{}
	s.shards.Range(func(k, v any) bool {
		if c := v.(*circuit); s.live(c) {
			m[k.(string)] = State(c.state.Load())
		}
		return true
	})
	return m
}

// live reports whether c still stands for a shard, and retires it when it
// does not: a circuit that is not closed, whose sample key Shard now maps
// to another shard (after a failover and a slot-map refresh).
func (s *Store) live(c *circuit) bool {
	if State(c.state.Load()) == Closed {
		return true
	}
	c.mu.Lock()
	sample, retired := c.sample, c.retired
	c.mu.Unlock()
	if retired {
		return false
	}
	if sample == "" || s.shard(sample) == c.name {
		return true
	}
	c.mu.Lock()
	if c.retired || State(c.state.Load()) == Closed {
		retired := c.retired
		c.mu.Unlock()
		return !retired
	}
	c.retired = true
	from := State(c.state.Load())
	c.mu.Unlock()
	s.shards.CompareAndDelete(c.name, c)
	s.retired.Add(1)
	s.logger.Info("store circuit retired: its keys moved to another shard", "shard", c.name, "from", from.String(), "now", s.shard(sample))
	if s.onChange != nil {
		s.onChange(c.name, from, Closed)
	}
	return false
}

// Ready reports whether calls go to the store: no circuit is open. With
// Options.Shard, a deployment that prefers to stay ready while one shard
// is down checks [Store.Shards] instead.
func (s *Store) Ready() bool { return s.State() != Open }

// Stats returns the counters.
func (s *Store) Stats() Stats {
	return Stats{
		Calls:      s.calls.Load(),
		Failures:   s.failed.Load(),
		Timeouts:   s.timeouts.Load(),
		Rejected:   s.rejected.Load(),
		Opened:     s.opened.Load(),
		HalfOpened: s.halfOpened.Load(),
		Closed:     s.closed.Load(),
		Retired:    s.retired.Load(),
	}
}

// Close closes the inner store.
func (s *Store) Close() error { return s.inner.Close() }

// Unwrap returns the inner store, for [floodgate.Reset]: a reset goes to the
// store directly, whatever the circuits' state, under the caller's deadline.
func (s *Store) Unwrap() floodgate.Store { return s.inner }

// outcome of one call for one circuit.
type outcome uint8

const (
	neutral outcome = iota
	success
	failure
)

// circuitOf returns the circuit of an op's key.
func (s *Store) circuitOf(key string) *circuit {
	if s.shard == nil {
		return &s.one
	}
	name := s.shard(key)
	if c, ok := s.shards.Load(name); ok {
		return c.(*circuit)
	}
	c, _ := s.shards.LoadOrStore(name, &circuit{name: name})
	return c.(*circuit)
}

// pass is one circuit's part in a call.
type pass struct {
	c      *circuit
	key    string // the first op's key
	probe  bool
	ok     bool
	result outcome
}

// Decide implements [floodgate.Store]: it calls the inner store under the
// deadline with the ops whose circuit lets them through, and sets the Err
// of the others to [ErrOpen]. It returns the first op error, or ErrOpen when
// no op was let through.
func (s *Store) Decide(ctx context.Context, ops []floodgate.Op) error {
	s.calls.Add(1)
	var buf [4]pass
	passes := buf[:0]
	var which []int // which[i] is the index in passes of ops[i]'s circuit, with Shard
	if s.shard == nil || len(ops) == 0 {
		passes = append(passes, pass{c: &s.one})
		if len(ops) > 0 {
			passes[0].key = ops[0].Key
		}
	} else {
		which = make([]int, len(ops))
		for i := range ops {
			c := s.circuitOf(ops[i].Key)
			k := -1
			for j := range passes {
				if passes[j].c == c {
					k = j
					break
				}
			}
			if k < 0 {
				k = len(passes)
				passes = append(passes, pass{c: c, key: ops[i].Key})
			}
			which[i] = k
		}
	}
	admitted := 0
	for j := range passes {
		passes[j].probe, passes[j].ok = s.admit(passes[j].c, passes[j].key)
		if passes[j].ok {
			admitted++
		}
	}
	if admitted == 0 {
		s.rejected.Add(1)
		for i := range ops {
			ops[i].Err = ErrOpen
		}
		return ErrOpen
	}
	call := ops
	var back []int // indexes in ops of call's ops, when some are refused
	if admitted < len(passes) {
		s.rejected.Add(1)
		call = make([]floodgate.Op, 0, len(ops))
		for i := range ops {
			if passes[which[i]].ok {
				call = append(call, ops[i])
				back = append(back, i)
			} else {
				ops[i].Err = ErrOpen
			}
		}
	}
	for i := range call {
		call[i].Result = floodgate.Result{}
		call[i].Err = nil
	}
	start := time.Now().UnixNano()
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	err := s.inner.Decide(cctx, call)
	timedOut := cctx.Err() != nil
	cancel()
	for k, i := range back {
		ops[i] = call[k]
	}
	if which == nil {
		passes[0].result = classify(ctx, ops, err)
	} else {
		for j := range passes {
			if passes[j].ok {
				passes[j].result = classifyOf(ctx, ops, err, which, j)
			}
		}
	}
	for j := range passes {
		p := &passes[j]
		if !p.ok {
			continue
		}
		if p.result == failure {
			s.failed.Add(1)
			if timedOut {
				s.timeouts.Add(1)
			}
		}
		s.record(p.c, p.key, start, p.probe, p.result, err)
	}
	if err == nil && back != nil {
		for i := range ops {
			if ops[i].Err != nil {
				return ops[i].Err
			}
		}
	}
	return err
}

// classify tells whether a call decided anything.
func classify(ctx context.Context, ops []floodgate.Op, err error) outcome {
	return classifyOf(ctx, ops, err, nil, 0)
}

// classifyOf is classify over the ops i with which[i] == j (every op when
// which is nil).
func classifyOf(ctx context.Context, ops []floodgate.Op, err error, which []int, j int) outcome {
	if err == nil {
		return success
	}
	failed := false
	for i := range ops {
		if which != nil && which[i] != j {
			continue
		}
		op := &ops[i]
		switch {
		case op.Err == nil && op.Result.Limit != (floodgate.Limit{}):
			return success
		case op.Err != nil && errors.Is(op.Err, ErrOpen):
		case op.Err != nil && !errors.Is(op.Err, floodgate.ErrInvalid):
			failed = true
		}
	}
	if ctx.Err() != nil {
		// The caller gave up: says nothing about the store.
		return neutral
	}
	if !failed && which == nil && !errors.Is(err, floodgate.ErrInvalid) {
		// A whole-batch error with no op marked.
		failed = true
	}
	if failed {
		return failure
	}
	return neutral
}

// admit decides whether a call with a key may pass c: always when closed;
// when open, only as the probe after the cooldown, after asking for a
// refresh.
func (s *Store) admit(c *circuit, key string) (probe, ok bool) {
	st := State(c.state.Load())
	if st == Closed {
		return false, true
	}
	if st == Open && time.Now().UnixNano()-c.openedAt.Load() < int64(s.cooldown) {
		return false, false
	}
	c.mu.Lock()
	st = State(c.state.Load())
	switch {
	case st == Closed:
		c.mu.Unlock()
		return false, true
	case c.probing:
		c.mu.Unlock()
		return false, false
	case st == Open && time.Now().UnixNano()-c.openedAt.Load() < int64(s.cooldown):
		c.mu.Unlock()
		return false, false
	}
	c.probing = true
	c.sample = key
	c.state.Store(int32(HalfOpen))
	c.mu.Unlock()
	if st != HalfOpen {
		s.changed(c, st, HalfOpen, nil)
	}
	if s.refresh != nil {
		s.refresh()
	}
	return true, true
}

// record applies the outcome of one call with a key, started at start
// (unix nanoseconds), to c.
func (s *Store) record(c *circuit, key string, start int64, probe bool, out outcome, err error) {
	if probe {
		s.endProbe(c, out, err)
		return
	}
	switch out {
	case success:
		if c.run.Load() != 0 {
			c.run.Store(0)
		}
	case failure:
		for {
			last := c.lastFail.Load()
			if start < last {
				// In flight when the last failure was counted: the same
				// stall.
				return
			}
			if c.lastFail.CompareAndSwap(last, time.Now().UnixNano()) {
				break
			}
		}
		if c.run.Add(1) >= s.failures {
			s.trip(c, key, err)
		}
	}
}

// endProbe closes or reopens c after a probe.
func (s *Store) endProbe(c *circuit, out outcome, err error) {
	c.mu.Lock()
	c.probing = false
	if c.retired {
		c.mu.Unlock()
		return
	}
	var to State
	switch out {
	case success:
		to = Closed
		c.run.Store(0)
	case failure:
		to = Open
		c.openedAt.Store(time.Now().UnixNano())
	default:
		// The probe's caller left: the next call probes again.
		c.mu.Unlock()
		return
	}
	c.state.Store(int32(to))
	c.mu.Unlock()
	s.changed(c, HalfOpen, to, err)
}

// trip opens a closed circuit after a failed call with a key, and asks
// for a refresh.
func (s *Store) trip(c *circuit, key string, err error) {
	c.mu.Lock()
	if State(c.state.Load()) != Closed || c.retired {
		c.mu.Unlock()
		return
	}
	c.state.Store(int32(Open))
	c.openedAt.Store(time.Now().UnixNano())
	c.sample = key
	c.mu.Unlock()
	s.changed(c, Closed, Open, err)
	if s.refresh != nil {
		s.refresh()
	}
}

// changed counts, logs and reports a state change, outside the lock.
func (s *Store) changed(c *circuit, from, to State, err error) {
	switch to {
	case Open:
		s.opened.Add(1)
		s.logger.Warn("store circuit open: decisions follow the failure policy", "shard", c.name, "from", from.String(), "failures", c.run.Load(), "cooldown", s.cooldown, "err", err)
	case HalfOpen:
		s.halfOpened.Add(1)
		s.logger.Info("store circuit half-open: probing the store", "shard", c.name, "from", from.String())
	case Closed:
		s.closed.Add(1)
		s.logger.Info("store circuit closed: the store answers again", "shard", c.name, "from", from.String())
	}
	if s.onChange != nil {
		s.onChange(c.name, from, to)
	}
}
