package memory_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/store/memory"
	"github.com/floodgate/floodgate/storetest"
)

// t0 is 2026-01-01T00:00:00Z in µs, the base of the explicit instants.
const t0 = int64(1767225600) * 1e6

func newStore(t *testing.T, opts memory.Options) *memory.Store {
	t.Helper()
	s := memory.New(opts)
	t.Cleanup(func() { s.Close() })
	return s
}

func decide(t *testing.T, s floodgate.Store, op floodgate.Op) floodgate.Result {
	t.Helper()
	ops := []floodgate.Op{op}
	if err := s.Decide(context.Background(), ops); err != nil {
		t.Fatalf("Decide(%q at %d): %v", op.Key, op.Now, err)
	}
	return ops[0].Result
}

// reference decides ops with floodgate.Apply over a plain map, the model
// the store must agree with.
type reference map[string]floodgate.State

func (m reference) decide(op *floodgate.Op) {
	states := make([]floodgate.State, len(op.Limits))
	for i, l := range op.Limits {
		states[i] = m[op.Key+"\x00"+l.String()]
	}
	if floodgate.Apply(op, states, op.Now) {
		for i, l := range op.Limits {
			m[op.Key+"\x00"+l.String()] = states[i]
		}
	}
}

// TestAgreesWithReference feeds random events over every algorithm, with
// single and multiple limits, to the store and to the reference, and
// compares every result. Small capacity and sweeps keep entries coming and
// going.
func TestAgreesWithReference(t *testing.T) {
	limitSets := [][]floodgate.Limit{}
	for _, a := range floodgate.Algorithms {
		limitSets = append(limitSets,
			[]floodgate.Limit{{Algorithm: a, Quota: 5, Window: 100 * time.Millisecond}},
			[]floodgate.Limit{{Algorithm: a, Quota: 7, Window: 3 * time.Second}},
		)
	}
	limitSets = append(limitSets,
		[]floodgate.Limit{{Algorithm: floodgate.TokenBucket, Quota: 3, Window: 7 * time.Millisecond, Burst: 4}},
		[]floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 10, Window: time.Second, Burst: 3}},
		[]floodgate.Limit{
			{Algorithm: floodgate.FixedWindow, Quota: 4, Window: 50 * time.Millisecond},
			{Algorithm: floodgate.TokenBucket, Quota: 10, Window: time.Second},
			{Algorithm: floodgate.SlidingWindow, Quota: 6, Window: 200 * time.Millisecond},
		},
		[]floodgate.Limit{
			{Algorithm: floodgate.GCRA, Quota: 5, Window: 100 * time.Millisecond},
			{Algorithm: floodgate.SlidingWindowLog, Quota: 8, Window: 300 * time.Millisecond},
			{Algorithm: floodgate.Concurrency, Quota: 3, Window: 250 * time.Millisecond},
			{Algorithm: floodgate.FixedWindow, Quota: 20, Window: time.Second},
			{Algorithm: floodgate.TokenBucket, Quota: 2, Window: 30 * time.Millisecond, Burst: 5},
		},
	)
	rng := rand.New(rand.NewPCG(1, 2))
	s := newStore(t, memory.Options{Capacity: 1 << 16})
	ref := reference{}
	now := t0
	for i := range 60_000 {
		now += rng.Int64N(20_000)
		limits := limitSets[rng.IntN(len(limitSets))]
		op := floodgate.Op{
			Key:    "k" + strconv.Itoa(rng.IntN(40)),
			Limits: limits,
			Cost:   rng.Int64N(4),
			Now:    now,
			Each:   make([]floodgate.Result, len(limits)),
		}
		if rng.IntN(5) == 0 {
			op.Lease = "lease" + strconv.Itoa(rng.IntN(3))
			op.Release = rng.IntN(2) == 0
		}
		want := op
		want.Each = make([]floodgate.Result, len(limits))
		ref.decide(&want)
		got := decide(t, s, op)
		if got != want.Result {
			t.Fatalf("event %d: key %s limits %v cost %d at +%dµs: got %+v, want %+v", i, op.Key, limits, op.Cost, now-t0, got, want.Result)
		}
		for j := range limits {
			if op.Each[j] != want.Each[j] {
				t.Fatalf("event %d: Each[%d]: got %+v, want %+v", i, j, op.Each[j], want.Each[j])
			}
		}
	}
}

