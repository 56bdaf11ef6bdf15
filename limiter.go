package floodgate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
)

// Limiter asks a [Store] for decisions. It is safe for concurrent use when
// its store is (every store in this module is). The zero value has no store
// and answers every call with an error; use [New].
type Limiter struct {
	store Store
}

// New returns a Limiter deciding with store.
func New(store Store) *Limiter { return &Limiter{store: store} }

// Store returns the limiter's store.
func (l *Limiter) Store() Store { return l.store }

// Allow decides a request of cost 1 for key against limits. All limits must
// admit it; a denial consumes nothing.
func (l *Limiter) Allow(ctx context.Context, key string, limits ...Limit) (Result, error) {
	return l.AllowN(ctx, key, 1, limits...)
}

// AllowN decides a request of the given cost for key against limits.
// Cost 0 peeks, as [Limiter.Peek] does.
func (l *Limiter) AllowN(ctx context.Context, key string, cost int64, limits ...Limit) (Result, error) {
	ops := [1]Op{{Key: key, Limits: limits, Cost: cost}}
	if err := l.do(ctx, ops[:]); err != nil {
		return Result{}, err
	}
	return ops[0].Result, nil
}

// Peek reports what a request of cost 1 would get, without consuming
// anything.
func (l *Limiter) Peek(ctx context.Context, key string, limits ...Limit) (Result, error) {
	return l.AllowN(ctx, key, 0, limits...)
}

// Lease is a held unit (or several) of a Concurrency limit. Release it when
// the work is done; if its holder dies, it expires after the limit's Window.
type Lease struct {
	Key    string
	ID     string
	Limit  Limit
	Result Result
}

// Acquire takes cost units of a Concurrency limit for key. When the result is
// denied, the returned lease holds nothing and needs no release.
func (l *Limiter) Acquire(ctx context.Context, key string, limit Limit, cost int64) (Lease, error) {
	if limit.Algorithm != Concurrency {
		return Lease{}, fmt.Errorf("floodgate: Acquire on a %v limit: %w: want concurrency", limit.Algorithm, ErrInvalid)
	}
	id := strconv.FormatUint(rand.Uint64(), 36)
	ops := [1]Op{{Key: key, Limits: []Limit{limit}, Cost: cost, Lease: id}}
	if err := l.do(ctx, ops[:]); err != nil {
		return Lease{}, err
	}
	return Lease{Key: key, ID: id, Limit: limit, Result: ops[0].Result}, nil
}

// Renew moves a held lease's expiry to now + Window. The result is denied
// when the lease had already expired and its units are taken by others.
func (l *Limiter) Renew(ctx context.Context, lease Lease) (Result, error) {
	ops := [1]Op{{Key: lease.Key, Limits: []Limit{lease.Limit}, Cost: 1, Lease: lease.ID}}
	if err := l.do(ctx, ops[:]); err != nil {
		return Result{}, err
	}
	return ops[0].Result, nil
}

// Release frees a lease. Releasing a lease that expired or was never granted
// is not an error; the result's Allowed reports whether it was still held.
func (l *Limiter) Release(ctx context.Context, lease Lease) (Result, error) {
	ops := [1]Op{{Key: lease.Key, Limits: []Limit{lease.Limit}, Lease: lease.ID, Release: true}}
	if err := l.do(ctx, ops[:]); err != nil {
		return Result{}, err
	}
	return ops[0].Result, nil
}

func (l *Limiter) do(ctx context.Context, ops []Op) error {
	if l == nil || l.store == nil {
		return fmt.Errorf("floodgate: limiter has no store")
	}
	if err := l.store.Decide(ctx, ops); err != nil {
		return err
	}
	return ops[0].Err
}
