package overlimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/internal/redistest"
	"github.com/floodgate/floodgate/store/memory"
	redisstore "github.com/floodgate/floodgate/store/redis"
	"github.com/floodgate/floodgate/storetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	redistest.StopShared()
	os.Exit(code)
}

func newMemory() floodgate.Store {
	return memory.New(memory.Options{Capacity: 1 << 14, Clock: memory.PreciseClock()})
}

func newRedis(t testing.TB) floodgate.Store {
	t.Helper()
	s, err := redisstore.New(redisstore.Options{
		Addrs:  []string{redistest.Shared(t).Addr},
		Prefix: fmt.Sprintf("o%d:", rand.Uint64()),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var inners = map[string]func(t testing.TB) floodgate.Store{
	"memory": func(testing.TB) floodgate.Store { return newMemory() },
	"redis":  newRedis,
}

// counting counts the inner calls.
type counting struct {
	floodgate.Store
	calls atomic.Int64
}

func (c *counting) Decide(ctx context.Context, ops []floodgate.Op) error {
	c.calls.Add(1)
	return c.Store.Decide(ctx, ops)
}

func (c *counting) Unwrap() floodgate.Store { return c.Store }

func TestConformance(t *testing.T) {
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) floodgate.Store { return New(inner(t), Options{}) })
		})
	}
}

const base = int64(1_700_000_000_000_000) // µs

var cacheable = []floodgate.Limit{
	{Algorithm: floodgate.FixedWindow, Quota: 6, Window: time.Second},
	{Algorithm: floodgate.TokenBucket, Quota: 3, Window: time.Second, Burst: 4},
	{Algorithm: floodgate.GCRA, Quota: 10, Window: time.Second, Burst: 2},
	{Algorithm: floodgate.SlidingWindowLog, Quota: 4, Window: time.Second},
	{Algorithm: floodgate.SlidingWindow, Quota: 6, Window: time.Second},
}

// TestCachedEqualsStore drives each algorithm to a denial, then at instants
// up to its RetryAfter compares the cached answer with the store's own
// answer to the same op: field by field, and with no store call.
func TestCachedEqualsStore(t *testing.T) {
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			c := &counting{Store: inner(t)}
			s := New(c, Options{})
			defer s.Close()
			ctx := context.Background()
			for _, l := range cacheable {
				for _, cost := range []int64{1, 2} {
					t.Run(fmt.Sprintf("%v/cost%d", l.Algorithm, cost), func(t *testing.T) {
						key := fmt.Sprintf("%v-%d", l.Algorithm, cost)
						now := base + 123_457
						var denied floodgate.Result
						for i := 0; ; i++ {
							ops := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{l}, Cost: cost, Now: now}}
							if err := s.Decide(ctx, ops); err != nil {
								t.Fatal(err)
							}
							if !ops[0].Result.Allowed {
								denied = ops[0].Result
								break
							}
							if i > 20 {
								t.Fatal("never denied")
							}
						}
						life := lifetime(&floodgate.Op{Cost: cost}, denied)
						if life <= 0 {
							if cost == 1 {
								t.Fatalf("cost-1 denial %s not cached", storetest.FormatResult(denied))
							}
							t.Skipf("denial %s is not cached (by design)", storetest.FormatResult(denied))
						}
						for _, dt := range []int64{0, 1, 999, life / 3, life - 1} {
							at := now + dt
							calls := c.calls.Load()
							got := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{l}, Cost: cost, Now: at, Each: make([]floodgate.Result, 1)}}
							if err := s.Decide(ctx, got); err != nil {
								t.Fatal(err)
							}
							if c.calls.Load() != calls {
								t.Fatalf("+%dµs: answered by the store, want the cache", dt)
							}
							want := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{l}, Cost: cost, Now: at}}
							if err := c.Store.Decide(ctx, want); err != nil {
								t.Fatal(err)
							}
							if got[0].Result != want[0].Result || got[0].Each[0] != want[0].Result {
								t.Errorf("+%dµs: cached %s, store %s", dt, storetest.FormatResult(got[0].Result), storetest.FormatResult(want[0].Result))
							}
						}
						// At the end of its life the entry no longer answers.
						calls := c.calls.Load()
						ops := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{l}, Cost: cost, Now: now + life}}
						if err := s.Decide(ctx, ops); err != nil {
							t.Fatal(err)
						}
						if c.calls.Load() != calls+1 {
							t.Errorf("at the end of the entry's life: not sent to the store")
						}
					})
				}
			}
		})
	}
}

