package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

const policyConfig = `
domain: p
descriptors:
  - key: open
    on_store_error: fail_open
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: closed
    on_store_error: fail_closed
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: local
    on_store_error: local
    rate_limits:
      - {unit: minute, requests_per_unit: 8}
      - {requests_per_unit: 100, unit: day}
  - key: shadow
    shadow_mode: true
    on_store_error: fail_closed
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: none
    rate_limit: {unit: minute, requests_per_unit: 3}
`

func policyEngine(t *testing.T, opts engine.Options) (*engine.Engine, *countingStore) {
	t.Helper()
	set, err := rules.Parse("policy.yaml", []byte(policyConfig))
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: memory.New(memory.Options{})}
	cs.fail = errors.New("connection refused")
	e := engine.NewWithOptions(cs, engine.Static(set), opts)
	t.Cleanup(func() { e.Close(); cs.Store.Close() })
	return e, cs
}

func TestFailurePolicies(t *testing.T) {
	live := 4
	e, _ := policyEngine(t, engine.Options{Instances: func() int { return live }})
	ctx := context.Background()
	decide := func(key string) engine.Status {
		t.Helper()
		sts, _, err := e.DecideAt(ctx, at, "p", [][]rules.Entry{d(key, "x")}, nil)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		return sts[0]
	}
	for i := 0; i < 10; i++ {
		if st := decide("open"); st.Code != engine.OK || !st.Result.Allowed || st.Policy != rules.FailOpen || st.StoreErr == nil {
			t.Fatalf("fail_open: %+v", st)
		}
		st := decide("closed")
		if st.Code != engine.OverLimit || st.Policy != rules.FailClosed || st.Result.RetryAfter != engine.DefaultFailClosedRetryAfter || st.Result.Limit.Quota != 3 {
			t.Fatalf("fail_closed: %+v", st)
		}
		if st := decide("shadow"); st.Code != engine.OK || !st.ShadowDenied || st.Policy != rules.FailClosed {
			t.Fatalf("shadow fail_closed: %+v", st)
		}
	}
	// local: 8 per minute over 4 instances is 2 here.
	allowed := 0
	for i := 0; i < 10; i++ {
		st := decide("local")
		if st.Policy != rules.FailLocal || !st.Decided {
			t.Fatalf("local: %+v", st)
		}
		if st.Result.Allowed {
			allowed++
		}
		if st.Result.Limit.Quota != 8 || len(st.Each) != 2 || st.Each[1].Limit.Quota != 100 || st.Unit != rules.Minute {
			t.Fatalf("local result names the rule's limits: %+v", st)
		}
	}
	if allowed != 2 {
		t.Errorf("local admitted %d of 10 with a share of 8/4, want 2", allowed)
	}
	if _, _, err := e.DecideAt(ctx, at, "p", [][]rules.Entry{d("none", "x")}, nil); !errors.Is(err, engine.ErrStore) {
		t.Errorf("rule without a policy and no default: %v, want ErrStore", err)
	}
	got := e.Stats()
	want := engine.Stats{StoreErrors: 41, FailOpen: 10, FailClosed: 20, LocalAllowed: 2, LocalDenied: 8, Unhandled: 1}
	if got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

func TestDefaultPolicy(t *testing.T) {
	e, cs := policyEngine(t, engine.Options{OnStoreError: rules.FailOpen})
	sts, code, err := e.DecideAt(context.Background(), at, "p", [][]rules.Entry{d("none", "x"), d("closed", "x")}, nil)
	if err != nil || code != engine.OverLimit || sts[0].Policy != rules.FailOpen || sts[1].Policy != rules.FailClosed {
		t.Fatalf("%v %+v %v", code, sts, err)
	}
	// The store works again: its decisions, no policy.
	cs.fail = nil
	sts, _, err = e.DecideAt(context.Background(), at, "p", [][]rules.Entry{d("none", "x")}, nil)
	if err != nil || sts[0].Policy != rules.FailureDefault || sts[0].Result.Remaining != 2 {
		t.Fatalf("%+v %v", sts, err)
	}
	// A cancelled context is the caller's error, not the store's.
	cs.fail = context.Canceled
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := e.DecideAt(ctx, at, "p", [][]rules.Entry{d("none", "x")}, nil); !errors.Is(err, engine.ErrStore) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestShare(t *testing.T) {
	for _, c := range []struct {
		l    floodgate.Limit
		n    int
		want int64
	}{
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 100, Window: time.Minute}, 4, 25},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Minute}, 4, 3},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 3, Window: time.Minute}, 10, 1},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 3, Window: time.Minute}, 0, 3},
	} {
		if got := engine.Share(c.l, c.n); got.Quota != c.want {
			t.Errorf("Share(%v, %d) quota %d, want %d", c.l, c.n, got.Quota, c.want)
		}
	}
	tb := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 100, Window: time.Second, Burst: 50}
	if got := engine.Share(tb, 3); got.Quota != 34 || got.Burst != 17 {
		t.Errorf("token bucket share %v", got)
	}
}