// TestExactUnderConcurrency has many goroutines hammer one key: exactly the
// quota is admitted.
func TestExactUnderConcurrency(t *testing.T) {
	for _, a := range []floodgate.Algorithm{floodgate.FixedWindow, floodgate.SlidingWindowLog, floodgate.SlidingWindow, floodgate.TokenBucket, floodgate.GCRA, floodgate.Concurrency} {
		t.Run(a.String(), func(t *testing.T) {
			const quota, workers, each = 500, 16, 200
			s := newStore(t, memory.Options{})
			limits := []floodgate.Limit{{Algorithm: a, Quota: quota, Window: time.Hour}}
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range each {
						ops := []floodgate.Op{{Key: "hot", Limits: limits, Cost: 1, Now: t0 + 1}}
						if err := s.Decide(context.Background(), ops); err != nil {
							t.Error(err)
							return
						}
						if ops[0].Result.Allowed {
							admitted.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got := admitted.Load(); got != quota {
				t.Fatalf("admitted %d of %d, want exactly %d", got, workers*each, quota)
			}
		})
	}
}

// TestCapacityUnderSpraying sprays millions of distinct keys at a small
// table: it never holds more than its capacity, a key in debt stays denied,
// and the sprayed keys beyond the capacity share one quota.
func TestCapacityUnderSpraying(t *testing.T) {
	const capacity = 100_000
	keys := 2_000_000
	if testing.Short() || raceEnabled {
		keys = 500_000
	}
	s := newStore(t, memory.Options{Capacity: capacity})
	limits := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 3, Window: time.Hour}}
	for i := range 3 {
		if r := decide(t, s, floodgate.Op{Key: "debtor", Limits: limits, Cost: 1, Now: t0 + int64(i)}); !r.Allowed {
			t.Fatalf("debtor request %d denied", i)
		}
	}
	ctx := context.Background()
	batch := make([]floodgate.Op, 1000)
	admitted := 0
	for i := 0; i < keys; i += len(batch) {
		for j := range batch {
			batch[j] = floodgate.Op{Key: "spray:" + strconv.Itoa(i+j), Limits: limits, Cost: 1, Now: t0 + 10}
		}
		if err := s.Decide(ctx, batch); err != nil {
			t.Fatal(err)
		}
		for j := range batch {
			if batch[j].Result.Allowed {
				admitted++
			}
		}
		if n := s.Len(); n > capacity {
			t.Fatalf("after %d keys: Len %d > capacity %d", i+len(batch), n, capacity)
		}
	}
	if r := decide(t, s, floodgate.Op{Key: "debtor", Limits: limits, Cost: 1, Now: t0 + 20}); r.Allowed {
		t.Fatalf("debtor admitted after the spray: %+v", r)
	}
	// Each held key admits one request; all the others share one quota of 3.
	if held := s.Len() - 1; admitted > held+3 {
		t.Fatalf("spray admitted %d, want at most %d held keys + 3 shared", admitted, held)
	}
	t.Logf("%d keys sprayed, %d held, %d admitted", keys, s.Len(), admitted)
}

// TestOverflowShare checks what new keys get from a full table: one shared
// state, whose debt follows a key that later finds room.
func TestOverflowShare(t *testing.T) {
	s := newStore(t, memory.Options{Capacity: 1, Shards: 1})
	limits := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Minute}}
	long := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Hour}}
	if !decide(t, s, floodgate.Op{Key: "holder", Limits: long, Cost: 1, Now: t0}).Allowed {
		t.Fatal("holder denied")
	}
	// The table is full: a, b, c share one quota of 2.
	got := []bool{}
	for _, k := range []string{"a", "b", "c"} {
		got = append(got, decide(t, s, floodgate.Op{Key: k, Limits: limits, Cost: 1, Now: t0 + 1}).Allowed)
	}
	if fmt.Sprint(got) != "[true true false]" {
		t.Fatalf("overflow admissions %v, want [true true false]", got)
	}
	if s.Len() != 1 {
		t.Fatalf("Len %d, want 1", s.Len())
	}
}

