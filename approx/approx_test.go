package approx_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
	"github.com/floodgate/floodgate/internal/redistest"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

func TestMain(m *testing.M) {
	code := m.Run()
	redistest.StopShared()
	os.Exit(code)
}

// newRemote returns a Redis store on the shared server with a prefix of its
// own, so that tests do not see each other's counters.
func newRemote(t testing.TB) *redisstore.Store {
	t.Helper()
	r, err := redisstore.New(redisstore.Options{
		Addrs:  []string{redistest.Shared(t).Addr},
		Prefix: fmt.Sprintf("t%d:", rand.Uint64()),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// newStore returns an approximate store without background sync: the test
// syncs it.
func newStore(t testing.TB, remote approx.Remote) *approx.Store {
	t.Helper()
	s, err := approx.New(remote, approx.Options{SyncInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func syncNow(t testing.TB, s *approx.Store) {
	t.Helper()
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// base returns a window start just ahead of the real clock, so that the
// explicit instants of a test stay near the present (the counters' expiry
// is set by them).
func base(w time.Duration) int64 {
	us := w.Microseconds()
	now := time.Now().UnixMicro()
	return now - now%us + us
}

func decide(t testing.TB, s *approx.Store, key string, now, cost int64, limits ...floodgate.Limit) floodgate.Result {
	t.Helper()
	ops := []floodgate.Op{{Key: key, Limits: limits, Cost: cost, Now: now}}
	if err := s.Decide(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	return ops[0].Result
}

func TestUnsupported(t *testing.T) {
	s := newStore(t, newRemote(t))
	for _, l := range []floodgate.Limit{
		{Algorithm: floodgate.TokenBucket, Quota: 10, Window: time.Second},
		{Algorithm: floodgate.GCRA, Quota: 10, Window: time.Second},
		{Algorithm: floodgate.SlidingWindowLog, Quota: 10, Window: time.Second},
		{Algorithm: floodgate.Concurrency, Quota: 10, Window: time.Second},
	} {
		ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Second}, l}, Cost: 1}}
		err := s.Decide(context.Background(), ops)
		if !errors.Is(err, floodgate.ErrInvalid) || !errors.Is(ops[0].Err, floodgate.ErrInvalid) {
			t.Errorf("%v: err %v, op err %v; want ErrInvalid", l, err, ops[0].Err)
		}
	}
	ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Second}}, Release: true, Lease: "x"}}
	if err := s.Decide(context.Background(), ops); !errors.Is(err, floodgate.ErrInvalid) {
		t.Errorf("release: err %v, want ErrInvalid", err)
	}
	ops = []floodgate.Op{{Key: "", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Second}}, Cost: 1}}
	if err := s.Decide(context.Background(), ops); !errors.Is(err, floodgate.ErrInvalid) {
		t.Errorf("empty key: err %v, want ErrInvalid", err)
	}
	if _, err := approx.New(nil, approx.Options{}); err == nil {
		t.Error("New(nil remote): no error")
	}
}

// TestSingleInstanceExact checks that one instance decides exactly as the
// core's algorithm over one state does, whenever it syncs: its global total
// plus its local count is always the true count.
func TestSingleInstanceExact(t *testing.T) {
	limits := [][]floodgate.Limit{
		{{Algorithm: floodgate.FixedWindow, Quota: 20, Window: time.Second}},
		{{Algorithm: floodgate.SlidingWindow, Quota: 20, Window: time.Second}},
		{{Algorithm: floodgate.FixedWindow, Quota: 7, Window: 300 * time.Millisecond}, {Algorithm: floodgate.SlidingWindow, Quota: 30, Window: 2 * time.Second}},
	}
	for li, ls := range limits {
		t.Run(fmt.Sprint(li), func(t *testing.T) {
			s := newStore(t, newRemote(t))
			rng := rand.New(rand.NewPCG(uint64(li), 7))
			states := make([]floodgate.State, len(ls))
			now := base(2 * time.Second)
			for i := range 600 {
				now += rng.Int64N(20_000)
				cost := rng.Int64N(4)
				op := floodgate.Op{Key: "k", Limits: ls, Cost: cost, Now: now}
				want := op
				floodgate.Apply(&want, states, now)
				got := decide(t, s, "k", now, cost, ls...)
				if got != want.Result {
					t.Fatalf("op %d at +%dµs cost %d: got %+v, want %+v", i, now%1_000_000, cost, got, want.Result)
				}
				if rng.IntN(10) == 0 {
					syncNow(t, s)
				}
			}
		})
	}
}

