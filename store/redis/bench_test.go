package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/internal/redistest"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// Benchmarks run against a redis-server on loopback started by the
// benchmark (shared by the package). Every decision is one Decide call of
// one op, so one round trip, cost 1, on 10,000 keys picked at random, with a
// limit of 100 per second. b.SetParallelism(p) runs p × GOMAXPROCS
// goroutines.
//
//	go test ./store/redis -run '^$' -bench . -benchtime 20000x

const benchKeys = 10_000

var benchParallelism = []int{1, 16, 64}

// FLOODGATE_BENCH_REDIS=host:port runs them against that server instead (a
// redis-server under valgrind, say: scripts/script-instructions.sh).
func benchClient(b *testing.B) *goredis.Client {
	addr := os.Getenv("FLOODGATE_BENCH_REDIS")
	if addr == "" {
		addr = redistest.Shared(b).Addr
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr, PoolSize: 256})
	b.Cleanup(func() { c.Close() })
	return c
}

func BenchmarkDecide(b *testing.B) {
	for _, alg := range floodgate.Algorithms {
		l := floodgate.Limit{Algorithm: alg, Quota: 100, Window: time.Second}
		for _, p := range benchParallelism {
			b.Run(fmt.Sprintf("%v/p%d", alg, p), func(b *testing.B) {
				c := benchClient(b)
				s, err := redisstore.New(redisstore.Options{Client: c, Prefix: fmt.Sprintf("bench%d:", rand.Uint64())})
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				var allowed atomic.Int64
				b.SetParallelism(p)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					limits := []floodgate.Limit{l}
					ops := make([]floodgate.Op, 1)
					for pb.Next() {
						ops[0] = floodgate.Op{Key: "k" + strconv.Itoa(rand.IntN(benchKeys)), Limits: limits, Cost: 1}
						if err := s.Decide(ctx, ops); err != nil {
							b.Error(err)
							return
						}
						if ops[0].Result.Allowed {
							allowed.Add(1)
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
				b.ReportMetric(float64(allowed.Load())/float64(b.N), "allowed/op")
			})
		}
	}
}

// BenchmarkRedisRate is the yardstick: go-redis/redis_rate (GCRA, one
// EVALSHA per decision) on the same server, keys and limit.
func BenchmarkRedisRate(b *testing.B) {
	for _, p := range benchParallelism {
		b.Run(fmt.Sprintf("gcra/p%d", p), func(b *testing.B) {
			c := benchClient(b)
			lim := redis_rate.NewLimiter(c)
			prefix := fmt.Sprintf("rr%d:", rand.Uint64())
			ctx := context.Background()
			limit := redis_rate.PerSecond(100)
			b.SetParallelism(p)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := lim.Allow(ctx, prefix+strconv.Itoa(rand.IntN(benchKeys)), limit); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}

// BenchmarkMemoryUsage reports MEMORY USAGE (bytes, summed over the Redis
// keys of one limit) of one key after n admitted requests, for each
// algorithm; for the sliding window log and concurrency, n grows with the
// quota (one event or lease per request).
func BenchmarkMemoryUsage(b *testing.B) {
	type sizeCase struct {
		alg floodgate.Algorithm
		n   int
	}
	var cases []sizeCase
	for _, alg := range floodgate.Algorithms {
		cases = append(cases, sizeCase{alg, 1})
	}
	for _, n := range []int{10, 100, 1000, 10000} {
		cases = append(cases, sizeCase{floodgate.SlidingWindowLog, n}, sizeCase{floodgate.Concurrency, n})
	}
	for _, c := range cases {
		b.Run(fmt.Sprintf("%v/n%d", c.alg, c.n), func(b *testing.B) {
			rc := benchClient(b)
			s, err := redisstore.New(redisstore.Options{Client: rc, Prefix: fmt.Sprintf("mem%d:", rand.Uint64())})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			l := floodgate.Limit{Algorithm: c.alg, Quota: int64(max(c.n, 100)), Window: time.Hour}
			key := "user:42"
			var bytes int64
			for i := 0; i < b.N; i++ {
				key = "user:" + strconv.Itoa(i)
				base := int64(1_700_000_000_000_000)
				for j := 0; j < c.n; j += 500 {
					ops := make([]floodgate.Op, 0, 500)
					for k := j; k < min(j+500, c.n); k++ {
						ops = append(ops, floodgate.Op{Key: key, Limits: []floodgate.Limit{l}, Cost: 1, Now: base + int64(k)*1000})
					}
					if err := s.Decide(ctx, ops); err != nil {
						b.Fatal(err)
					}
				}
				bytes = 0
				k := s.Key(key, l)
				names := []string{k}
				switch c.alg {
				case floodgate.SlidingWindowLog:
					names = append(names, k+":sum")
				case floodgate.Concurrency:
					names = append(names, k+":units")
				}
				for _, name := range names {
					n, err := rc.MemoryUsage(ctx, name, 0).Result()
					if err != nil {
						b.Fatalf("MEMORY USAGE %s: %v", name, err)
					}
					bytes += n
				}
			}
			b.ReportMetric(float64(bytes), "bytes/key")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// serverCPU returns the Redis server's CPU time (user + system) in seconds.
func serverCPU(b *testing.B, c *goredis.Client) float64 {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var t float64
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		for _, k := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					b.Fatalf("INFO cpu line %q: %v", line, err)
				}
				t += f
			}
		}
	}
	return t
}

// BenchmarkDecideBatch decides batches of n ops (GCRA, 10,000 keys at
// random) from one goroutine, so that every batch is one round trip and
// ceil(n/MaxOpsPerCall) script calls, by FCALL (fcall/nN) or EVALSHA
// (eval/nN). It reports the Redis server's CPU time per decision: what
// bounds a single Redis core.
//
//	go test ./store/redis -run '^$' -bench DecideBatch -benchtime 40000x
func BenchmarkDecideBatch(b *testing.B) {
	l := []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1000, Window: time.Second}}
	for _, eval := range []bool{false, true} {
		for _, n := range []int{1, 8, 32, 128} {
			name := fmt.Sprintf("fcall/n%d", n)
			if eval {
				name = fmt.Sprintf("eval/n%d", n)
			}
			b.Run(name, func(b *testing.B) { benchDecideBatch(b, l, n, benchKeys, eval) })
		}
	}
}

// BenchmarkDecideBatchWarm is BenchmarkDecideBatch (FCALL) under windowed
// limits whose keys outlive the run (a fixed window and a sliding window
// counter of a minute, far above the load), on 1,000 keys: after its first
// decision, a key is overwritten within its window, the common case of a
// client under a fixed window. (Under the GCRA limit of BenchmarkDecideBatch
// a key lives a millisecond after each decision: nearly every decision
// writes a new key.)
func BenchmarkDecideBatchWarm(b *testing.B) {
	for _, alg := range []floodgate.Algorithm{floodgate.FixedWindow, floodgate.SlidingWindow} {
		l := []floodgate.Limit{{Algorithm: alg, Quota: 1_000_000_000, Window: time.Minute}}
		for _, n := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/n%d", alg, n), func(b *testing.B) { benchDecideBatch(b, l, n, 1000, false) })
		}
	}
}

func benchDecideBatch(b *testing.B, l []floodgate.Limit, n, keys int, eval bool) {
	c := benchClient(b)
	s, err := redisstore.New(redisstore.Options{Client: c, Prefix: fmt.Sprintf("batch%d:", rand.Uint64()), NoFunctions: eval})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ops := make([]floodgate.Op, n)
	cpu := serverCPU(b, c)
	b.ResetTimer()
	for done := 0; done < b.N; done += n {
		batch := ops[:min(n, b.N-done)]
		for i := range batch {
			batch[i] = floodgate.Op{Key: "k" + strconv.Itoa(rand.IntN(keys)), Limits: l, Cost: 1}
		}
		if err := s.Decide(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	b.ReportMetric((serverCPU(b, c)-cpu)*1e6/float64(b.N), "redis-µs/op")
}
