package batch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
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
		Prefix: fmt.Sprintf("b%d:", rand.Uint64()),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// inners names the inner stores every shared test runs on.
var inners = map[string]func(t testing.TB) floodgate.Store{
	"memory": func(testing.TB) floodgate.Store { return newMemory() },
	"redis":  newRedis,
}

func TestConformance(t *testing.T) {
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) floodgate.Store { return New(inner(t), Options{}) })
		})
	}
}

func TestConformanceWindow(t *testing.T) {
	storetest.Run(t, func(t *testing.T) floodgate.Store {
		return New(newMemory(), Options{Window: 50 * time.Microsecond, MaxBatch: 4, MaxInFlight: 2})
	})
}

// counting counts the inner calls and ops it passes on.
type counting struct {
	floodgate.Store
	calls, ops atomic.Int64
}

func (c *counting) Decide(ctx context.Context, ops []floodgate.Op) error {
	c.calls.Add(1)
	c.ops.Add(int64(len(ops)))
	return c.Store.Decide(ctx, ops)
}

// gated blocks each Decide until the test lets it through, after telling
// the test it has arrived with its ops.
type gated struct {
	floodgate.Store
	arrived chan []floodgate.Op
	release chan struct{}
}

func newGated(inner floodgate.Store) *gated {
	return &gated{Store: inner, arrived: make(chan []floodgate.Op, 16), release: make(chan struct{})}
}

func (g *gated) Decide(ctx context.Context, ops []floodgate.Op) error {
	keys := make([]floodgate.Op, len(ops))
	copy(keys, ops)
	g.arrived <- keys
	<-g.release
	return g.Store.Decide(ctx, ops)
}

// waitQueued waits until s holds n queued callers, bounded in time.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.queue)
		s.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers queued, want %d", got, n)
		}
		runtime.Gosched()
	}
}

// perYear is 100 per fixed window of 366 days: decided on the store's real
// clock, and too long for a run to straddle two windows (which a one-minute
// window did once in a while, admitting 101).
var perYear = floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 100, Window: floodgate.MaxWindow}

// TestCoalesces holds the first calls in flight (two by default) while 50
// callers arrive; they must all go in the one next call.
func TestCoalesces(t *testing.T) {
	g := newGated(newMemory())
	s := New(g, Options{})
	defer s.Close()
	ctx := context.Background()

	done := make(chan error, 52)
	for i := range DefaultMaxInFlight {
		go func() { _, err := floodgate.New(s).Allow(ctx, fmt.Sprintf("leader%d", i), perYear); done <- err }()
		<-g.arrived
	}
	for i := range 50 {
		go func() { _, err := floodgate.New(s).Allow(ctx, fmt.Sprintf("k%d", i), perYear); done <- err }()
	}
	waitQueued(t, s, 50)
	close(g.release)
	if got := len(<-g.arrived); got != 50 {
		t.Errorf("third inner call carried %d ops, want 50", got)
	}
	for range 52 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if calls, ops := s.Stats(); calls != 3 || ops != 52 {
		t.Errorf("inner calls %d with %d ops, want 3 calls with 52 ops", calls, ops)
	}
}

// TestCoalescesUnderLoad counts inner calls with many concurrent callers on
// a real Redis: they must be fewer than the decisions.
func TestCoalescesUnderLoad(t *testing.T) {
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			c := &counting{Store: inner(t)}
			s := New(c, Options{})
			defer s.Close()
			l := floodgate.New(s)
			const workers, each = 64, 50
			var wg sync.WaitGroup
			var allowed atomic.Int64
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						r, err := l.Allow(context.Background(), fmt.Sprintf("k%d-%d", w, i%5), perYear)
						if err != nil {
							t.Error(err)
							return
						}
						if r.Allowed {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			calls, ops := c.calls.Load(), c.ops.Load()
			t.Logf("%d decisions in %d inner calls (%.1f per call)", ops, calls, float64(ops)/float64(calls))
			if ops != workers*each || allowed.Load() != workers*each {
				t.Errorf("%d ops sent, %d allowed, want %d", ops, allowed.Load(), workers*each)
			}
			if name == "redis" && calls >= ops {
				t.Errorf("%d inner calls for %d decisions: no coalescing", calls, ops)
			}
		})
	}
}

