package floodgate_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/storetest"
)

func newReference(t *testing.T) floodgate.Store { return storetest.NewReferenceStore() }

// The core, through Apply, passes the conformance suite.
func TestConformance(t *testing.T) {
	storetest.Run(t, newReference)
}

// The core agrees with brute-force reference models of every algorithm over
// random event sequences.
func TestProperties(t *testing.T) {
	storetest.RunProperties(t, newReference, 3000)
}

// A state that Expired reports as expired decides exactly as the zero State
// does, so a store may forget it; and Decide never modifies its input.
func TestExpiredIsFresh(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 1))
	const base = 1704067200 * 1_000_000
	for _, a := range floodgate.Algorithms {
		for range 20 {
			l := floodgate.Limit{
				Algorithm: a,
				Quota:     1 + rng.Int64N(10),
				Window:    []time.Duration{time.Millisecond, time.Second, 1500 * time.Millisecond, time.Minute}[rng.IntN(4)],
			}
			if (a == floodgate.TokenBucket || a == floodgate.GCRA) && rng.IntN(2) == 0 {
				l.Burst = 1 + rng.Int64N(20)
			}
			w := l.Window.Microseconds()
			var st floodgate.State
			now := int64(base + rng.Int64N(w))
			for range 200 {
				now += []int64{0, 1, rng.Int64N(w), w, rng.Int64N(3 * w)}[rng.IntN(5)]
				cost := rng.Int64N(l.Capacity() + 2)
				lease := []string{"", "x", "y"}[rng.IntN(3)]
				if l.Expired(st, now) {
					if exp := l.ExpiresAt(st); exp > now {
						t.Fatalf("seed %d: %v: Expired at %d but ExpiresAt %d", seed, l, now, exp)
					}
					_, got := l.Acquire(st, now, cost, lease)
					_, fresh := l.Acquire(floodgate.State{}, now, cost, lease)
					if got != fresh {
						t.Fatalf("seed %d: %v: expired state %+v at %d, cost %d:\n got %+v\nfresh %+v", seed, l, st, now, cost, got, fresh)
					}
				}
				before := st
				before.Events = slices.Clone(st.Events)
				next, r := l.Acquire(st, now, cost, lease)
				if !reflect.DeepEqual(before, st) || !slices.Equal(before.Events, st.Events) {
					t.Fatalf("seed %d: %v: Acquire modified its input state", seed, l)
				}
				if r.Allowed && cost > 0 {
					st = next
				}
			}
		}
	}
}

// Decisions stay sane at the numeric bounds: the largest quota, the longest
// window, the largest cost.
func TestBounds(t *testing.T) {
	const now = 1704067200 * 1_000_000
	for _, a := range floodgate.Algorithms {
		for _, l := range []floodgate.Limit{
			{Algorithm: a, Quota: floodgate.MaxQuota, Window: floodgate.MinWindow},
			{Algorithm: a, Quota: 1, Window: floodgate.MaxWindow},
			{Algorithm: a, Quota: 7, Window: floodgate.MaxWindow - time.Millisecond},
		} {
			if err := l.Validate(); err != nil {
				if a == floodgate.SlidingWindow || a == floodgate.TokenBucket || a == floodgate.GCRA {
					continue // these bound quota × window further
				}
				t.Errorf("%v: %v", l, err)
				continue
			}
			var st floodgate.State
			for i, cost := range []int64{0, 1, l.Capacity(), floodgate.MaxCost, 1} {
				next, r := l.Decide(st, now+int64(i), cost)
				if r.Remaining < 0 || r.Remaining > l.Capacity() || r.ResetAfter < 0 || r.RetryAfter < 0 {
					t.Errorf("%v, cost %d: %s", l, cost, storetest.FormatResult(r))
				}
				if cost > l.Capacity() && r.RetryAfter != floodgate.Never {
					t.Errorf("%v, cost %d above capacity: %s, want RetryAfter Never", l, cost, storetest.FormatResult(r))
				}
				if r.Allowed && cost > 0 {
					st = next
				}
			}
		}
	}
}

