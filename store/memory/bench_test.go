package memory_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/store/memory"
	"github.com/sethvargo/go-limiter/memorystore"
	"golang.org/x/time/rate"
)

// manyKeys is the key cardinality of the "1M" benchmarks.
const manyKeys = 1 << 20

var benchKeys = func() []string {
	k := make([]string, manyKeys)
	for i := range k {
		k[i] = "user:" + strconv.Itoa(i)
	}
	return k
}()

// benchLimit returns the limit each algorithm is measured with. The rate
// limits admit (nearly) every request, so decisions take the admitting path
// (the one that writes state), and their states stay live for the whole run,
// so every decision finds its key held: on the hot key a billion a second;
// on 1M keys, where each key is visited a few times a second, a long window
// that refills slower than that. The log and lease limits would have to hold
// every event, so they get 100 a second and mostly deny on the hot key.
func benchLimit(a floodgate.Algorithm, keys int) floodgate.Limit {
	switch a {
	case floodgate.SlidingWindowLog, floodgate.Concurrency:
		return floodgate.Limit{Algorithm: a, Quota: 100, Window: time.Second}
	case floodgate.SlidingWindow:
		return floodgate.Limit{Algorithm: a, Quota: 1 << 30, Window: time.Second}
	case floodgate.FixedWindow:
		return floodgate.Limit{Algorithm: a, Quota: 1 << 40, Window: 24 * time.Hour}
	}
	if keys > 1 {
		return floodgate.Limit{Algorithm: a, Quota: 1e6, Window: floodgate.MaxWindow}
	}
	return floodgate.Limit{Algorithm: a, Quota: 1e9, Window: time.Second}
}

func BenchmarkDecide(b *testing.B) {
	for _, a := range floodgate.Algorithms {
		for _, keys := range []int{1, manyKeys} {
			name := a.String() + "/hot"
			if keys > 1 {
				name = a.String() + "/1M"
			}
			b.Run(name+"/serial", func(b *testing.B) { benchDecide(b, a, keys, false, nil) })
			b.Run(name+"/parallel", func(b *testing.B) { benchDecide(b, a, keys, true, nil) })
			if keys == 1 && (a == floodgate.FixedWindow || a == floodgate.TokenBucket || a == floodgate.GCRA) {
				b.Run(name+"/serial/precise-clock", func(b *testing.B) {
					benchDecide(b, a, keys, false, memory.PreciseClock())
				})
			}
		}
	}
}

