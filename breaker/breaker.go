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
// consecutive failed calls (default 5) it opens: calls fail at once with
// [ErrOpen], without touching the network, and the caller (the engine)
// applies its failure policy. After [Options.Cooldown] (default 500ms) the next
// call is let through as a probe (HalfOpen; concurrent calls keep failing
// fast): if the store decides it, the breaker closes; if not, it opens for
// another cooldown.
//
// A call fails when the store decided none of its ops and at least one op
// has an error other than [floodgate.ErrInvalid]; a call where the caller's
// own context ended is not counted either way. A call that decides at least
// one op is a success: on a Redis Cluster with one master down, calls for
// keys on the other masters keep the circuit closed, and keys on the failed
// slots fail within the deadline.
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
	// Failures is how many consecutive failed calls open the circuit.
	// Default [DefaultFailures] (5).
	Failures int
	// Cooldown is how long the circuit stays open before a probe call is
	// let through. Default [DefaultCooldown] (500ms).
	Cooldown time.Duration
	// Logger receives a record at every state change. Default: discarded.
	Logger *slog.Logger
	// OnStateChange, when set, is called after every state change, outside
	// the breaker's lock (for a metrics gauge). It must not block.
	OnStateChange func(from, to State)
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
}

// Store is a [floodgate.Store] with a deadline and a circuit breaker in
// front of another. Create it with [New]; the zero value is not usable. It
// is safe for concurrent use.
type Store struct {
	inner    floodgate.Store
	timeout  time.Duration
	failures int64
	cooldown time.Duration
	logger   *slog.Logger
	onChange func(from, to State)

	state atomic.Int32
	run   atomic.Int64 // consecutive failed calls

	openedAt atomic.Int64 // unix nanoseconds of the last opening

	mu      sync.Mutex
	probing bool

	calls, failed, timeouts, rejected atomic.Uint64
	opened, halfOpened, closed        atomic.Uint64
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
	}
}

// Inner returns the wrapped store.
func (s *Store) Inner() floodgate.Store { return s.inner }

// Timeout returns the deadline of each call.
func (s *Store) Timeout() time.Duration { return s.timeout }

// State returns the circuit's state.
func (s *Store) State() State { return State(s.state.Load()) }

// Ready reports whether calls go to the store: the circuit is not open.
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
	}
}

// Close closes the inner store.
func (s *Store) Close() error { return s.inner.Close() }

// outcome of one call.
type outcome uint8

const (
	neutral outcome = iota
	success
	failure
)

// Decide implements [floodgate.Store]: it calls the inner store under the
// deadline when the circuit lets it, or sets every op's Err to [ErrOpen]
// and returns ErrOpen.
func (s *Store) Decide(ctx context.Context, ops []floodgate.Op) error {
	s.calls.Add(1)
	probe := false
	if st := State(s.state.Load()); st != Closed {
		var ok bool
		if st == Open && time.Now().UnixNano()-s.openedAt.Load() < int64(s.cooldown) {
			ok = false
		} else {
			probe, ok = s.admitProbe()
		}
		if !ok {
			s.rejected.Add(1)
			for i := range ops {
				ops[i].Err = ErrOpen
			}
			return ErrOpen
		}
	}
	for i := range ops {
		ops[i].Result = floodgate.Result{}
		ops[i].Err = nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	err := s.inner.Decide(cctx, ops)
	timedOut := cctx.Err() != nil
	cancel()
	out := s.classify(ctx, ops, err)
	if out == failure {
		s.failed.Add(1)
		if timedOut {
			s.timeouts.Add(1)
		}
	}
	if probe {
		s.endProbe(out, err)
		return err
	}
	switch out {
	case success:
		if s.run.Load() != 0 {
			s.run.Store(0)
		}
	case failure:
		if s.run.Add(1) >= s.failures {
			s.trip(err)
		}
	}
	return err
}

// classify tells whether a call decided anything.
func (s *Store) classify(ctx context.Context, ops []floodgate.Op, err error) outcome {
	if err == nil {
		return success
	}
	failed := false
	for i := range ops {
		op := &ops[i]
		switch {
		case op.Err == nil && op.Result.Limit != (floodgate.Limit{}):
			return success
		case op.Err != nil && !errors.Is(op.Err, floodgate.ErrInvalid):
			failed = true
		}
	}
	if ctx.Err() != nil {
		// The caller gave up: says nothing about the store.
		return neutral
	}
	if !failed && !errors.Is(err, floodgate.ErrInvalid) {
		// A whole-batch error with no op marked.
		failed = true
	}
	if failed {
		return failure
	}
	return neutral
}

// admitProbe decides whether a call may pass while the circuit is not
// closed: it may when it is the probe after the cooldown.
func (s *Store) admitProbe() (probe, ok bool) {
	s.mu.Lock()
	st := State(s.state.Load())
	switch {
	case st == Closed:
		s.mu.Unlock()
		return false, true
	case s.probing:
		s.mu.Unlock()
		return false, false
	case st == Open && time.Now().UnixNano()-s.openedAt.Load() < int64(s.cooldown):
		s.mu.Unlock()
		return false, false
	}
	s.probing = true
	s.state.Store(int32(HalfOpen))
	s.mu.Unlock()
	if st != HalfOpen {
		s.changed(st, HalfOpen, nil)
	}
	return true, true
}

// endProbe closes or reopens the circuit after a probe.
func (s *Store) endProbe(out outcome, err error) {
	s.mu.Lock()
	s.probing = false
	var to State
	switch out {
	case success:
		to = Closed
		s.run.Store(0)
	case failure:
		to = Open
		s.openedAt.Store(time.Now().UnixNano())
	default:
		// The probe's caller left: the next call probes again.
		s.mu.Unlock()
		return
	}
	s.state.Store(int32(to))
	s.mu.Unlock()
	s.changed(HalfOpen, to, err)
}

// trip opens a closed circuit.
func (s *Store) trip(err error) {
	s.mu.Lock()
	if State(s.state.Load()) != Closed {
		s.mu.Unlock()
		return
	}
	s.state.Store(int32(Open))
	s.openedAt.Store(time.Now().UnixNano())
	s.mu.Unlock()
	s.changed(Closed, Open, err)
}

// changed counts, logs and reports a state change, outside the lock.
func (s *Store) changed(from, to State, err error) {
	switch to {
	case Open:
		s.opened.Add(1)
		s.logger.Warn("store circuit open: decisions follow the failure policy", "from", from.String(), "failures", s.run.Load(), "cooldown", s.cooldown, "err", err)
	case HalfOpen:
		s.halfOpened.Add(1)
		s.logger.Info("store circuit half-open: probing the store", "from", from.String())
	case Closed:
		s.closed.Add(1)
		s.logger.Info("store circuit closed: the store answers again", "from", from.String())
	}
	if s.onChange != nil {
		s.onChange(from, to)
	}
}
