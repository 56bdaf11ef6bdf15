package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/bench"
	"github.com/floodgate/floodgate/internal/proctest"
	"github.com/floodgate/floodgate/internal/redistest"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// Exactness across processes: 4 floodgate serve processes share one Redis;
// 1,000 requests for one key (100 per minute) are spread over them by 64
// concurrent clients.
const (
	exactProcs    = 4
	exactRequests = 1000
	exactClients  = 64
	exactQuota    = 100
)

var exactAlgorithms = []string{"fixed_window", "sliding_window_log", "sliding_window", "token_bucket", "gcra"}

// limitJSON is the limit of the exactness tests: 100 per minute (burst 100
// for the token bucket and GCRA).
func limitJSON(alg string) string {
	burst := ""
	if alg == "token_bucket" || alg == "gcra" {
		burst = fmt.Sprintf(`,"burst":%d`, exactQuota)
	}
	return fmt.Sprintf(`{"algorithm":%q,"quota":%d,"window":"1m"%s}`, alg, exactQuota, burst)
}

// hammer sends n requests for each key, spread round-robin over the
// processes by clients goroutines, and returns the admitted count per key
// and the wall time from before the first request to after the last answer.
func hammer(t *testing.T, ps []*proctest.Process, keys []string, alg string, n int) (map[string]int, time.Duration) {
	t.Helper()
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: exactClients, MaxConnsPerHost: exactClients},
	}
	defer client.CloseIdleConnections()
	urls := make([]string, len(ps))
	for i, p := range ps {
		urls[i] = p.URL("/v1/check")
	}
	type job struct {
		key string
		i   int
	}
	jobs := make(chan job, n*len(keys))
	for i := 0; i < n; i++ {
		for _, k := range keys {
			jobs <- job{k, i}
		}
	}
	close(jobs)
	var mu sync.Mutex
	allowed := map[string]int{}
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < exactClients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				body := fmt.Sprintf(`{"key":%q,"cost":1,"limit":%s}`, j.key, limitJSON(alg))
				resp, err := client.Post(urls[j.i%len(urls)], "application/json", strings.NewReader(body))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				var r struct {
					Allowed bool   `json:"allowed"`
					Error   string `json:"error"`
				}
				err = json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				switch {
				case err == nil && resp.StatusCode == http.StatusOK && r.Allowed:
					mu.Lock()
					allowed[j.key]++
					mu.Unlock()
				case err == nil && resp.StatusCode == http.StatusTooManyRequests && !r.Allowed:
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %v %s", resp.Status, err, r.Error))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		t.Fatalf("%s: %d of %d requests failed; first: %v", alg, f, n*len(keys), firstErr.Load())
	}
	return allowed, elapsed
}

// serverMinute returns Redis's clock as seconds into the current minute.
func serverMinute(t *testing.T, c goredis.UniversalClient) (minute int64, second int64) {
	t.Helper()
	now, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return now.Unix() / 60, now.Unix() % 60
}

// awayFromMinuteEdge waits (at most 20s) until Redis's clock is at most 40s
// into a minute, so that a run of a few seconds stays within one aligned
// one-minute window.
func awayFromMinuteEdge(t *testing.T, c goredis.UniversalClient) int64 {
	t.Helper()
	for deadline := time.Now().Add(25 * time.Second); time.Now().Before(deadline); {
		m, s := serverMinute(t, c)
		if s <= 40 {
			return m
		}
		time.Sleep(time.Duration(61-s) * time.Second / 4)
	}
	t.Fatal("Redis clock never got away from the minute edge")
	return 0
}

// checkExact asserts the admitted count: exactly the quota for the window
// algorithms; for the token bucket and GCRA (burst 100), at least the burst
// and at most the burst plus what refilled in the measured elapsed time.
func checkExact(t *testing.T, alg, key string, got int, elapsed time.Duration) {
	t.Helper()
	switch alg {
	case "token_bucket":
		// Refill: 100 per minute, continuous.
		bound := exactQuota + int(elapsed.Microseconds()*exactQuota/time.Minute.Microseconds())
		if got < exactQuota || got > bound {
			t.Errorf("%s key %q: admitted %d in %v, want %d to %d (burst + refill)", alg, key, got, elapsed, exactQuota, bound)
		}
	case "gcra":
		// Emission interval ceil(60s/100) = 600ms.
		interval := (time.Minute.Microseconds() + exactQuota - 1) / exactQuota
		bound := exactQuota + int(elapsed.Microseconds()/interval)
		if got < exactQuota || got > bound {
			t.Errorf("%s key %q: admitted %d in %v, want %d to %d (burst + elapsed/interval)", alg, key, got, elapsed, exactQuota, bound)
		}
	default:
		if got != exactQuota {
			t.Errorf("%s key %q: admitted %d of %d requests over %d processes, want exactly %d", alg, key, got, exactRequests, exactProcs, exactQuota)
		}
	}
	t.Logf("%s key %q: admitted %d in %v", alg, key, got, elapsed)
}

