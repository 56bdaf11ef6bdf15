// Package batch coalesces concurrent decisions into batched store calls
// (group commit), so that many callers share one round trip to a shared
// store such as Redis.
//
// # How batches form
//
// [Store] wraps a [floodgate.Store]. A caller that finds fewer than
// [Options.MaxInFlight] calls in flight on the inner store and nobody
// waiting sends its own ops at once, in its own goroutine: a lone request
// never waits. Callers that arrive while the inner store is busy queue; when
// a call returns, everything queued (up to [Options.MaxBatch] ops) goes
// together in the next call. Under load, batches grow by themselves to about
// the number of concurrent callers, with no timer. [Options.Window], when
// set, makes the first queued caller wait that long for company before its
// batch is sent.
//
// # Exactness
//
// Batching changes how ops travel, not how they are decided: the inner
// store decides each op atomically on its own, in the order the ops were
// queued (a caller's ops stay contiguous and in order). A strict rule stays
// exact.
//
// # Cancellation
//
// A caller whose context ends while its ops are still queued is removed from
// the queue; its ops are never sent and get the context's error. A caller
// whose context ends after its ops were sent returns the context's error at
// once, but the ops are decided all the same: an admitted op has consumed
// its cost, exactly as when an unbatched call is cancelled after the store
// ran it. The other callers of the batch are not affected. The inner call
// runs under a context that no single caller can cancel, and that ends at
// the latest deadline among the batch's callers (none if one has none).
// [Options.MaxWait] ends a caller's wait the same way, with [ErrMaxWait].
package batch

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate/floodgate"
)

// Defaults of [Options].
const (
	// DefaultMaxBatch is the default Options.MaxBatch.
	DefaultMaxBatch = 128
	// DefaultMaxInFlight is the default Options.MaxInFlight: two calls in
	// flight let the store work on one batch while the next forms and the
	// last one's results are delivered.
	DefaultMaxInFlight = 2
)

// Options configure a [Store]. The zero value is valid: every field has a
// default.
type Options struct {
	// Window is how long a batch that starts with queued callers waits for
	// more before it is sent. Default 0: send at once what is waiting, so a
	// lone caller never waits and batches form only from callers that arrive
	// while a call is in flight.
	Window time.Duration
	// MaxBatch is the most ops one inner call carries. A caller's ops are
	// never split, so a caller with more ops than MaxBatch goes alone.
	// Default [DefaultMaxBatch] (128).
	MaxBatch int
	// MaxInFlight is the most inner calls in flight at once. Default
	// [DefaultMaxInFlight] (2). With 1, every caller that arrives while a
	// call is in flight waits for the next batch, which gives the largest
	// batches but leaves the store idle while results travel back and the
	// next batch is sent.
	MaxInFlight int
	// MaxWait, when set, bounds how long a caller that could not send its
	// ops at once waits for their results, queued or sent: past it, Decide
	// returns [ErrMaxWait] for its ops, as if its context had ended (queued
	// ops are never sent; sent ones are decided all the same). Set it to the
	// inner store's own deadline so that queueing behind a slow call does not
	// add a second deadline to a decision. The inner call's context is not
	// affected. Default 0: only the caller's context bounds the wait.
	MaxWait time.Duration
}

// ErrMaxWait is the error of the ops of a caller that waited
// [Options.MaxWait] for its results. It wraps [context.DeadlineExceeded].
var ErrMaxWait = fmt.Errorf("batch: results not ready within the longest wait: %w", context.DeadlineExceeded)

// Waiter states.
const (
	stQueued     int32 = iota // in Store.queue
	stSent                    // taken into a batch being decided
	stDelivering              // results being copied back
	stAbandoned               // caller left after its ops were sent
)

// waiter is one caller's Decide.
type waiter struct {
	ctx   context.Context
	ops   []floodgate.Op
	state atomic.Int32
	done  chan struct{}
	// off is the index of the waiter's first op in the batch's ops.
	off int
}

