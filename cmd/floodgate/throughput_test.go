package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/breaker"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

// defaultThroughput is what serve's throughput flags give by default.
var defaultThroughput = throughputConfig{batch: true, batchMax: 128, batchFlight: 2, overlimit: true, overlimitSize: 65536, overlimitLife: time.Second}

// defaultStack is what the store stack's flags give by default.
var defaultStack = stackConfig{store: "memory", approxKeys: 1 << 20, throughput: defaultThroughput}

func TestParseThroughput(t *testing.T) {
	env := map[string]string{
		"FLOODGATE_BATCH": "false", "FLOODGATE_BATCH_WINDOW": "200us", "FLOODGATE_BATCH_MAX": "32", "FLOODGATE_BATCH_INFLIGHT": "3",
		"FLOODGATE_OVERLIMIT_CACHE": "false", "FLOODGATE_OVERLIMIT_SIZE": "1000", "FLOODGATE_OVERLIMIT_MAX_LIFETIME": "250ms",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := parseServe(nil, io.Discard, lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := throughputConfig{batch: false, batchWindow: 200 * time.Microsecond, batchMax: 32, batchFlight: 3, overlimit: false, overlimitSize: 1000, overlimitLife: 250 * time.Millisecond}
	if cfg.stack.throughput != want {
		t.Errorf("from the environment: got %+v, want %+v", cfg.stack.throughput, want)
	}
	cfg, err = parseServe([]string{"--batch", "--batch-max", "7", "--batch-inflight", "4", "--overlimit-cache=true"}, io.Discard, lookup)
	if err != nil {
		t.Fatal(err)
	}
	want = throughputConfig{batch: true, batchWindow: 200 * time.Microsecond, batchMax: 7, batchFlight: 4, overlimit: true, overlimitSize: 1000, overlimitLife: 250 * time.Millisecond}
	if cfg.stack.throughput != want {
		t.Errorf("flags over the environment: got %+v, want %+v", cfg.stack.throughput, want)
	}
	for _, args := range [][]string{
		{"--batch-window", "-1ms"}, {"--batch-window", "2s"}, {"--batch-max", "0"}, {"--batch-inflight", "0"}, {"--overlimit-size", "0"}, {"--overlimit-max-lifetime", "-1s"}, {"--batch", "maybe"},
	} {
		var errb bytes.Buffer
		if _, err := parseServe(args, &errb, func(string) (string, bool) { return "", false }); err == nil || errb.Len() == 0 {
			t.Errorf("%q: err %v, stderr %q; want an error reported", args, err, errb.String())
		}
	}
}

// firstLetter is the shard of the sharded batch tests.
func firstLetter(key string) string {
	if key == "" {
		return ""
	}
	return key[:1]
}

// countingStore counts the calls of each shard (firstLetter) and fails a
// call that mixes shards.
type countingStore struct {
	floodgate.Store
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingStore) Decide(ctx context.Context, ops []floodgate.Op) error {
	c.mu.Lock()
	first := firstLetter(ops[0].Key)
	for _, op := range ops {
		if firstLetter(op.Key) != first {
			c.mu.Unlock()
			return errors.New("a call mixes shards")
		}
	}
	c.calls[first]++
	c.mu.Unlock()
	return c.Store.Decide(ctx, ops)
}

// A call over several shards is split by shard, each part goes to its own
// shard's batch, and every result comes back in place.
func TestShardedBatch(t *testing.T) {
	inner := &countingStore{Store: memory.New(memory.Options{}), calls: map[string]int{}}
	s := newShardedBatch(inner, firstLetter, batchOptions(defaultThroughput))
	defer s.Close()
	lim := func(q int64) []floodgate.Limit {
		return []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: q, Window: time.Minute}}
	}
	const now = 1_700_000_000_000_000
	ops := []floodgate.Op{
		{Key: "a1", Limits: lim(1), Cost: 1, Now: now},
		{Key: "b1", Limits: lim(2), Cost: 1, Now: now, Each: make([]floodgate.Result, 1)},
		{Key: "a1", Limits: lim(1), Cost: 1, Now: now},
		{Key: "c1", Limits: lim(3), Cost: 5, Now: now},
		{Key: "", Limits: lim(3), Cost: 1, Now: now},
	}
	err := s.Decide(context.Background(), ops)
	if !errors.Is(err, floodgate.ErrInvalid) {
		t.Errorf("Decide: %v, want the invalid op's error", err)
	}
	want := []struct {
		allowed bool
		quota   int64
		invalid bool
	}{{true, 1, false}, {true, 2, false}, {false, 1, false}, {false, 3, false}, {false, 0, true}}
	for i, w := range want {
		op := ops[i]
		if w.invalid {
			if !errors.Is(op.Err, floodgate.ErrInvalid) {
				t.Errorf("op %d: err %v, want invalid", i, op.Err)
			}
			continue
		}
		if op.Err != nil || op.Result.Allowed != w.allowed || op.Result.Limit.Quota != w.quota {
			t.Errorf("op %d (%s): %+v, %v; want allowed %v under quota %d", i, op.Key, op.Result, op.Err, w.allowed, w.quota)
		}
	}
	if ops[1].Each[0] != ops[1].Result {
		t.Errorf("Each of op 1: %+v, want %+v", ops[1].Each[0], ops[1].Result)
	}
	if calls, n := s.Stats(); calls != 4 || n != 5 {
		t.Errorf("Stats: %d calls of %d ops, want 4 of 5 (one per shard)", calls, n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Decide(context.Background(), ops[:1]); !errors.Is(err, floodgate.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// flakyStore fails every call while fail is set.
type flakyStore struct {
	floodgate.Store
	fail atomic.Bool
}

func (f *flakyStore) Decide(ctx context.Context, ops []floodgate.Op) error {
	if f.fail.Load() {
		err := errors.New("store down")
		for i := range ops {
			ops[i].Err = err
		}
		return err
	}
	return f.Store.Decide(ctx, ops)
}

// A denial decided by the failure policy is not cached: once the store
// answers again, the key is decided by the store at once; a store's own
// denial is.
func TestPolicyDenialNotCached(t *testing.T) {
	flaky := &flakyStore{Store: memory.New(memory.Options{})}
	cfg := stackConfig{onStoreError: rules.FailClosed, breakerFailures: 1000, throughput: defaultThroughput}
	logger := slog.New(slog.DiscardHandler)
	res := newResilience(flaky, cfg, logger, func(s floodgate.Store) floodgate.Store { return s })
	defer res.store.Close()
	if res.batch == nil || res.cache == nil {
		t.Fatalf("a shared store without the batch (%v) or the cache (%v)", res.batch, res.cache)
	}
	eng := engine.NewWithOptions(res.store, nil, res.engineOptions(cfg, logger))
	defer eng.Close()
	decide := func() engine.Status {
		t.Helper()
		op := floodgate.Op{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Hour}}, Cost: 1}
		st, err := eng.DecideOp(context.Background(), &op)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	flaky.fail.Store(true)
	for range 3 {
		if st := decide(); st.Code != engine.OverLimit || st.Policy != rules.FailClosed {
			t.Fatalf("store down: %+v, want a fail_closed denial", st)
		}
	}
	flaky.fail.Store(false)
	if st := decide(); st.Code != engine.OK || st.Policy != rules.FailureDefault {
		t.Fatalf("store back: %+v, want the store's admission", st)
	}
	if st := decide(); st.Code != engine.OverLimit || st.Policy != rules.FailureDefault {
		t.Fatalf("second decision: %+v, want the store's denial", st)
	}
	if st := decide(); st.Code != engine.OverLimit {
		t.Fatalf("third decision: %+v, want the cached denial", st)
	}
	if hits, _ := res.cache.Stats(); hits != 1 {
		t.Errorf("cache hits %d, want 1 (only the store's own denial)", hits)
	}
}

// stalled is a store that never answers: each call ends only when its
// context does, as a paused Redis behind the breaker's deadline.
type stalled struct {
	floodgate.Store
	arrived chan struct{}
}

func (s *stalled) Decide(ctx context.Context, ops []floodgate.Op) error {
	s.arrived <- struct{}{}
	<-ctx.Done()
	for i := range ops {
		ops[i].Err = ctx.Err()
	}
	return ctx.Err()
}

// TestQueuedDecisionWithinDeadline: a decision that queues behind a call in
// flight on a stalled store must not wait for that call and then for its own
// (two deadlines, more behind several batches): it is answered within the
// store deadline, by the failure policy.
func TestQueuedDecisionWithinDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	inner := &stalled{Store: memory.New(memory.Options{}), arrived: make(chan struct{}, 4)}
	brk := breaker.New(inner, breaker.Options{Timeout: timeout})
	st, _, _ := fastPath(brk, defaultThroughput, nil)
	defer st.Close()
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Minute}
	ctx := context.Background()

	first := make(chan error, 1)
	go func() { _, err := floodgate.New(st).Allow(ctx, "first", lim); first <- err }()
	<-inner.arrived // the first call is in flight
	start := time.Now()
	_, err := floodgate.New(st).Allow(ctx, "queued", lim)
	took := time.Since(start)
	if err == nil {
		t.Error("queued decision on a stalled store: no error")
	}
	if took > timeout+timeout/2 {
		t.Errorf("queued decision took %v, want at most the deadline %v and some margin", took, timeout)
	}
	<-first
}