// TestSyncPushesTotals checks that a sync pushes the admitted cost to Redis
// and that a fresh instance starts from the global total once it has synced.
func TestSyncPushesTotals(t *testing.T) {
	remote := newRemote(t)
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: 10 * time.Second}
	now := base(l.Window)
	a := newStore(t, remote)
	for range 7 {
		if r := decide(t, a, "k", now, 1, l); !r.Allowed {
			t.Fatal("denied under quota")
		}
	}
	syncNow(t, a)
	key := remote.CounterKey(approx.Counter{Key: "k", Limit: l, Start: now})
	if v, err := remote.Client().Get(context.Background(), key).Int64(); err != nil || v != 7 {
		t.Fatalf("redis %s = %d, %v; want 7", key, v, err)
	}
	if ttl := remote.Client().PTTL(context.Background(), key).Val(); ttl <= 0 {
		t.Fatalf("redis %s has no expiry (PTTL %v)", key, ttl)
	}
	b := newStore(t, remote)
	// Before its first sync, b knows nothing of a's count.
	if r := decide(t, b, "k", now+1, 0, l); r.Remaining != 10 {
		t.Fatalf("b before sync: remaining %d, want 10", r.Remaining)
	}
	syncNow(t, b)
	if r := decide(t, b, "k", now+2, 0, l); r.Remaining != 3 {
		t.Fatalf("b after sync: remaining %d, want 3", r.Remaining)
	}
	for i := range 3 {
		if r := decide(t, b, "k", now+3, 1, l); !r.Allowed {
			t.Fatalf("b request %d denied with 3 left", i)
		}
	}
	if r := decide(t, b, "k", now+4, 1, l); r.Allowed || r.RetryAfter <= 0 {
		t.Fatalf("b over quota: %+v, want a denial with a wait", r)
	}
	// Close flushes b's 3.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if v, _ := remote.Client().Get(context.Background(), key).Int64(); v != 10 {
		t.Fatalf("after b's close: redis = %d, want 10", v)
	}
	if err := b.Decide(context.Background(), []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{l}, Cost: 1}}); !errors.Is(err, floodgate.ErrClosed) {
		t.Fatalf("decide after close: %v, want ErrClosed", err)
	}
}

// TestConverge checks that after every instance has synced twice (once to
// push, once to read the others' pushes), all see the same global count. A
// sync reads only the counters decided since the previous one, so each
// instance peeks before its second sync.
func TestConverge(t *testing.T) {
	remote := newRemote(t)
	limits := []floodgate.Limit{
		{Algorithm: floodgate.FixedWindow, Quota: 1000, Window: 10 * time.Second},
		{Algorithm: floodgate.SlidingWindow, Quota: 1000, Window: 10 * time.Second},
	}
	now := base(20 * time.Second)
	stores := make([]*approx.Store, 3)
	var total int64
	for i := range stores {
		stores[i] = newStore(t, remote)
		for j := range 10 * (i + 1) {
			cost := int64(j%3 + 1)
			if r := decide(t, stores[i], "k", now+int64(j), cost, limits...); !r.Allowed {
				t.Fatalf("store %d denied under quota", i)
			}
			total += cost
		}
	}
	for _, s := range stores {
		syncNow(t, s)
	}
	for _, s := range stores {
		decide(t, s, "k", now+50, 0, limits...)
		syncNow(t, s)
	}
	for i, s := range stores {
		ops := []floodgate.Op{{Key: "k", Limits: limits, Now: now + 100, Each: make([]floodgate.Result, 2)}}
		if err := s.Decide(context.Background(), ops); err != nil {
			t.Fatal(err)
		}
		for k, r := range ops[0].Each {
			if r.Remaining != 1000-total {
				t.Errorf("store %d, %v: remaining %d, want %d", i, limits[k].Algorithm, r.Remaining, 1000-total)
			}
		}
	}
	// In the next window the sliding window counter still weighs the
	// previous window's global total: each instance read it.
	next := now + 10_000_000 + 5_000_000 // halfway through the next window
	for i, s := range stores {
		syncNow(t, s)
		want := 1000 - (total+1)/2
		if r := decide(t, s, "k", next, 0, limits[1]); r.Remaining != want {
			t.Errorf("store %d next window: remaining %d, want %d", i, r.Remaining, want)
		}
	}
}