// Store coalesces concurrent Decide calls into batched Decide calls on an
// inner store. It is safe for concurrent use. Create it with [New]; the zero
// value is not usable.
type Store struct {
	inner floodgate.Store
	opts  Options

	mu       sync.Mutex
	queue    []*waiter
	inflight int  // inner calls in flight, including a scheduled flusher
	closed   bool // set by Close under mu
	wg       sync.WaitGroup

	calls atomic.Int64 // inner Decide calls
	ops   atomic.Int64 // ops sent in them
}

var _ floodgate.Store = (*Store)(nil)

// New returns a Store batching calls to inner, which it owns: [Store.Close]
// closes it.
func New(inner floodgate.Store, opts Options) *Store {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Window < 0 {
		opts.Window = 0
	}
	if opts.MaxWait < 0 {
		opts.MaxWait = 0
	}
	return &Store{inner: inner, opts: opts}
}

// Stats reports the inner Decide calls made so far and the ops they carried;
// ops/calls is the mean batch size.
func (s *Store) Stats() (calls, ops int64) { return s.calls.Load(), s.ops.Load() }

// Decide implements [floodgate.Store]: it decides ops, alone or together
// with other callers' ops, and sets each op's Result or Err. It returns the
// first op error, or the context's error when ctx ended before the ops were
// decided (see the package documentation for what happens to ops already
// sent). After [Store.Close] every op gets [floodgate.ErrClosed].
func (s *Store) Decide(ctx context.Context, ops []floodgate.Op) error {
	if len(ops) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		// Not queued: a caller whose context has ended before the call
		// knows that nothing reached the store.
		return failAll(ops, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		for i := range ops {
			ops[i].Err = floodgate.ErrClosed
		}
		return floodgate.ErrClosed
	}
	if s.opts.Window == 0 && s.inflight < s.opts.MaxInFlight && len(s.queue) == 0 {
		// Nobody waiting and room in flight: send now, from this goroutine,
		// with the caller's own ops and context.
		s.inflight++
		s.wg.Add(1)
		s.mu.Unlock()
		err := s.call(ctx, ops)
		s.finish()
		return err
	}
	w := &waiter{ctx: ctx, ops: ops, done: make(chan struct{})}
	s.queue = append(s.queue, w)
	if s.inflight < s.opts.MaxInFlight {
		// Only with a Window: start a flusher that waits for company.
		s.inflight++
		s.wg.Add(1)
		go s.flush(true)
	}
	s.mu.Unlock()

	var timeout <-chan time.Time
	if s.opts.MaxWait > 0 {
		t := time.NewTimer(s.opts.MaxWait)
		defer t.Stop()
		timeout = t.C
	}
	var err error
	select {
	case <-w.done:
		return firstErr(ops)
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout:
		err = ErrMaxWait
	}
	s.mu.Lock()
	if w.state.Load() == stQueued {
		s.remove(w)
		s.mu.Unlock()
		return failAll(ops, err)
	}
	s.mu.Unlock()
	if w.state.CompareAndSwap(stSent, stAbandoned) {
		return failAll(ops, err)
	}
	// The results are being delivered: take them.
	<-w.done
	return firstErr(ops)
}

// failAll gives every op err, the reason its caller stopped waiting.
func failAll(ops []floodgate.Op, err error) error {
	for i := range ops {
		ops[i].Err = err
	}
	return err
}

// firstErr returns the first op error.
func firstErr(ops []floodgate.Op) error {
	for i := range ops {
		if ops[i].Err != nil {
			return ops[i].Err
		}
	}
	return nil
}

// remove takes w out of the queue. s.mu is held.
func (s *Store) remove(w *waiter) {
	for i, q := range s.queue {
		if q == w {
			copy(s.queue[i:], s.queue[i+1:])
			s.queue[len(s.queue)-1] = nil
			s.queue = s.queue[:len(s.queue)-1]
			return
		}
	}
}

// call makes one inner call and counts it.
func (s *Store) call(ctx context.Context, ops []floodgate.Op) error {
	s.calls.Add(1)
	s.ops.Add(int64(len(ops)))
	return s.inner.Decide(ctx, ops)
}

// finish ends an inner call made by a caller: if callers queued meanwhile,
// a flusher takes over the slot in flight to send them.
func (s *Store) finish() {
	s.mu.Lock()
	if len(s.queue) > 0 {
		s.mu.Unlock()
		go s.flush(false)
		return
	}
	s.inflight--
	s.mu.Unlock()
	s.wg.Done()
}

