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

const config = `
domain: test
descriptors:
  - key: ip
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: ip
    value: 10.0.0.1
    rate_limit: {unlimited: true}
  - key: ip
    value: 10.0.0.66
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: api
    rate_limits:
      - {requests_per_unit: 2, window: 30s, algorithm: token_bucket}
      - {requests_per_unit: 100, unit: day}
  - key: k1
    descriptors:
      - key: user
        rate_limit: {name: specific, unit: second, requests_per_unit: 5}
  - key: k2
    descriptors:
      - key: user
        rate_limit: {replaces: [{name: specific}], unit: second, requests_per_unit: 10}
`

// countingStore counts Decide calls and the ops they carry.
type countingStore struct {
	floodgate.Store
	calls, ops atomic.Int64
	fail       error
}

func (s *countingStore) Decide(ctx context.Context, ops []floodgate.Op) error {
	s.calls.Add(1)
	s.ops.Add(int64(len(ops)))
	if s.fail != nil {
		for i := range ops {
			ops[i].Err = s.fail
		}
		return s.fail
	}
	return s.Store.Decide(ctx, ops)
}

func newEngine(t *testing.T) (*engine.Engine, *countingStore) {
	t.Helper()
	set, err := rules.Parse("test.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.New(memory.Options{})
	t.Cleanup(func() { mem.Close() })
	cs := &countingStore{Store: mem}
	return engine.New(cs, engine.Static(set), nil), cs
}

// at is an instant at the start of a minute, so that fixed windows of a
// second and a minute do not roll over during a test.
var at = time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)

func d(kv ...string) []rules.Entry {
	var es []rules.Entry
	for i := 0; i < len(kv); i += 2 {
		es = append(es, rules.Entry{Key: kv[i], Value: kv[i+1]})
	}
	return es
}

func TestLimitCountsAndDenies(t *testing.T) {
	e, cs := newEngine(t)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		sts, code, err := e.DecideAt(ctx, at, "test", [][]rules.Entry{d("ip", "10.0.0.2")}, nil)
		if err != nil || code != engine.OK {
			t.Fatalf("request %d: %v %v", i, code, err)
		}
		st := sts[0]
		if st.Code != engine.OK || !st.Decided || st.Result.Remaining != int64(3-i) || st.Unit != rules.Minute ||
			st.Result.Limit.Quota != 3 || st.Result.ResetAfter != time.Minute || st.Hits != 1 || len(st.Each) != 1 {
			t.Fatalf("request %d: %+v", i, st)
		}
	}
	sts, code, err := e.DecideAt(ctx, at.Add(10*time.Second), "test", [][]rules.Entry{d("ip", "10.0.0.2")}, nil)
	if err != nil || code != engine.OverLimit || sts[0].Code != engine.OverLimit || sts[0].Result.RetryAfter != 50*time.Second {
		t.Fatalf("4th: %v %+v %v", code, sts[0], err)
	}
	if got := cs.calls.Load(); got != 4 {
		t.Errorf("%d store calls for 4 requests", got)
	}
}

func TestUnlimitedNoRuleDeny(t *testing.T) {
	e, cs := newEngine(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		sts, code, err := e.DecideAt(ctx, at, "test", [][]rules.Entry{d("ip", "10.0.0.1"), d("nothing", "x")}, nil)
		if err != nil || code != engine.OK {
			t.Fatalf("%v %v", code, err)
		}
		for j, st := range sts {
			if st.Code != engine.OK || st.Decided {
				t.Errorf("descriptor %d: %+v", j, st)
			}
		}
		if !sts[0].Match.Unlimited || sts[1].Match.Rule != nil {
			t.Errorf("unlimited %v, rule %v", sts[0].Match.Unlimited, sts[1].Match.Rule)
		}
	}
	// Unknown domain: OK, as Envoy's service answers.
	sts, code, err := e.DecideAt(ctx, at, "other", [][]rules.Entry{d("ip", "10.0.0.2")}, nil)
	if err != nil || code != engine.OK || sts[0].Decided {
		t.Errorf("unknown domain: %v %+v %v", code, sts[0], err)
	}
	sts, code, err = e.DecideAt(ctx, at, "test", [][]rules.Entry{d("ip", "10.0.0.66")}, nil)
	if err != nil || code != engine.OverLimit || sts[0].Code != engine.OverLimit || !sts[0].Match.Deny || sts[0].Decided {
		t.Errorf("deny: %v %+v %v", code, sts[0], err)
	}
	if got := cs.calls.Load(); got != 0 {
		t.Errorf("%d store calls; want none for unlimited, no rule, unknown domain and deny", got)
	}
}