func TestOverflowDeny(t *testing.T) {
	var clock atomic.Int64
	clock.Store(t0)
	s := newStore(t, memory.Options{Capacity: 1, Shards: 1, Overflow: memory.OverflowDeny, Clock: clock.Load})
	limits := []floodgate.Limit{{Algorithm: floodgate.TokenBucket, Quota: 2, Window: time.Minute}}
	if !decide(t, s, floodgate.Op{Key: "holder", Limits: limits, Cost: 1}).Allowed {
		t.Fatal("holder denied")
	}
	r := decide(t, s, floodgate.Op{Key: "new", Limits: limits, Cost: 1})
	if r.Allowed || r.RetryAfter != time.Minute || r.Limit != limits[0] {
		t.Fatalf("new key on a full table: %+v, want denied with RetryAfter 1m", r)
	}
	if !decide(t, s, floodgate.Op{Key: "holder", Limits: limits, Cost: 1}).Allowed {
		t.Fatal("held key denied")
	}
	// Once the holder's state expires, its room is reclaimed.
	clock.Store(t0 + 2*60e6)
	if r := decide(t, s, floodgate.Op{Key: "new", Limits: limits, Cost: 1}); !r.Allowed {
		t.Fatalf("new key after expiry: %+v", r)
	}
	if s.Len() != 1 {
		t.Fatalf("Len %d, want 1", s.Len())
	}
}

// TestMultiLimitAllOrNothing: a denial by one limit consumes nothing from
// the others.
func TestMultiLimitAllOrNothing(t *testing.T) {
	s := newStore(t, memory.Options{})
	perSec := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Second}
	perDay := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 3, Window: 24 * time.Hour}
	limits := []floodgate.Limit{perSec, perDay}
	for i := range 3 {
		if !decide(t, s, floodgate.Op{Key: "u", Limits: limits, Cost: 1, Now: t0 + int64(i)}).Allowed {
			t.Fatalf("request %d denied", i)
		}
	}
	for i := range 5 {
		if decide(t, s, floodgate.Op{Key: "u", Limits: limits, Cost: 1, Now: t0 + 10 + int64(i)}).Allowed {
			t.Fatalf("request %d over the daily limit admitted", i)
		}
	}
	r := decide(t, s, floodgate.Op{Key: "u", Limits: []floodgate.Limit{perSec}, Cost: 0, Now: t0 + 20})
	if r.Remaining != 7 {
		t.Fatalf("per-second remaining %d after 3 admitted and 5 denied, want 7", r.Remaining)
	}
}

// TestExpiry: the janitor drops fully replenished state, with a clock the
// test moves.
func TestExpiry(t *testing.T) {
	var clock atomic.Int64
	clock.Store(t0)
	s := newStore(t, memory.Options{Clock: clock.Load, SweepInterval: 16 * time.Millisecond, Shards: 16})
	for _, a := range floodgate.Algorithms {
		limits := []floodgate.Limit{{Algorithm: a, Quota: 10, Window: time.Second}}
		for i := range 100 {
			decide(t, s, floodgate.Op{Key: "k" + strconv.Itoa(i), Limits: limits, Cost: 1})
		}
	}
	if n := s.Len(); n != 600 {
		t.Fatalf("Len %d, want 600", n)
	}
	clock.Store(t0 + 2e6)
	deadline := time.Now().Add(10 * time.Second)
	for s.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Len %d 10s after every entry expired, want 0", s.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestExpiredNotSweptEarly: with explicit instants, an entry live at the
// ops' time survives sweeps however late the real clock is.
func TestExpiredNotSweptEarly(t *testing.T) {
	s := newStore(t, memory.Options{SweepInterval: 8 * time.Millisecond, Shards: 4})
	limits := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Hour}}
	old := int64(1e12) // 1970: long expired by the real clock
	decide(t, s, floodgate.Op{Key: "k", Limits: limits, Cost: 1, Now: old})
	time.Sleep(50 * time.Millisecond) // several sweep rounds
	if decide(t, s, floodgate.Op{Key: "k", Limits: limits, Cost: 1, Now: old + 1}).Allowed {
		t.Fatal("entry live at the ops' instants was swept")
	}
}

func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s := memory.New(memory.Options{})
	decide(t, s, floodgate.Op{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1, Window: time.Second}}, Cost: 1})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before New", runtime.NumGoroutine(), before)
		}
		runtime.Gosched()
	}
	ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1, Window: time.Second}}, Cost: 1}}
	if err := s.Decide(context.Background(), ops); !errors.Is(err, floodgate.ErrClosed) || !errors.Is(ops[0].Err, floodgate.ErrClosed) {
		t.Fatalf("Decide after Close: %v, op.Err %v; want ErrClosed", err, ops[0].Err)
	}
}