// TestExactUnderConcurrency: one key, many callers, exactly the quota.
func TestExactUnderConcurrency(t *testing.T) {
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			s := New(inner(t), Options{})
			defer s.Close()
			l := floodgate.New(s)
			var wg sync.WaitGroup
			var allowed atomic.Int64
			for range 64 {
				wg.Go(func() {
					for range 10 {
						r, err := l.Allow(context.Background(), "hot", perYear)
						if err != nil {
							t.Error(err)
							return
						}
						if r.Allowed {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got := allowed.Load(); got != perYear.Quota {
				t.Errorf("allowed %d of 640, want exactly %d", got, perYear.Quota)
			}
		})
	}
}

// TestSameAsUnbatched feeds per-key sequences at explicit instants from
// concurrent goroutines to a batched store and, one by one, to a plain
// store: every result must be the same.
func TestSameAsUnbatched(t *testing.T) {
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			batched := New(inner(t), Options{})
			defer batched.Close()
			plain := inner(t)
			defer plain.Close()
			limits := []floodgate.Limit{
				{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Second},
				{Algorithm: floodgate.TokenBucket, Quota: 3, Window: time.Second, Burst: 4},
				{Algorithm: floodgate.GCRA, Quota: 10, Window: time.Second, Burst: 2},
				{Algorithm: floodgate.SlidingWindowLog, Quota: 4, Window: time.Second},
				{Algorithm: floodgate.SlidingWindow, Quota: 6, Window: time.Second},
			}
			const base = int64(1_700_000_000_000_000)
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					now := base
					for i := range 40 {
						now += rng.Int64N(150_000)
						lim := limits[w%len(limits)]
						key := fmt.Sprintf("w%d", w)
						cost := rng.Int64N(3)
						a := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{lim}, Cost: cost, Now: now}}
						b := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{lim}, Cost: cost, Now: now}}
						errA := batched.Decide(context.Background(), a)
						errB := plain.Decide(context.Background(), b)
						if errA != nil || errB != nil {
							t.Errorf("step %d: errors %v, %v", i, errA, errB)
							return
						}
						if a[0].Result != b[0].Result {
							t.Errorf("worker %d step %d (%v cost %d): batched %+v, unbatched %+v", w, i, lim, cost, a[0].Result, b[0].Result)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// TestOrderAndOwnResults: a caller's several ops are decided in order, and
// each caller gets its own ops' results and errors.
func TestOrderAndOwnResults(t *testing.T) {
	g := newGated(newMemory())
	s := New(g, Options{MaxInFlight: 1})
	defer s.Close()
	ctx := context.Background()
	one := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Minute}
	const now = 1_700_000_000_000_000

	go func() {
		_ = s.Decide(ctx, []floodgate.Op{{Key: "x", Limits: []floodgate.Limit{one}, Cost: 1, Now: now}})
	}()
	<-g.arrived

	type res struct {
		ops []floodgate.Op
		err error
	}
	results := make([]chan res, 3)
	batches := [][]floodgate.Op{
		{ // three in order on one key: allowed, allowed, denied
			{Key: "a", Limits: []floodgate.Limit{one}, Cost: 1, Now: now, Each: make([]floodgate.Result, 1)},
			{Key: "a", Limits: []floodgate.Limit{one}, Cost: 1, Now: now},
			{Key: "a", Limits: []floodgate.Limit{one}, Cost: 1, Now: now},
		},
		{{Key: "", Limits: []floodgate.Limit{one}, Cost: 1, Now: now}}, // invalid
		{{Key: "b", Limits: []floodgate.Limit{one}, Cost: 2, Now: now}},
	}
	for i, ops := range batches {
		results[i] = make(chan res, 1)
		go func() {
			err := s.Decide(ctx, ops)
			results[i] <- res{ops, err}
		}()
		waitQueued(t, s, i+1)
	}
	close(g.release)
	<-g.arrived

	a := <-results[0]
	if a.err != nil {
		t.Fatal(a.err)
	}
	if !a.ops[0].Result.Allowed || a.ops[0].Result.Remaining != 1 || !a.ops[1].Result.Allowed || a.ops[2].Result.Allowed {
		t.Errorf("in-order results: %+v / %+v / %+v", a.ops[0].Result, a.ops[1].Result, a.ops[2].Result)
	}
	if a.ops[0].Each[0] != a.ops[0].Result {
		t.Errorf("Each[0] %+v, want %+v", a.ops[0].Each[0], a.ops[0].Result)
	}
	bad := <-results[1]
	if !errors.Is(bad.err, floodgate.ErrInvalid) || !errors.Is(bad.ops[0].Err, floodgate.ErrInvalid) {
		t.Errorf("invalid op: err %v, op.Err %v; want ErrInvalid", bad.err, bad.ops[0].Err)
	}
	b := <-results[2]
	if b.err != nil || !b.ops[0].Result.Allowed || b.ops[0].Result.Remaining != 0 {
		t.Errorf("other caller: %v %+v", b.err, b.ops[0].Result)
	}
}

