package engine_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

const leaseConfig = `
domain: l
descriptors:
  - key: uploads
    on_store_error: local
    rate_limits:
      - {requests_per_unit: 2, window: 10m, algorithm: concurrency}
      - {requests_per_unit: 100, unit: day}
  - key: ip
    rate_limit: {unit: minute, requests_per_unit: 1}
`

func leaseEngine(t *testing.T, fail error) (*engine.Engine, *countingStore) {
	t.Helper()
	set, err := rules.Parse("lease.yaml", []byte(leaseConfig))
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: memory.New(memory.Options{}), fail: fail}
	e := engine.NewWithOptions(cs, engine.Static(set), engine.Options{})
	t.Cleanup(func() { e.Close(); cs.Store.Close() })
	return e, cs
}

// A concurrency rule counts requests in flight: each admitted descriptor
// holds a lease of its own until Release, and a released lease frees its
// unit at once.
func TestLeases(t *testing.T) {
	for _, c := range []struct {
		name   string
		fail   error
		policy rules.FailurePolicy
	}{
		{"store", nil, rules.FailureDefault},
		{"local policy", errors.New("connection refused"), rules.FailLocal},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, _ := leaseEngine(t, c.fail)
			ctx := context.Background()
			decide := func(descs ...[]rules.Entry) ([]engine.Status, engine.Code) {
				t.Helper()
				sts, code, err := e.DecideWithLeases(ctx, at, "l", descs, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, st := range sts {
					if st.Policy != c.policy {
						t.Fatalf("decided by %q, want %q", st.Policy, c.policy)
					}
				}
				return sts, code
			}
			a, _ := decide(d("uploads", "u"))
			b, _ := decide(d("uploads", "u"))
			if a[0].Lease == "" || b[0].Lease == "" || a[0].Lease == b[0].Lease {
				t.Fatalf("leases %q and %q: want two distinct names", a[0].Lease, b[0].Lease)
			}
			full, code := decide(d("uploads", "u"))
			if code != engine.OverLimit || full[0].Lease != "" {
				t.Fatalf("a third upload in flight of 2: %v, lease %q; want OVER_LIMIT without a lease", code, full[0].Lease)
			}
			if err := e.Release(ctx, a); err != nil {
				t.Fatal(err)
			}
			again, code := decide(d("uploads", "u"))
			if code != engine.OK || again[0].Lease == "" {
				t.Fatalf("after a release: %v, lease %q; want OK with a lease", code, again[0].Lease)
			}
			// Releasing twice, or a status with no lease, changes nothing.
			if err := e.Release(ctx, a); err != nil {
				t.Fatal(err)
			}
			if _, code := decide(d("uploads", "u")); code != engine.OverLimit {
				t.Fatalf("a second release of the same lease freed a unit: %v", code)
			}
			// Another descriptor without a concurrency limit holds no lease;
			// a peek (hits 0) takes none.
			if c.fail == nil {
				sts, _, err := e.DecideWithLeases(ctx, at, "l", [][]rules.Entry{d("ip", "x"), d("uploads", "v")}, []int64{1, 0})
				if err != nil {
					t.Fatal(err)
				}
				if sts[0].Lease != "" || sts[1].Lease != "" {
					t.Errorf("leases %q, %q: want none for a rate limit and a peek", sts[0].Lease, sts[1].Lease)
				}
			}
		})
	}
}

// A release the store cannot make is an error wrapping ErrStore.
func TestReleaseError(t *testing.T) {
	e, cs := leaseEngine(t, nil)
	ctx := context.Background()
	sts, _, err := e.DecideWithLeases(ctx, at, "l", [][]rules.Entry{d("uploads", "u")}, nil)
	if err != nil || sts[0].Lease == "" {
		t.Fatalf("%v, lease %q", err, sts[0].Lease)
	}
	cs.fail = floodgate.ErrClosed
	if err := e.Release(ctx, sts); !errors.Is(err, engine.ErrStore) || !errors.Is(err, floodgate.ErrClosed) {
		t.Errorf("release on a failing store: %v, want ErrStore and the store's error", err)
	}
}

// With Decide (Envoy's API, POST /json) no lease is named: nobody
// would release it, and an anonymous lease costs the store less.
func TestNoLeaseWithoutRelease(t *testing.T) {
	e, _ := leaseEngine(t, nil)
	sts, _, err := e.DecideAt(context.Background(), at, "l", [][]rules.Entry{d("uploads", "u")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sts[0].Code != engine.OK || sts[0].Lease != "" {
		t.Errorf("with Decide: %v, lease %q; want OK and no lease", sts[0].Code, sts[0].Lease)
	}
}

// applyThenFail decides ops in the store, then loses the answer: the
// store holds what it granted, the caller sees an error. Releases pass.
type applyThenFail struct {
	floodgate.Store
	failing atomic.Bool
}

func (s *applyThenFail) Decide(ctx context.Context, ops []floodgate.Op) error {
	err := s.Store.Decide(ctx, ops)
	if !s.failing.Load() || ops[0].Release {
		return err
	}
	lost := errors.New("connection reset after the write")
	for i := range ops {
		ops[i].Err = lost
	}
	return lost
}

// Leases the store granted while its answer was lost are given back in the
// background: once the store answers again, the client is not locked out
// for the lease's window.
func TestLostLeasesReleased(t *testing.T) {
	set, err := rules.Parse("lease.yaml", []byte(leaseConfig))
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.New(memory.Options{})
	defer mem.Close()
	st := &applyThenFail{Store: mem}
	st.failing.Store(true)
	e := engine.NewWithOptions(st, engine.Static(set), engine.Options{})
	defer e.Close()
	ctx := context.Background()
	for range 2 {
		sts, _, err := e.DecideWithLeases(ctx, at, "l", [][]rules.Entry{d("uploads", "u")}, nil)
		if err != nil || sts[0].Policy != rules.FailLocal || sts[0].Code != engine.OK {
			t.Fatalf("while the answers are lost: %+v, %v; want OK by the local policy", sts, err)
		}
		if err := e.Release(ctx, sts); err != nil {
			t.Fatal(err)
		}
	}
	st.failing.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		sts, _, err := e.DecideWithLeases(ctx, at, "l", [][]rules.Entry{d("uploads", "u")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if sts[0].Policy == rules.FailureDefault && sts[0].Code == engine.OK {
			e.Release(ctx, sts)
			break
		}
		if sts[0].Code == engine.OK {
			e.Release(ctx, sts)
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after the store answers again: %v; the leases granted while its answers were lost were never released", sts[0].Code)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