func TestValidate(t *testing.T) {
	valid := []floodgate.Limit{
		{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Millisecond},
		{Algorithm: floodgate.FixedWindow, Quota: floodgate.MaxQuota, Window: floodgate.MaxWindow},
		{Algorithm: floodgate.SlidingWindowLog, Quota: 10, Window: 30 * time.Second},
		{Algorithm: floodgate.SlidingWindow, Quota: 1000, Window: 5 * time.Minute},
		{Algorithm: floodgate.TokenBucket, Quota: 100, Window: time.Minute, Burst: 20},
		{Algorithm: floodgate.GCRA, Quota: 3, Window: time.Second, Burst: 1},
		{Algorithm: floodgate.Concurrency, Quota: 5, Window: 36 * time.Hour},
	}
	for _, l := range valid {
		if err := l.Validate(); err != nil {
			t.Errorf("%v: %v", l, err)
		}
	}
	invalid := []struct {
		l    floodgate.Limit
		want string
	}{
		{floodgate.Limit{}, "algorithm"},
		{floodgate.Limit{Algorithm: 7, Quota: 1, Window: time.Second}, "algorithm"},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Window: time.Second}, "quota 0"},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: -1, Window: time.Second}, "quota -1"},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: floodgate.MaxQuota + 1, Window: time.Second}, "quota"},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1}, "window 0s"},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: 999 * time.Microsecond}, "window"},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: floodgate.MaxWindow + time.Millisecond}, "window"},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: 1500 * time.Microsecond}, "whole milliseconds"},
		{floodgate.Limit{Algorithm: floodgate.SlidingWindowLog, Quota: 1, Window: time.Second, Burst: 1}, "burst"},
		{floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 1, Window: time.Second, Burst: -1}, "burst -1"},
		// 2^40 × 60,000 ms exceeds 2^53.
		{floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: floodgate.MaxQuota, Window: time.Minute}, "2^53"},
		// quota 7 per 366 days - 1ms: gcd 1, burst 2^40.
		{floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 7, Window: floodgate.MaxWindow - time.Millisecond, Burst: floodgate.MaxQuota}, "2^52"},
		{floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 1, Window: floodgate.MaxWindow, Burst: floodgate.MaxQuota}, "2^51"},
	}
	for _, c := range invalid {
		err := c.l.Validate()
		if !errors.Is(err, floodgate.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: Validate() = %v, want an ErrInvalid naming %q", c.l, err, c.want)
		}
	}
	for _, cost := range []int64{-1, floodgate.MaxCost + 1} {
		if err := floodgate.ValidateCost(cost); !errors.Is(err, floodgate.ErrInvalid) {
			t.Errorf("ValidateCost(%d) = %v", cost, err)
		}
	}
	for _, cost := range []int64{0, 1, floodgate.MaxCost} {
		if err := floodgate.ValidateCost(cost); err != nil {
			t.Errorf("ValidateCost(%d) = %v", cost, err)
		}
	}
	for _, key := range []string{"", strings.Repeat("k", floodgate.MaxKeyLen+1)} {
		if err := floodgate.ValidateKey(key); !errors.Is(err, floodgate.ErrInvalid) {
			t.Errorf("ValidateKey(%d bytes) = %v", len(key), err)
		}
	}
	if err := floodgate.ValidateKey(strings.Repeat("k", floodgate.MaxKeyLen)); err != nil {
		t.Errorf("ValidateKey(MaxKeyLen bytes) = %v", err)
	}
}