func TestInvalidOps(t *testing.T) {
	s := newStore(t, memory.Options{})
	good := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second}}
	ops := []floodgate.Op{
		{Key: "", Limits: good, Cost: 1},
		{Key: "ok", Limits: good, Cost: 1, Now: t0},
		{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 0, Window: time.Second}}, Cost: 1},
		{Key: "k", Limits: good, Cost: -1},
		{Key: "k", Cost: 1},
		{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second, Burst: 2}}, Cost: 1},
	}
	err := s.Decide(context.Background(), ops)
	if !errors.Is(err, floodgate.ErrInvalid) || err != ops[0].Err {
		t.Fatalf("Decide: %v, want the first op's error wrapping ErrInvalid", err)
	}
	for i, op := range ops {
		if i == 1 {
			if op.Err != nil || !op.Result.Allowed {
				t.Fatalf("valid op: err %v, result %+v", op.Err, op.Result)
			}
			continue
		}
		if !errors.Is(op.Err, floodgate.ErrInvalid) {
			t.Fatalf("op %d: err %v, want ErrInvalid", i, op.Err)
		}
	}
}

func TestCancelledContext(t *testing.T) {
	s := newStore(t, memory.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1, Window: time.Second}}, Cost: 1}}
	if err := s.Decide(ctx, ops); !errors.Is(err, context.Canceled) {
		t.Fatalf("Decide with a cancelled context: %v", err)
	}
	if s.Len() != 0 {
		t.Fatal("cancelled batch changed the store")
	}
}

// TestDefaultClock checks the coarse clock against the wall clock, across an
// idle period long enough for its ticker to park.
func TestDefaultClock(t *testing.T) {
	s := newStore(t, memory.Options{})
	limits := []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1, Window: time.Hour}}
	for i := range 3 {
		before := time.Now().UnixMicro()
		r := decide(t, s, floodgate.Op{Key: "k" + strconv.Itoa(i), Limits: limits, Cost: 1})
		after := time.Now().UnixMicro()
		// A fresh GCRA key is reset one interval after the decision's instant.
		at := after - (time.Hour - r.ResetAfter).Microseconds()
		// The coarse clock lags by about a tick; a clock left stale while its
		// ticker was parked would lag by the whole idle period (100ms).
		if at < before-50_000 || at > after {
			t.Fatalf("decision instant %d outside [%d-50ms, %d]", at, before, after)
		}
		time.Sleep(100 * time.Millisecond) // idle long enough for the ticker to park
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) floodgate.Store { return memory.New(memory.Options{}) })
}

func TestConformanceSmallTable(t *testing.T) {
	// A table of one shard and a handful of entries, so overflow and
	// opportunistic sweeps happen during the suite.
	storetest.Run(t, func(t *testing.T) floodgate.Store {
		return memory.New(memory.Options{Capacity: 64, Shards: 1, SweepInterval: time.Millisecond})
	})
}

func TestProperties(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 50
	}
	storetest.RunProperties(t, func(t *testing.T) floodgate.Store { return memory.New(memory.Options{}) }, n)
}

// TestOverflowDebtFollowsKey: a key that spent the shared overflow quota
// keeps that debt when it later finds room in the table.
func TestOverflowDebtFollowsKey(t *testing.T) {
	var clock atomic.Int64
	clock.Store(t0)
	s := newStore(t, memory.Options{Capacity: 1, Shards: 1, Clock: clock.Load})
	short := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: 10 * time.Second}}
	perMin := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Minute}}
	if !decide(t, s, floodgate.Op{Key: "holder", Limits: short, Cost: 1}).Allowed {
		t.Fatal("holder denied")
	}
	for i := range 2 {
		if !decide(t, s, floodgate.Op{Key: "a", Limits: perMin, Cost: 1}).Allowed {
			t.Fatalf("overflow request %d denied", i)
		}
	}
	clock.Store(t0 + 11e6) // the holder's entry has expired: room for "a"
	r := decide(t, s, floodgate.Op{Key: "a", Limits: perMin, Cost: 1})
	if r.Allowed {
		t.Fatalf("key admitted a third time in one window after moving out of overflow: %+v", r)
	}
	if r.RetryAfter != 49*time.Second {
		t.Fatalf("RetryAfter %v, want 49s (the end of the minute)", r.RetryAfter)
	}
}