// TestCancelQueued: a caller cancelled while queued is never sent; the
// others are decided.
func TestCancelQueued(t *testing.T) {
	g := newGated(newMemory())
	s := New(g, Options{MaxInFlight: 1})
	defer s.Close()
	bg := context.Background()
	go func() { _, _ = floodgate.New(s).Allow(bg, "leader", perYear) }()
	<-g.arrived

	ctx, cancel := context.WithCancel(bg)
	gone := make(chan error, 1)
	go func() { _, err := floodgate.New(s).Allow(ctx, "gone", perYear); gone <- err }()
	waitQueued(t, s, 1)
	stay := make(chan error, 1)
	go func() { _, err := floodgate.New(s).Allow(bg, "stay", perYear); stay <- err }()
	waitQueued(t, s, 2)
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v, want context.Canceled", err)
	}
	waitQueued(t, s, 1)
	close(g.release)
	sent := <-g.arrived
	if len(sent) != 1 || sent[0].Key != "stay" {
		t.Errorf("next batch %v, want only key stay", sent)
	}
	if err := <-stay; err != nil {
		t.Error(err)
	}
}

// TestEndedBeforeCall: a caller whose context has ended before it calls
// is not queued and reaches no store, whether a call is in flight or not.
func TestEndedBeforeCall(t *testing.T) {
	g := newGated(newMemory())
	s := New(g, Options{MaxInFlight: 1})
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ops := []floodgate.Op{{Key: "late", Limits: []floodgate.Limit{perYear}, Cost: 1}}
	if err := s.Decide(ctx, ops); !errors.Is(err, context.Canceled) || !errors.Is(ops[0].Err, context.Canceled) {
		t.Errorf("ended context, idle batcher: %v, op %v; want context.Canceled", err, ops[0].Err)
	}
	go func() { _, _ = floodgate.New(s).Allow(context.Background(), "leader", perYear) }()
	<-g.arrived
	ops[0].Err = nil
	if err := s.Decide(ctx, ops); !errors.Is(err, context.Canceled) {
		t.Errorf("ended context, a call in flight: %v, want context.Canceled", err)
	}
	s.mu.Lock()
	n := len(s.queue)
	s.mu.Unlock()
	if n != 0 {
		t.Errorf("%d queued after an ended caller", n)
	}
	close(g.release)
}