// TestHotKey: one key far over its limit, hammered by concurrent callers on
// the store's clock: the inner store sees at least 10× fewer calls than
// decisions, and exactly the quota is admitted.
func TestHotKey(t *testing.T) {
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			c := &counting{Store: inner(t)}
			s := New(c, Options{})
			defer s.Close()
			l := floodgate.New(s)
			lim := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 10, Window: time.Hour}
			const workers, each = 32, 200
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range each {
						r, err := l.Allow(context.Background(), "attacker", lim)
						if err != nil {
							t.Error(err)
							return
						}
						if r.Allowed {
							allowed.Add(1)
						} else if r.Remaining != 0 || r.RetryAfter <= 0 || r.RetryAfter > 6*time.Minute {
							t.Errorf("denial %+v", r)
							return
						}
					}
				})
			}
			wg.Wait()
			calls := c.calls.Load()
			hits, _ := s.Stats()
			t.Logf("%d decisions, %d store calls, %d answered from the cache", workers*each, calls, hits)
			if allowed.Load() != lim.Quota {
				t.Errorf("allowed %d, want exactly %d", allowed.Load(), lim.Quota)
			}
			if calls*10 > workers*each {
				t.Errorf("%d store calls for %d decisions: want at least 10× fewer", calls, workers*each)
			}
		})
	}
}

// TestNeverAdmitsMore runs random ops at explicit instants against the
// cached store and, in step, against a plain store of the same kind: every
// decision must be the same; the cached RetryAfter may only be shorter when
// an entry answered a cost above the one it was made for.
func TestNeverAdmitsMore(t *testing.T) {
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			s := New(inner(t), Options{Capacity: 64, Shards: 2})
			defer s.Close()
			plain := inner(t)
			defer plain.Close()
			ctx := context.Background()
			limits := append([]floodgate.Limit{{Algorithm: floodgate.Concurrency, Quota: 2, Window: time.Second}}, cacheable...)
			rng := rand.New(rand.NewPCG(1, 2))
			now := base
			steps := 3000
			if name == "redis" {
				steps = 1000
			}
			for i := range steps {
				now += rng.Int64N(40_000)
				k := rng.IntN(len(limits) * 2)
				l := limits[k%len(limits)]
				key := fmt.Sprintf("k%d", k)
				cost := 1 + rng.Int64N(2)
				a := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{l}, Cost: cost, Now: now}}
				b := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{l}, Cost: cost, Now: now}}
				if err := s.Decide(ctx, a); err != nil {
					t.Fatal(err)
				}
				if err := plain.Decide(ctx, b); err != nil {
					t.Fatal(err)
				}
				ra, rb := a[0].Result, b[0].Result
				if ra.Allowed != rb.Allowed || ra.Remaining != rb.Remaining || ra.ResetAfter != rb.ResetAfter || ra.RetryAfter > rb.RetryAfter {
					t.Fatalf("step %d, %v cost %d: cached store %s, plain store %s", i, l, cost, storetest.FormatResult(ra), storetest.FormatResult(rb))
				}
			}
			hits, calls := s.Stats()
			t.Logf("%d ops: %d from the cache, %d store calls", steps, hits, calls)
			if hits == 0 {
				t.Error("no op answered from the cache")
			}
		})
	}
}

// TestRuleChange: a denial under one limit says nothing about another.
func TestRuleChange(t *testing.T) {
	s := New(newMemory(), Options{})
	defer s.Close()
	ctx := context.Background()
	strict := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Minute}
	loose := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 100, Window: time.Minute}
	for i, want := range []bool{true, false, false} {
		ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{strict}, Cost: 1, Now: base + int64(i)}}
		if err := s.Decide(ctx, ops); err != nil || ops[0].Result.Allowed != want {
			t.Fatalf("step %d: %+v %v", i, ops[0].Result, err)
		}
	}
	ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{loose}, Cost: 1, Now: base + 5}}
	if err := s.Decide(ctx, ops); err != nil || !ops[0].Result.Allowed {
		t.Fatalf("after the rule change: %+v %v, want allowed", ops[0].Result, err)
	}
	if hits, _ := s.Stats(); hits != 1 {
		t.Errorf("%d hits, want 1 (the third op)", hits)
	}
}

// TestBounded: many denied keys never grow the table past its size.
func TestBounded(t *testing.T) {
	s := New(newMemory(), Options{Capacity: 256, Shards: 4})
	defer s.Close()
	ctx := context.Background()
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Minute}
	for i := range 5000 {
		ops := []floodgate.Op{
			{Key: fmt.Sprintf("k%d", i), Limits: []floodgate.Limit{l}, Cost: 1, Now: base},
			{Key: fmt.Sprintf("k%d", i), Limits: []floodgate.Limit{l}, Cost: 1, Now: base},
		}
		if err := s.Decide(ctx, ops); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len(); n > 256 {
		t.Errorf("%d entries, want at most 256", n)
	}
	s.Purge()
	if n := s.Len(); n != 0 {
		t.Errorf("%d entries after Purge", n)
	}
}