// TestMultiLimitWithOverflow: an op whose key holds one limit and finds no
// room for the other decides both atomically, the second on the shared
// overflow state.
func TestMultiLimitWithOverflow(t *testing.T) {
	s := newStore(t, memory.Options{Capacity: 1, Shards: 1})
	a := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Minute}
	b := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 2, Window: time.Hour}
	if !decide(t, s, floodgate.Op{Key: "k", Limits: []floodgate.Limit{a}, Cost: 1, Now: t0}).Allowed {
		t.Fatal("first request denied")
	}
	// b for k lives in the overflow state, shared with z.
	if !decide(t, s, floodgate.Op{Key: "k", Limits: []floodgate.Limit{a, b}, Cost: 1, Now: t0 + 1}).Allowed {
		t.Fatal("two-limit request denied")
	}
	if !decide(t, s, floodgate.Op{Key: "z", Limits: []floodgate.Limit{b}, Cost: 1, Now: t0 + 2}).Allowed {
		t.Fatal("z denied with one overflow token left")
	}
	if decide(t, s, floodgate.Op{Key: "k", Limits: []floodgate.Limit{a, b}, Cost: 1, Now: t0 + 3}).Allowed {
		t.Fatal("k admitted with the shared bucket empty")
	}
	// The denial consumed nothing from a: 2 of 5 used.
	if r := decide(t, s, floodgate.Op{Key: "k", Limits: []floodgate.Limit{a}, Cost: 0, Now: t0 + 4}); r.Remaining != 3 {
		t.Fatalf("a remaining %d, want 3", r.Remaining)
	}
	if s.Len() != 1 {
		t.Fatalf("Len %d, want 1", s.Len())
	}
}

// TestSameLimitTwice: an op may list one limit twice; its key then holds one
// entry, not two, and once that entry expires the room is all free again.
// Counting it twice left phantom entries that made an empty table deny new
// keys.
func TestSameLimitTwice(t *testing.T) {
	var clock atomic.Int64
	clock.Store(t0)
	s := newStore(t, memory.Options{Capacity: 64, Shards: 1, Overflow: memory.OverflowDeny, Clock: clock.Load})
	for _, l := range []floodgate.Limit{
		{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Second},
		{Algorithm: floodgate.SlidingWindow, Quota: 5, Window: time.Second},
		{Algorithm: floodgate.SlidingWindowLog, Quota: 5, Window: time.Second},
	} {
		twice := []floodgate.Limit{l, l}
		for i := range 32 {
			if r := decide(t, s, floodgate.Op{Key: fmt.Sprint(l.Algorithm, i), Limits: twice, Cost: 1}); !r.Allowed {
				t.Fatalf("%v: key %d denied: %+v", l, i, r)
			}
		}
		if n := s.Len(); n != 32 {
			t.Fatalf("%v: Len %d after 32 keys, want 32", l, n)
		}
		// Every entry expires; 64 new keys fit in the 64 entries.
		clock.Add(3e6)
		for i := range 64 {
			if r := decide(t, s, floodgate.Op{Key: fmt.Sprint("new", l.Algorithm, i), Limits: []floodgate.Limit{l}, Cost: 1}); !r.Allowed {
				t.Fatalf("%v: new key %d denied on a table of %d entries: %+v", l, i, s.Len(), r)
			}
		}
		clock.Add(3e6)
	}
	lease := floodgate.Limit{Algorithm: floodgate.Concurrency, Quota: 5, Window: time.Second}
	op := floodgate.Op{Key: "lease", Limits: []floodgate.Limit{lease, lease}, Cost: 1, Lease: "a"}
	if r := decide(t, s, op); !r.Allowed {
		t.Fatalf("lease denied: %+v", r)
	}
	before := s.Len()
	op.Release = true
	if r := decide(t, s, op); !r.Allowed {
		t.Fatalf("release of a held lease: %+v", r)
	}
	if n := s.Len(); n != before-1 {
		t.Fatalf("Len %d after releasing the only lease of a key, want %d", n, before-1)
	}
}

// TestCancelledContextSetsErr: a batch refused for a cancelled context
// gives every op that error, not a result left from an earlier use.
func TestCancelledContextSetsErr(t *testing.T) {
	s := newStore(t, memory.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1, Window: time.Second}}, Cost: 1, Result: floodgate.Result{Allowed: true}}}
	if err := s.Decide(ctx, ops); !errors.Is(err, context.Canceled) {
		t.Fatalf("Decide with a cancelled context: %v", err)
	}
	if !errors.Is(ops[0].Err, context.Canceled) {
		t.Fatalf("op Err %v, want the context's error", ops[0].Err)
	}
}