func runExactness(t *testing.T, ps []*proctest.Process, c goredis.UniversalClient, keys func(alg string) []string) {
	for _, alg := range exactAlgorithms {
		ks := keys(alg)
		var minute int64
		windowed := alg == "fixed_window" || alg == "sliding_window"
		if windowed {
			minute = awayFromMinuteEdge(t, c)
		}
		allowed, elapsed := hammer(t, ps, ks, alg, exactRequests)
		if windowed {
			if m, _ := serverMinute(t, c); m != minute {
				t.Fatalf("%s: the run took %v and crossed a minute boundary of Redis's clock; counts %v", alg, elapsed, allowed)
			}
		}
		for _, k := range ks {
			checkExact(t, alg, k, allowed[k], elapsed)
		}
	}
}

func TestRedisExactnessStandalone(t *testing.T) {
	srv := redistest.StartServer(t)
	// Exactness, not latency, is measured here: race-instrumented servers on
	// a small machine need more than the production store deadline.
	ps := proctest.ServeN(t, exactProcs, "--store", "redis://"+srv.Addr, "--store-timeout", "2s")
	c := srv.Client()
	defer c.Close()
	suffix := fmt.Sprint(rand.Uint64())
	runExactness(t, ps, c, func(alg string) []string { return []string{"exact:" + alg + ":" + suffix} })
	checkFastPath(t, ps)
}

// On a 3-master cluster, with one key on each master.
func TestRedisExactnessCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	ps := proctest.ServeN(t, exactProcs, "--store", "redis-cluster://"+strings.Join(cl.Addrs(), ","), "--store-timeout", "2s")
	c := cl.Client()
	defer c.Close()
	suffix := fmt.Sprint(rand.Uint64())
	runExactness(t, ps, c, func(alg string) []string { return keysOnEveryMaster(t, c, "exact:"+alg+":"+suffix) })
	checkFastPath(t, ps)
}

// checkFastPath asserts that the processes decided with their defaults'
// fast path, batching and the over-limit cache, from their metrics.
func checkFastPath(t *testing.T, ps []*proctest.Process) {
	t.Helper()
	var ops, hits float64
	for _, p := range ps {
		m := scrape(t, p.URL("/metrics"))
		ops += m["floodgate_batch_ops_total"]
		hits += m["floodgate_overlimit_cache_hits_total"]
	}
	if ops == 0 || hits == 0 {
		t.Errorf("batched ops %v, over-limit cache hits %v: want both above 0 (on by default)", ops, hits)
	}
	t.Logf("batched ops %v, over-limit cache hits %v", ops, hits)
}

// A hot key far over its limit costs far fewer Redis calls than decisions:
// one serve process with its defaults, 2,000 requests for one key allowed
// 10 per hour, from 16 clients; Redis's INFO commandstats counts the script
// calls.
func TestRedisHotKey(t *testing.T) {
	srv := redistest.StartServer(t)
	p := proctest.Serve(t, "--store", "redis://"+srv.Addr, "--store-timeout", "2s")
	read, closeStats, err := bench.RedisCommandStats("redis://" + srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStats()
	scripts := func() int64 {
		m, err := read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return m["evalsha"] + m["eval"]
	}
	const requests, clients = 2000, 16
	key := fmt.Sprintf("hot:%d", rand.Uint64())
	body := fmt.Sprintf(`{"key":%q,"cost":1,"limit":{"algorithm":"fixed_window","quota":10,"window":"1h"}}`, key)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer client.CloseIdleConnections()
	before := scripts()
	var next, allowed, denied atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= requests {
				resp, err := client.Post(p.URL("/v1/check"), "application/json", strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					allowed.Add(1)
				case http.StatusTooManyRequests:
					denied.Add(1)
				default:
					t.Errorf("POST /v1/check: %s", resp.Status)
					return
				}
			}
		})
	}
	wg.Wait()
	calls := scripts() - before
	if allowed.Load() != 10 || allowed.Load()+denied.Load() != requests {
		t.Fatalf("allowed %d, denied %d: want 10 and %d", allowed.Load(), denied.Load(), requests-10)
	}
	// The calls include the process's membership heartbeats.
	if calls*10 > requests {
		t.Errorf("%d script calls for %d decisions: want at least 10 times fewer", calls, requests)
	}
	t.Logf("%d script calls for %d decisions", calls, requests)
}

// keysOnEveryMaster returns one key per master: base:0, base:1, ... picked
// so that their Redis keys' slots fall on distinct masters.
func keysOnEveryMaster(t *testing.T, c *goredis.ClusterClient, base string) []string {
	t.Helper()
	ctx := context.Background()
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	owner := func(slot int64) string {
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) {
				return s.Nodes[0].Addr
			}
		}
		return ""
	}
	s, err := redisstore.New(redisstore.Options{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second}
	seen := map[string]bool{}
	var keys []string
	for i := 0; i < 1000 && len(seen) < len(slots); i++ {
		k := fmt.Sprintf("%s:%d", base, i)
		slot, err := c.ClusterKeySlot(ctx, s.Key(k, l)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if o := owner(slot); o != "" && !seen[o] {
			seen[o] = true
			keys = append(keys, k)
		}
	}
	if len(seen) < 3 {
		t.Fatalf("keys reach %d masters, want 3", len(seen))
	}
	return keys
}