// TestMultiLimitDenialConsumesNothing checks all-or-nothing ops locally and
// after sync.
func TestMultiLimitDenialConsumesNothing(t *testing.T) {
	remote := newRemote(t)
	s := newStore(t, remote)
	short := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 3, Window: time.Second}
	long := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 100, Window: 10 * time.Second}
	now := base(10 * time.Second)
	for range 5 {
		decide(t, s, "k", now, 1, short, long)
	}
	syncNow(t, s)
	if r := decide(t, s, "k", now, 0, long); r.Remaining != 97 {
		t.Fatalf("long limit: remaining %d, want 97 (denials must consume nothing)", r.Remaining)
	}
	if v, _ := remote.Client().Get(context.Background(), remote.CounterKey(approx.Counter{Key: "k", Limit: long, Start: now})).Int64(); v != 3 {
		t.Fatalf("redis long counter %d, want 3", v)
	}
}

// TestRemoteDown checks that decisions go on from local counts while the
// remote is unreachable, and that the cost admitted meanwhile is pushed
// once it is back.
func TestRemoteDown(t *testing.T) {
	srv := redistest.StartServer(t)
	remote, err := redisstore.New(redisstore.Options{Addrs: []string{srv.Addr}, DialTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	s, err := approx.New(remote, approx.Options{SyncInterval: -1, SyncTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: 10 * time.Second}
	now := base(l.Window)
	for range 4 {
		decide(t, s, "k", now, 1, l)
	}
	syncNow(t, s)
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		decide(t, s, "k", now+1, 1, l)
	}
	start := time.Now()
	err = s.Sync(context.Background())
	if err == nil {
		t.Fatal("sync with Redis paused: no error")
	}
	t.Logf("sync with Redis paused: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if r := decide(t, s, "k", now+2, 0, l); r.Remaining != 3 {
		t.Fatalf("remaining %d after a failed sync, want 3", r.Remaining)
	}
	if st := s.Stats(); st.SyncErrors != 1 || st.LastError == nil {
		t.Fatalf("stats %+v, want one sync error", st)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	// The paused server may still answer the timed-out sync's commands: the
	// store pushes those 3 again, and counts them twice rather than never.
	syncNow(t, s)
	key := remote.CounterKey(approx.Counter{Key: "k", Limit: l, Start: now})
	v, _ := remote.Client().Get(context.Background(), key).Int64()
	if v != 7 && v != 10 {
		t.Fatalf("redis = %d after recovery, want 7 (or 10 if the lost sync ran)", v)
	}
	t.Logf("redis counter after recovery: %d", v)
}

// TestConcurrentConservation decides from many goroutines on two stores
// whose background syncs run every 5ms, until each has synced 10 times, and
// checks that once both are
// closed (which flushes), the Redis counter holds exactly the admitted cost:
// every admission is pushed once, none lost, none twice.
func TestConcurrentConservation(t *testing.T) {
	remote := newRemote(t)
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 300_000, Window: 10 * time.Second}
	now := base(l.Window)
	stores := make([]*approx.Store, 2)
	for i := range stores {
		s, err := approx.New(remote, approx.Options{SyncInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	var admitted atomic.Int64
	var wg gosync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			s := stores[g%2]
			// Until the store has synced 10 times under load, or 200,000
			// decisions.
			for i := range 200_000 {
				if i%256 == 0 && s.Stats().Syncs >= 10 {
					break
				}
				ops := []floodgate.Op{{Key: "hot", Limits: []floodgate.Limit{l}, Cost: int64(i%3 + 1), Now: now + int64(i)}}
				if err := s.Decide(context.Background(), ops); err != nil {
					t.Error(err)
					return
				}
				if ops[0].Result.Allowed {
					admitted.Add(ops[0].Cost)
				}
			}
		})
	}
	wg.Wait()
	for _, s := range stores {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	key := remote.CounterKey(approx.Counter{Key: "hot", Limit: l, Start: now})
	v, err := remote.Client().Get(context.Background(), key).Int64()
	if err != nil || v != admitted.Load() {
		t.Fatalf("redis counter %d (%v), admitted %d", v, err, admitted.Load())
	}
	t.Logf("admitted %d of quota %d over 2 instances; syncs %d and %d", v, l.Quota, stores[0].Stats().Syncs, stores[1].Stats().Syncs)
}

// TestTableFull sprays keys at a store whose table holds 64 entries: the
// table stays within its bound, a key that finds it full is still never
// admitted more than its quota, the table makes room again once windows
// pass, and an op whose limit finds no shared entry either fails with
// ErrTableFull.
func TestTableFull(t *testing.T) {
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Second}
	now := base(time.Second)
	s, err := approx.New(newRemote(t), approx.Options{SyncInterval: -1, MaxKeys: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	admitted := 0
	for i := range 10_000 {
		if decide(t, s, fmt.Sprintf("spray%d", i), now, 1, l).Allowed {
			admitted++
		}
	}
	st := s.Stats()
	if st.Entries > 64 || st.Shared > 64 {
		t.Fatalf("after 10,000 keys: %d entries and %d shared, want at most 64 each", st.Entries, st.Shared)
	}
	// Each shard: its own key's quota and the shared entry's.
	if admitted > 64*2*5 {
		t.Errorf("admitted %d of 10,000 sprayed keys, want at most %d", admitted, 64*2*5)
	}
	victim := 0
	for range 10 {
		if decide(t, s, "victim", now, 1, l).Allowed {
			victim++
		}
	}
	if victim > 5 {
		t.Errorf("a key that found the table full was admitted %d times, quota 5", victim)
	}

	// Once the window has passed every entry has expired: a sync pushes
	// what the keys of their own admitted, a later one frees the table.
	syncNow(t, s)
	time.Sleep(time.Until(time.UnixMicro(now + 2*time.Second.Microseconds())))
	syncNow(t, s)
	later := base(time.Second)
	if st := s.Stats(); st.Entries != 0 || st.Shared != 0 {
		t.Errorf("after the windows passed: %d entries and %d shared, want none", st.Entries, st.Shared)
	}

	// Distinct limits fill the shared entries too, then ops fail.
	var full int
	for i := range 64 * 1500 {
		lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: int64(1 + i), Window: time.Hour}
		ops := []floodgate.Op{{Key: fmt.Sprintf("limits%d", i), Limits: []floodgate.Limit{lim}, Cost: 1, Now: later}}
		if err := s.Decide(context.Background(), ops); errors.Is(err, approx.ErrTableFull) {
			full++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); full == 0 || st.Shared > 64*1024 || st.Entries > 64 {
		t.Errorf("distinct limits: %d ops failed with ErrTableFull, %d entries, %d shared; want some failed and the bounds kept", full, st.Entries, st.Shared)
	}
}