// TestMixedBatch: in one call, cached ops are answered locally and the rest
// go to the store in order.
func TestMixedBatch(t *testing.T) {
	c := &counting{Store: newMemory()}
	s := New(c, Options{})
	defer s.Close()
	ctx := context.Background()
	one := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Minute}
	ops := []floodgate.Op{
		{Key: "a", Limits: []floodgate.Limit{one}, Cost: 1, Now: base},
		{Key: "a", Limits: []floodgate.Limit{one}, Cost: 1, Now: base},
	}
	if err := s.Decide(ctx, ops); err != nil || !ops[0].Result.Allowed || ops[1].Result.Allowed {
		t.Fatalf("%+v %+v %v", ops[0].Result, ops[1].Result, err)
	}
	ops = []floodgate.Op{
		{Key: "b", Limits: []floodgate.Limit{one}, Cost: 1, Now: base + 1},
		{Key: "a", Limits: []floodgate.Limit{one}, Cost: 1, Now: base + 1},
		{Key: "b", Limits: []floodgate.Limit{one}, Cost: 1, Now: base + 1},
		{Key: "", Limits: []floodgate.Limit{one}, Cost: 1, Now: base + 1},
	}
	err := s.Decide(ctx, ops)
	if err == nil || ops[3].Err == nil {
		t.Errorf("invalid op: %v / %v, want an error", err, ops[3].Err)
	}
	if !ops[0].Result.Allowed || ops[1].Result.Allowed || ops[2].Result.Allowed {
		t.Errorf("results %+v %+v %+v", ops[0].Result, ops[1].Result, ops[2].Result)
	}
	if c.calls.Load() != 2 {
		t.Errorf("%d store calls, want 2", c.calls.Load())
	}
}

func BenchmarkHit(b *testing.B) {
	s := New(newMemory(), Options{})
	defer s.Close()
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Hour}
	ops := []floodgate.Op{{Key: "attacker", Limits: []floodgate.Limit{l}, Cost: 1}}
	ctx := context.Background()
	_ = s.Decide(ctx, ops)
	_ = s.Decide(ctx, ops)
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Decide(ctx, ops)
	}
}

// TestMaxLifetime: on the store's clock a denial that lasts an hour is
// answered from the cache for MaxLifetime only, so that a reset made through
// another instance (here, straight in the inner store) holds after it.
func TestMaxLifetime(t *testing.T) {
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			c := &counting{Store: inner(t)}
			const maxLife = 300 * time.Millisecond
			s := New(c, Options{MaxLifetime: maxLife})
			defer s.Close()
			ctx := context.Background()
			lim := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Hour}}
			key := fmt.Sprintf("reset-elsewhere-%d", rand.Uint64())
			decide := func() (floodgate.Result, bool) {
				t.Helper()
				calls := c.calls.Load()
				ops := []floodgate.Op{{Key: key, Limits: lim, Cost: 1}}
				if err := s.Decide(ctx, ops); err != nil {
					t.Fatal(err)
				}
				return ops[0].Result, c.calls.Load() == calls
			}
			decide()
			// The entry is made from the moment the op is sent: it lives
			// from between before and after, for maxLife.
			before := time.Now()
			r, _ := decide()
			after := time.Now()
			if r.Allowed || r.RetryAfter < 30*time.Second {
				// A fixed hour window ends in under 30s once in 120 runs.
				t.Skipf("the window ends too soon: %+v", r)
			}
			if _, cached := decide(); !cached && time.Since(before) < maxLife {
				t.Fatal("a denial for up to an hour is not answered from the cache")
			}
			// Another instance resets the key in the store.
			if err := floodgate.Reset(ctx, c.Store, key, lim); err != nil {
				t.Fatal(err)
			}
			r, cached := decide()
			if time.Since(before) < maxLife && (!cached || r.Allowed) {
				t.Fatalf("within MaxLifetime: cached %v, allowed %v; want the cached denial", cached, r.Allowed)
			}
			time.Sleep(time.Until(after.Add(maxLife + 10*time.Millisecond)))
			if r, cached := decide(); cached || !r.Allowed {
				t.Errorf("%v after the denial was cached: cached %v, allowed %v; want the store's fresh state", time.Since(before).Round(time.Millisecond), cached, r.Allowed)
			}
		})
	}
}

// TestResetForgets: a reset through the cache forgets its denials of the
// key under any limits, and not those of other keys.
func TestResetForgets(t *testing.T) {
	c := &counting{Store: newMemory()}
	s := New(c, Options{})
	defer s.Close()
	ctx := context.Background()
	a := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Hour}}
	b := []floodgate.Limit{{Algorithm: floodgate.TokenBucket, Quota: 1, Window: time.Hour}}
	for _, key := range []string{"k", "other"} {
		for _, lim := range [][]floodgate.Limit{a, b} {
			for range 2 {
				if err := s.Decide(ctx, []floodgate.Op{{Key: key, Limits: lim, Cost: 1, Now: base}}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if n := s.Len(); n != 4 {
		t.Fatalf("%d entries cached, want 4", n)
	}
	if err := s.Reset(ctx, "k", a); err != nil {
		t.Fatal(err)
	}
	if n := s.Len(); n != 2 {
		t.Errorf("%d entries after resetting k, want the 2 of other", n)
	}
}