func TestShadowMode(t *testing.T) {
	e, _ := newEngine(t)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		sts, code, err := e.DecideAt(ctx, at, "test", [][]rules.Entry{d("shadow", "a")}, nil)
		if err != nil || code != engine.OK || sts[0].Code != engine.OK || !sts[0].Decided {
			t.Fatalf("request %d: %v %+v %v", i, code, sts[0], err)
		}
		if want := i > 1; sts[0].ShadowDenied != want || sts[0].Result.Allowed == want {
			t.Errorf("request %d: ShadowDenied %v Allowed %v, want %v", i, sts[0].ShadowDenied, sts[0].Result.Allowed, want)
		}
	}
}

func TestReplaces(t *testing.T) {
	e, cs := newEngine(t)
	ctx := context.Background()
	req := [][]rules.Entry{d("k1", "a", "user", "u"), d("k2", "b", "user", "u")}
	sts, code, err := e.DecideAt(ctx, at, "test", req, nil)
	if err != nil || code != engine.OK {
		t.Fatal(code, err)
	}
	if !sts[0].Match.Replaced || sts[0].Decided || sts[1].Result.Limit.Quota != 10 || sts[1].Result.Remaining != 9 {
		t.Errorf("replaced %+v; replacing %+v", sts[0], sts[1])
	}
	if cs.ops.Load() != 1 {
		t.Errorf("%d ops, want 1 (the replaced rule is not counted)", cs.ops.Load())
	}
}

func TestBatchAndHits(t *testing.T) {
	e, cs := newEngine(t)
	ctx := context.Background()
	req := [][]rules.Entry{d("ip", "10.0.0.3"), d("api", "key"), d("ip", "10.0.0.66"), d("ip", "10.0.0.1"), d("shadow", "b")}
	sts, code, err := e.DecideAt(ctx, at, "test", req, []int64{2, 1, 1, 1, 0})
	if err != nil {
		t.Fatal(err)
	}
	if code != engine.OverLimit {
		t.Errorf("overall %v, want OVER_LIMIT (the deny)", code)
	}
	if cs.calls.Load() != 1 || cs.ops.Load() != 3 {
		t.Errorf("%d calls with %d ops, want 1 call with 3 ops", cs.calls.Load(), cs.ops.Load())
	}
	if sts[0].Result.Remaining != 1 || sts[0].Hits != 2 {
		t.Errorf("hits 2: %+v", sts[0])
	}
	// Two limits: the token bucket (2 per 30s) is the tighter one.
	if st := sts[1]; len(st.Each) != 2 || st.Result.Limit.Algorithm != floodgate.TokenBucket || st.Unit != 0 || st.Each[1].Remaining != 99 {
		t.Errorf("two limits: %+v", st)
	}
	// Hits 0 checks without counting.
	if st := sts[4]; !st.Result.Allowed || st.Result.Remaining != 1 {
		t.Errorf("hits 0: %+v", st)
	}
	sts, _, _ = e.DecideAt(ctx, at, "test", [][]rules.Entry{d("shadow", "b")}, nil)
	if sts[0].Result.Remaining != 0 || sts[0].ShadowDenied {
		t.Errorf("after a peek: %+v", sts[0])
	}

	if _, _, err := e.DecideAt(ctx, at, "test", req, []int64{1}); !errors.Is(err, floodgate.ErrInvalid) {
		t.Errorf("hits of the wrong length: %v", err)
	}
	if _, _, err := e.DecideAt(ctx, at, "test", req[:1], []int64{-1}); !errors.Is(err, floodgate.ErrInvalid) {
		t.Errorf("negative hits: %v", err)
	}
	if _, _, err := e.DecideAt(ctx, at, "test", req[:1], []int64{floodgate.MaxCost + 1}); !errors.Is(err, floodgate.ErrInvalid) {
		t.Errorf("huge hits: %v", err)
	}
}

func TestStoreError(t *testing.T) {
	e, cs := newEngine(t)
	cs.fail = errors.New("connection refused")
	sts, code, err := e.Decide(context.Background(), "test", [][]rules.Entry{d("ip", "10.0.0.2")}, nil)
	if !errors.Is(err, engine.ErrStore) || sts != nil || code != engine.Unknown {
		t.Errorf("%v %v %v", sts, code, err)
	}
	// No store call: no error.
	if _, code, err := e.Decide(context.Background(), "test", [][]rules.Entry{d("ip", "10.0.0.1")}, nil); err != nil || code != engine.OK {
		t.Errorf("unlimited with a failing store: %v %v", code, err)
	}
}

func TestNoRules(t *testing.T) {
	for _, e := range []*engine.Engine{
		engine.New(memory.New(memory.Options{}), nil, nil),
		engine.New(memory.New(memory.Options{}), engine.Static(nil), nil),
	} {
		sts, code, err := e.Decide(context.Background(), "test", [][]rules.Entry{d("ip", "1")}, nil)
		if err != nil || code != engine.OK || sts[0].Code != engine.OK {
			t.Errorf("%v %v %v", sts, code, err)
		}
		e.Store().Close()
	}
}