func benchDecide(b *testing.B, a floodgate.Algorithm, keys int, parallel bool, clock func() int64) {
	s := memory.New(memory.Options{Capacity: 2 * manyKeys, Clock: clock})
	defer s.Close()
	ctx := context.Background()
	limits := []floodgate.Limit{benchLimit(a, keys)}
	// Every key exists before the clock starts.
	for i := range keys {
		ops := []floodgate.Op{{Key: benchKeys[i], Limits: limits, Cost: 1}}
		if err := s.Decide(ctx, ops); err != nil {
			b.Fatal(err)
		}
	}
	mask := keys - 1
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		ops := make([]floodgate.Op, 1)
		for i := 0; b.Loop(); i++ {
			ops[0] = floodgate.Op{Key: benchKeys[i&mask], Limits: limits, Cost: 1}
			if err := s.Decide(ctx, ops); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.RunParallel(func(pb *testing.PB) {
		ops := make([]floodgate.Op, 1)
		i := rand.IntN(manyKeys)
		for pb.Next() {
			ops[0] = floodgate.Op{Key: benchKeys[i&mask], Limits: limits, Cost: 1}
			if err := s.Decide(ctx, ops); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkYardstick measures golang.org/x/time/rate's Allow on one limiter
// and sethvargo/go-limiter's memorystore Take, by the same harness.
func BenchmarkYardstick(b *testing.B) {
	b.Run("x-time-rate/hot/serial", func(b *testing.B) {
		l := rate.NewLimiter(1e9, 1e9)
		b.ReportAllocs()
		for b.Loop() {
			l.Allow()
		}
	})
	b.Run("x-time-rate/hot/parallel", func(b *testing.B) {
		l := rate.NewLimiter(1e9, 1e9)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow()
			}
		})
	})
	b.Run("x-time-rate/1M/serial", func(b *testing.B) { benchRateMap(b, false) })
	b.Run("x-time-rate/1M/parallel", func(b *testing.B) { benchRateMap(b, true) })
	for _, keys := range []int{1, manyKeys} {
		name := "go-limiter/hot"
		if keys > 1 {
			name = "go-limiter/1M"
		}
		b.Run(name+"/serial", func(b *testing.B) { benchGoLimiter(b, keys, false) })
		b.Run(name+"/parallel", func(b *testing.B) { benchGoLimiter(b, keys, true) })
	}
}

// benchRateMap measures x/time/rate the way it is used per key: one
// *rate.Limiter per key in a map behind a mutex, 1M keys all held.
func benchRateMap(b *testing.B, parallel bool) {
	var mu sync.Mutex
	m := make(map[string]*rate.Limiter, manyKeys)
	allow := func(key string) bool {
		mu.Lock()
		l, ok := m[key]
		if !ok {
			l = rate.NewLimiter(1e9, 1e9)
			m[key] = l
		}
		mu.Unlock()
		return l.Allow()
	}
	for i := range manyKeys {
		allow(benchKeys[i])
	}
	mask := manyKeys - 1
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for i := 0; b.Loop(); i++ {
			allow(benchKeys[i&mask])
		}
		return
	}
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(manyKeys)
		for pb.Next() {
			allow(benchKeys[i&mask])
			i++
		}
	})
}

func benchGoLimiter(b *testing.B, keys int, parallel bool) {
	st, err := memorystore.New(&memorystore.Config{Tokens: 1e9, Interval: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	defer st.Close(ctx)
	for i := range keys {
		if _, _, _, _, err := st.Take(ctx, benchKeys[i]); err != nil {
			b.Fatal(err)
		}
	}
	mask := keys - 1
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for i := 0; b.Loop(); i++ {
			st.Take(ctx, benchKeys[i&mask])
		}
		return
	}
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(manyKeys)
		for pb.Next() {
			st.Take(ctx, benchKeys[i&mask])
			i++
		}
	})
}

// BenchmarkMemoryPerKey reports the heap held per key (B/key) with
// 1,000,000 keys, each with state under one limit: the HeapAlloc delta after
// a GC, keys' strings excluded. Run it with -benchtime=1x.
func BenchmarkMemoryPerKey(b *testing.B) {
	const n = 1_000_000
	for _, a := range floodgate.Algorithms {
		b.Run(a.String(), func(b *testing.B) {
			// A limit whose states stay live for the whole measurement.
			limits := []floodgate.Limit{{Algorithm: a, Quota: 100, Window: time.Hour}}
			ctx := context.Background()
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				s := memory.New(memory.Options{Capacity: 2 * n})
				ops := make([]floodgate.Op, 1)
				for i := range n {
					ops[0] = floodgate.Op{Key: benchKeys[i], Limits: limits, Cost: 1}
					if err := s.Decide(ctx, ops); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if s.Len() != n {
					b.Fatalf("Len = %d, want %d", s.Len(), n)
				}
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "B/key")
				s.Close()
			}
		})
	}
}

// BenchmarkClock measures the ways a decision can read the time.
func BenchmarkClock(b *testing.B) {
	var sink int64
	b.Run("time.Now", func(b *testing.B) {
		for b.Loop() {
			sink += time.Now().UnixMicro()
		}
	})
	b.Run("time.Since", func(b *testing.B) {
		base := time.Now()
		for b.Loop() {
			sink += int64(time.Since(base))
		}
	})
	b.Run("PreciseClock", func(b *testing.B) {
		c := memory.PreciseClock()
		for b.Loop() {
			sink += c()
		}
	})
	_ = sink
}