func TestAlgorithmNames(t *testing.T) {
	want := []string{"fixed_window", "sliding_window_log", "sliding_window", "token_bucket", "gcra", "concurrency"}
	for i, a := range floodgate.Algorithms {
		if a.String() != want[i] {
			t.Errorf("%d.String() = %q, want %q", a, a.String(), want[i])
		}
		b, err := floodgate.ParseAlgorithm(want[i])
		if err != nil || b != a {
			t.Errorf("ParseAlgorithm(%q) = %v, %v", want[i], b, err)
		}
		text, err := a.MarshalText()
		if err != nil || string(text) != want[i] {
			t.Errorf("%v.MarshalText() = %q, %v", a, text, err)
		}
		var c floodgate.Algorithm
		if err := c.UnmarshalText(text); err != nil || c != a {
			t.Errorf("UnmarshalText(%q) = %v, %v", text, c, err)
		}
	}
	if _, err := floodgate.ParseAlgorithm("leaky_bucket"); err == nil || !strings.Contains(err.Error(), "leaky_bucket") {
		t.Errorf("ParseAlgorithm(leaky_bucket) = %v, want an error naming it", err)
	}
	if _, err := floodgate.Algorithm(0).MarshalText(); err == nil {
		t.Error("Algorithm(0).MarshalText() succeeded")
	}
}

func TestCapacity(t *testing.T) {
	for _, c := range []struct {
		l    floodgate.Limit
		want int64
	}{
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10}, 10},
		{floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 10}, 10},
		{floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 10, Burst: 3}, 3},
		{floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 10, Burst: 30}, 30},
		{floodgate.Limit{Algorithm: floodgate.Concurrency, Quota: 4}, 4},
	} {
		if got := c.l.Capacity(); got != c.want {
			t.Errorf("%v.Capacity() = %d, want %d", c.l, got, c.want)
		}
	}
}

// The Limiter front passes costs, peeks and leases through to its store.
func TestLimiter(t *testing.T) {
	ctx := context.Background()
	lim := floodgate.New(storetest.NewReferenceStore())
	l := floodgate.Limit{Algorithm: floodgate.SlidingWindowLog, Quota: 2, Window: time.Hour}
	if r, err := lim.Allow(ctx, "k", l); err != nil || !r.Allowed || r.Remaining != 1 {
		t.Fatalf("Allow: %+v, %v", r, err)
	}
	if r, err := lim.Peek(ctx, "k", l); err != nil || !r.Allowed || r.Remaining != 1 {
		t.Fatalf("Peek: %+v, %v", r, err)
	}
	if r, err := lim.AllowN(ctx, "k", 2, l); err != nil || r.Allowed {
		t.Fatalf("AllowN(2): %+v, %v", r, err)
	}
	if _, err := lim.AllowN(ctx, "", 1, l); !errors.Is(err, floodgate.ErrInvalid) {
		t.Fatalf("AllowN with an empty key: %v", err)
	}
	c := floodgate.Limit{Algorithm: floodgate.Concurrency, Quota: 1, Window: time.Hour}
	if _, err := lim.Acquire(ctx, "c", l, 1); !errors.Is(err, floodgate.ErrInvalid) {
		t.Fatalf("Acquire on a sliding log: %v", err)
	}
	lease, err := lim.Acquire(ctx, "c", c, 1)
	if err != nil || !lease.Result.Allowed {
		t.Fatalf("Acquire: %+v, %v", lease, err)
	}
	if second, err := lim.Acquire(ctx, "c", c, 1); err != nil || second.Result.Allowed {
		t.Fatalf("second Acquire: %+v, %v", second, err)
	}
	if r, err := lim.Renew(ctx, lease); err != nil || !r.Allowed {
		t.Fatalf("Renew: %+v, %v", r, err)
	}
	if r, err := lim.Release(ctx, lease); err != nil || !r.Allowed || r.Remaining != 1 {
		t.Fatalf("Release: %+v, %v", r, err)
	}
	if r, err := lim.Release(ctx, lease); err != nil || r.Allowed {
		t.Fatalf("second Release: %+v, %v", r, err)
	}
	var zero floodgate.Limiter
	if _, err := zero.Allow(ctx, "k", l); err == nil {
		t.Fatal("zero Limiter decided")
	}
}
