package floodgate

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Store keeps the state of keys and decides operations against it
// atomically. Implementations: store/memory (in-process, the default) and
// store/redis (shared by every instance).
//
// Decide takes a batch so that a store can answer many operations in one
// round trip. It sets every op's Result or Err, and returns the first op
// error (or a whole-batch error such as a cancelled context), nil when every
// op was decided. Each op is atomic on its own: all its limits admit and are
// consumed together, or none is. Ops of one batch are decided in order.
type Store interface {
	Decide(ctx context.Context, ops []Op) error
	Close() error
}

// Op is one operation on one key, as a [Store] decides it.
type Op struct {
	// Key identifies the client (or whatever is limited). 1 to MaxKeyLen bytes.
	Key string
	// Limits all apply to Key. A request passes only if every limit admits
	// it, and a denial consumes nothing from any of them.
	Limits []Limit
	// Cost is the units consumed if admitted; 0 peeks without consuming.
	Cost int64
	// Lease names the lease of Concurrency limits: acquiring a held lease
	// renews it. Empty acquires an anonymous lease that only expires.
	Lease string
	// Release, when true, releases Lease from the op's Concurrency limits
	// instead of acquiring; Result.Allowed then reports whether it was held.
	Release bool
	// Now, when non-zero, is the instant to decide at, in microseconds since
	// the Unix epoch, in place of the store's clock. Tests use it to feed every
	// store the same events; production leaves it zero.
	Now int64

	// Each, when it has one element per limit, receives each limit's own
	// result. Optional.
	Each []Result
	// Result is the combined result, set by the store.
	Result Result
	// Err is set by the store when no decision could be made for this op.
	Err error
}

// Check validates the op's key, cost and limits, with an error wrapping
// [ErrInvalid] that names what is wrong.
func (op *Op) Check() error {
	if err := ValidateKey(op.Key); err != nil {
		return err
	}
	if err := ValidateCost(op.Cost); err != nil {
		return err
	}
	if op.Now < 0 {
		return fmt.Errorf("floodgate: key %q: instant %d µs: %w: want 0 (the store's clock) or a time after 1970", op.Key, op.Now, ErrInvalid)
	}
	if len(op.Limits) == 0 {
		return fmt.Errorf("floodgate: key %q: no limits: %w", op.Key, ErrInvalid)
	}
	for i, l := range op.Limits {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("limits[%d]: %w", i, err)
		}
	}
	return nil
}

// Apply decides op at now against states, which hold the state of each of
// op.Limits in order. It is the whole decision of one op, shared by the
// stores that keep state in Go: when every limit admits, states are replaced
// by their new values; otherwise they are left unchanged. It sets op.Result
// (and op.Each) and reports whether states changed.
func Apply(op *Op, states []State, now int64) bool {
	each := op.Each
	if len(each) != len(op.Limits) {
		each = nil
	}
	if op.Release {
		return applyRelease(op, states, now, each)
	}
	if len(op.Limits) == 1 {
		// The common case, without a second pass.
		next, r := op.Limits[0].Acquire(states[0], now, op.Cost, op.Lease)
		op.Result = r
		if each != nil {
			each[0] = r
		}
		if r.Allowed && op.Cost > 0 {
			states[0] = next
			return true
		}
		return false
	}
	var acc Result
	allowed := true
	for i, l := range op.Limits {
		_, r := l.Acquire(states[i], now, op.Cost, op.Lease)
		if !r.Allowed {
			allowed = false
		}
		if each != nil {
			each[i] = r
		}
		acc = Combine(acc, r, i == 0)
	}
	if allowed && op.Cost > 0 {
		for i, l := range op.Limits {
			states[i], _ = l.Acquire(states[i], now, op.Cost, op.Lease)
		}
		op.Result = acc
		return true
	}
	if !allowed && op.Cost > 0 {
		// Nothing is consumed: limits that would have admitted are reported as
		// they stand, not as if they had been charged.
		acc = Result{}
		for i, l := range op.Limits {
			_, cur := l.Acquire(states[i], now, op.Cost, op.Lease)
			if cur.Allowed {
				_, now0 := l.current(states[i], now)
				cur.Remaining, cur.ResetAfter = now0.Remaining, now0.ResetAfter
			}
			if each != nil {
				each[i] = cur
			}
			acc = Combine(acc, cur, i == 0)
		}
	}
	op.Result = acc
	return false
}

func applyRelease(op *Op, states []State, now int64, each []Result) bool {
	changed, held := false, false
	var acc Result
	for i, l := range op.Limits {
		if l.Algorithm == Concurrency {
			var found bool
			var next State
			next, found = Release(states[i], now, op.Lease)
			if found || len(next.Events) != len(states[i].Events) {
				states[i], changed = next, true
			}
			held = held || found
		}
		_, r := l.current(states[i], now)
		r.Allowed, r.Limit = true, l
		if each != nil {
			each[i] = r
		}
		acc = Combine(acc, r, i == 0)
	}
	acc.Allowed = held
	op.Result = acc
	return changed
}

// ErrClosed is returned by a store used after Close.
var ErrClosed = errors.New("floodgate: store closed")

// Resetter is a [Store] that can forget a key's state. Reset removes the
// state key keeps under each of limits, so that its next decision starts
// from a fresh state: a full quota, a full bucket, no leases held. Resetting
// a key that holds no state is not an error. Only the key's own state is
// removed: a store that counts keys past its capacity together (the memory
// store's overflow states) leaves those shared counts alone, and while it is
// full the reset key's next decisions are counted with them, as any new
// key's are.
type Resetter interface {
	Reset(ctx context.Context, key string, limits []Limit) error
}

// A store that wraps another (a cache, a batcher, a circuit breaker, a
// metrics recorder) implements Unwrap returning the store it wraps, so that
// [Reset] reaches the store holding the state.
type wrapper interface {
	Unwrap() Store
}

// ErrNoReset is returned by [Reset] for a store that cannot forget keys.
var ErrNoReset = errors.New("floodgate: the store cannot reset keys")

// Reset forgets key's state under limits in st: the first store that
// implements [Resetter], st itself or one it wraps (see Unwrap), does it.
// It validates key and limits first (an error wrapping [ErrInvalid]) and
// returns an error wrapping [ErrNoReset] when no store in the chain resets.
func Reset(ctx context.Context, st Store, key string, limits []Limit) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if len(limits) == 0 {
		return fmt.Errorf("floodgate: key %q: no limits: %w", key, ErrInvalid)
	}
	for i, l := range limits {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("limits[%d]: %w", i, err)
		}
	}
	for st != nil {
		if r, ok := st.(Resetter); ok {
			return r.Reset(ctx, key, limits)
		}
		w, ok := st.(wrapper)
		if !ok {
			break
		}
		st = w.Unwrap()
	}
	return fmt.Errorf("floodgate: key %q: %w", key, ErrNoReset)
}

// UnixMicro returns t as microseconds since the Unix epoch, the unit of
// [Op.Now] and of [State] times.
func UnixMicro(t time.Time) int64 { return t.UnixMicro() }