// flush sends queued batches until the queue is empty, then gives back its
// slot in flight. It owns one slot and one count of s.wg. wait makes the
// first batch wait Options.Window.
func (s *Store) flush(wait bool) {
	defer s.wg.Done()
	var buf []floodgate.Op
	var each []floodgate.Result
	for {
		if wait && s.opts.Window > 0 {
			time.Sleep(s.opts.Window)
		}
		wait = false
		s.mu.Lock()
		batch := s.take()
		if len(batch) == 0 {
			s.inflight--
			s.mu.Unlock()
			return
		}
		// Copied under the lock: a caller that gives up takes the lock
		// before it writes its ops' errors.
		buf, each = gather(batch, buf[:0], each[:0])
		s.mu.Unlock()
		buf, each = s.send(batch, buf, each)
	}
}

// take removes the next batch from the queue and marks its waiters sent.
// s.mu is held.
func (s *Store) take() []*waiter {
	n, k := 0, 0
	for k < len(s.queue) {
		m := len(s.queue[k].ops)
		if k > 0 && n+m > s.opts.MaxBatch {
			break
		}
		n += m
		k++
	}
	batch := make([]*waiter, k)
	copy(batch, s.queue[:k])
	rest := copy(s.queue, s.queue[k:])
	clear(s.queue[rest:])
	s.queue = s.queue[:rest]
	for _, w := range batch {
		w.state.Store(stSent)
	}
	return batch
}

// gather copies the ops of batch's waiters into buf, with room for their
// per-limit results in each, and records where each waiter's ops start.
// s.mu is held.
func gather(batch []*waiter, buf []floodgate.Op, each []floodgate.Result) ([]floodgate.Op, []floodgate.Result) {
	for _, w := range batch {
		w.off = len(buf)
		for i := range w.ops {
			op := w.ops[i]
			op.Result, op.Err = floodgate.Result{}, nil
			if n := len(op.Each); n > 0 {
				if n == len(op.Limits) {
					start := len(each)
					each = append(each, make([]floodgate.Result, n)...)
					op.Each = each[start:len(each):len(each)]
				} else {
					op.Each = nil
				}
			}
			buf = append(buf, op)
		}
	}
	return buf, each
}

// send decides one batch on buf, the copies of its waiters' ops made by
// gather (a caller that leaves must not see its ops written afterwards),
// then delivers the results to the waiters still there. It returns the
// buffers for reuse.
func (s *Store) send(batch []*waiter, buf []floodgate.Op, each []floodgate.Result) ([]floodgate.Op, []floodgate.Result) {
	var deadline time.Time
	bounded := true
	for _, w := range batch {
		if d, ok := w.ctx.Deadline(); !ok {
			bounded = false
		} else if d.After(deadline) {
			deadline = d
		}
	}
	// The batch's context carries the first caller's values, but no caller
	// can cancel it.
	ctx := context.WithoutCancel(batch[0].ctx)
	cancel := context.CancelFunc(func() {})
	if bounded {
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	err := s.call(ctx, buf)
	cancel()
	if err != nil && firstErr(buf) == nil {
		// An error about the whole call: every op shares it.
		for i := range buf {
			buf[i].Err = err
		}
	}
	for _, w := range batch {
		if !w.state.CompareAndSwap(stSent, stDelivering) {
			continue // abandoned
		}
		for i := range w.ops {
			got := &buf[w.off+i]
			dst := &w.ops[i]
			dst.Result, dst.Err = got.Result, got.Err
			if got.Each != nil {
				copy(dst.Each, got.Each)
			}
		}
		close(w.done)
	}
	clear(buf)
	return buf, each
}

// Unwrap returns the inner store, for [floodgate.Reset]: a reset is not
// batched.
func (s *Store) Unwrap() floodgate.Store { return s.inner }

// Close waits for queued and in-flight calls to finish, then closes the
// inner store. Decide after Close returns [floodgate.ErrClosed]. Close is
// idempotent; later calls return nil.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
	if err := s.inner.Close(); err != nil {
		return fmt.Errorf("batch: closing the inner store: %w", err)
	}
	return nil
}
