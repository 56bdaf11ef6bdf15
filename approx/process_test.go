package approx_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate/internal/proctest"
	"github.com/floodgate/floodgate/internal/redistest"
)

// The 4-process measurement: 4 floodgate serve processes share one Redis
// and decide one approximate fixed-window rule; each receives a paced load
// for one key.
const (
	procs       = 4
	procRate    = 250 // requests per second to each process
	procCount   = 500 // requests to each process (2 s at procRate)
	procWorkers = 8   // concurrent clients per process
	procQuota   = 1000
	procWindow  = 5 * time.Second
)

var maxSyncRE = regexp.MustCompile(`max_sync=(\S+)`)

// TestFourProcesses hammers one key of an approximate rule through 4 real
// floodgate serve processes within one window of Redis's clock, and checks
// the admitted count against the bound of docs/approximate.md:
//
//	admitted ≤ quota + max over i of Σ_{j≠i} n_j(2Δ+L) + Σ_j n_j(Δ+L)
//
// with Δ = sync interval + the longest sync any process made (each logs it
// when it stops), L the longest request latency (the client sees when an
// answer arrives, the server decided it up to L earlier), and n_j(X) the
// most requests process j admitted in any X, counted by answer time.
func TestFourProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 floodgate processes")
	}
	srv := redistest.StartServer(t)
	for _, interval := range []time.Duration{100 * time.Millisecond, 25 * time.Millisecond} {
		t.Run("sync="+interval.String(), func(t *testing.T) { fourProcesses(t, srv, interval) })
	}
}

func fourProcesses(t *testing.T, srv *redistest.Server, procSync time.Duration) {
	rulesFile := filepath.Join(t.TempDir(), "approx.yaml")
	rules := fmt.Sprintf(`domain: approx
descriptors:
  - key: client
    consistency: approximate
    rate_limits:
      - {algorithm: fixed_window, requests_per_unit: %d, window: %v}
`, procQuota, procWindow)
	if err := os.WriteFile(rulesFile, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	ps := proctest.ServeN(t, procs, "--store", "redis://"+srv.Addr, "--config", rulesFile, "--sync-interval", procSync.String(), "--store-timeout", "2s")

	// Start just after a window boundary of Redis's clock, so that the run
	// stays in one window.
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	start := now.Truncate(procWindow).Add(procWindow)
	time.Sleep(time.Until(start.Add(20 * time.Millisecond)))

	key := fmt.Sprint(rand.Uint64())
	body := fmt.Sprintf(`{"domain":"approx","descriptors":[{"entries":[{"key":"client","value":%q}]}]}`, key)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: procWorkers}}
	defer client.CloseIdleConnections()
	type answer struct {
		at      time.Duration // since start, when the answer arrived
		latency time.Duration
		allowed bool
	}
	answers := make([][]answer, procs)
	var failed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	var wg sync.WaitGroup
	begin := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i, p := range ps {
		tokens := make(chan struct{})
		wg.Go(func() { // the pacer
			defer close(tokens)
			tick := time.NewTicker(time.Second / procRate)
			defer tick.Stop()
			for range procCount {
				select {
				case <-tick.C:
				case <-runCtx.Done():
					return
				}
				tokens <- struct{}{}
			}
		})
		var mu sync.Mutex
		for range procWorkers {
			wg.Go(func() {
				for range tokens {
					sent := time.Now()
					resp, err := client.Post(p.URL("/json"), "application/json", strings.NewReader(body))
					if err != nil {
						fail(err)
						continue
					}
					var r struct {
						OverallCode string `json:"overallCode"`
					}
					err = json.NewDecoder(resp.Body).Decode(&r)
					resp.Body.Close()
					ok := (resp.StatusCode == http.StatusOK && r.OverallCode == "OK") || (resp.StatusCode == http.StatusTooManyRequests && r.OverallCode == "OVER_LIMIT")
					if err != nil || !ok {
						fail(fmt.Errorf("%s %q: %v", resp.Status, r.OverallCode, err))
						continue
					}
					got := time.Now()
					mu.Lock()
					answers[i] = append(answers[i], answer{got.Sub(begin), got.Sub(sent), r.OverallCode == "OK"})
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d requests failed; first: %v", f, firstErr.Load())
	}
	if end, _ := c.Time(ctx).Result(); end.Sub(start) >= procWindow {
		t.Fatalf("the run took %v and left the window", elapsed)
	}

	// Stop the processes to read the longest sync each made.
	var maxSync time.Duration
	for _, p := range ps {
		if code, err := p.Stop(); err != nil || code != 0 {
			t.Fatalf("stop: exit %d, %v", code, err)
		}
		m := maxSyncRE.FindStringSubmatch(p.Stderr())
		if m == nil {
			t.Fatalf("no max_sync in the log of a process:\n%s", p.Stderr())
		}
		d, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatal(err)
		}
		maxSync = max(maxSync, d)
	}
	var admitted int64
	var latency time.Duration
	for _, as := range answers {
		for _, a := range as {
			latency = max(latency, a.latency)
			if a.allowed {
				admitted++
			}
		}
	}
	delta := procSync + maxSync
	// n returns the most answers admitted by process j within any x.
	n := func(j int, x time.Duration) int64 {
		var at []time.Duration
		for _, a := range answers[j] {
			if a.allowed {
				at = append(at, a.at)
			}
		}
		slices.Sort(at)
		var best int64
		lo := 0
		for hi := range at {
			for at[hi]-at[lo] > x {
				lo++
			}
			best = max(best, int64(hi-lo+1))
		}
		return best
	}
	var blind, cold int64
	for i := range procs {
		var sum int64
		for j := range procs {
			if j != i {
				sum += n(j, 2*delta+latency)
			}
		}
		blind = max(blind, sum)
		cold += n(i, delta+latency)
	}
	bound := procQuota + blind + cold
	t.Logf("%d processes × %d requests at %d/s, quota %d per %v, sync %v: admitted %d (%+d, %.1f%% over quota) in %v; bound %d (blind %d + cold %d; Δ %v with longest sync %v, longest request %v)",
		procs, procCount, procRate, procQuota, procWindow, procSync, admitted, admitted-procQuota, 100*float64(admitted-procQuota)/procQuota,
		elapsed.Round(time.Millisecond), bound, blind, cold, delta, maxSync, latency)
	if admitted > bound {
		t.Fatalf("admitted %d exceeds the bound %d", admitted, bound)
	}
	if admitted < procQuota {
		t.Fatalf("admitted %d of %d offered, under the quota %d", admitted, procs*procCount, procQuota)
	}
	if admitted > procs*procQuota {
		t.Fatalf("admitted %d exceeds N×quota", admitted)
	}
}