// TestCancelSent: a caller cancelled after its op was sent returns at once;
// the op is decided all the same, and its batch mates get their results.
func TestCancelSent(t *testing.T) {
	mem := newMemory()
	g := newGated(mem)
	s := New(g, Options{MaxInFlight: 1})
	defer s.Close()
	bg := context.Background()
	go func() { _, _ = floodgate.New(s).Allow(bg, "leader", perYear) }()
	<-g.arrived

	ctx, cancel := context.WithCancel(bg)
	gone := make(chan error, 1)
	go func() { _, err := floodgate.New(s).Allow(ctx, "gone", perYear); gone <- err }()
	waitQueued(t, s, 1)
	stay := make(chan floodgate.Result, 1)
	go func() {
		r, err := floodgate.New(s).Allow(bg, "stay", perYear)
		if err != nil {
			t.Error(err)
		}
		stay <- r
	}()
	waitQueued(t, s, 2)
	g.release <- struct{}{} // the leader's call
	<-g.arrived             // the batch of gone and stay, now in flight
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v, want context.Canceled", err)
	}
	close(g.release)
	if r := <-stay; !r.Allowed {
		t.Errorf("batch mate: %+v, want allowed", r)
	}
	// The cancelled caller's op was decided: its key has one unit used.
	r, err := floodgate.New(mem).Peek(bg, "gone", perYear)
	if err != nil || r.Remaining != perYear.Quota-1 {
		t.Errorf("after the cancelled op: %+v %v, want remaining %d", r, err, perYear.Quota-1)
	}
}

// failing fails every call with a whole-call error.
type failing struct{ floodgate.Store }

var errDown = errors.New("store down")

func (failing) Decide(context.Context, []floodgate.Op) error { return errDown }

func TestWholeCallError(t *testing.T) {
	s := New(failing{newMemory()}, Options{})
	defer s.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{perYear}, Cost: 1}}
			err := s.Decide(context.Background(), ops)
			if !errors.Is(err, errDown) {
				t.Errorf("got %v, want %v", err, errDown)
			}
		})
	}
	wg.Wait()
}

func TestClose(t *testing.T) {
	s := New(newMemory(), Options{})
	if _, err := floodgate.New(s).Allow(context.Background(), "k", perYear); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{perYear}, Cost: 1}}
	if err := s.Decide(context.Background(), ops); !errors.Is(err, floodgate.ErrClosed) || !errors.Is(ops[0].Err, floodgate.ErrClosed) {
		t.Errorf("after Close: %v, %v", err, ops[0].Err)
	}
}

func BenchmarkParallel(b *testing.B) {
	s := New(newMemory(), Options{})
	defer s.Close()
	l := floodgate.New(s)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		key := fmt.Sprintf("k%d", n.Add(1))
		for pb.Next() {
			_, _ = l.Allow(context.Background(), key, perYear)
		}
	})
}

// TestMaxWait: a caller queued behind a call that does not return, then
// sent in a call that does not return either, stops waiting after MaxWait
// each time, with ErrMaxWait; the queued one's op is never sent.
func TestMaxWait(t *testing.T) {
	g := newGated(newMemory())
	s := New(g, Options{MaxInFlight: 1, MaxWait: 20 * time.Millisecond})
	defer s.Close()
	bg := context.Background()
	leader := make(chan error, 1)
	go func() { _, err := floodgate.New(s).Allow(bg, "leader", perYear); leader <- err }()
	<-g.arrived

	// Queued, never sent.
	if _, err := floodgate.New(s).Allow(bg, "queued", perYear); !errors.Is(err, ErrMaxWait) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("queued caller: %v, want ErrMaxWait", err)
	}
	waitQueued(t, s, 0)

	// Queued, then sent in a call that stalls.
	sent := make(chan error, 1)
	go func() { _, err := floodgate.New(s).Allow(bg, "sent", perYear); sent <- err }()
	waitQueued(t, s, 1)
	g.release <- struct{}{} // the leader's call
	if err := <-leader; err != nil {
		t.Errorf("leader: %v", err)
	}
	if ops := <-g.arrived; len(ops) != 1 || ops[0].Key != "sent" {
		t.Errorf("next batch %v, want only key sent", ops)
	}
	if err := <-sent; !errors.Is(err, ErrMaxWait) {
		t.Errorf("sent caller: %v, want ErrMaxWait", err)
	}
	close(g.release)
}
