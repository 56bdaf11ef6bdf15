package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	pb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/floodgate/floodgate/internal/proctest"
	"github.com/floodgate/floodgate/internal/redistest"
)

// Faults against real processes: 4 floodgate serve processes share one
// redis-server and answer a bounded gRPC load (Envoy's RateLimitService,
// one descriptor per request) while Redis is paused with SIGSTOP, then
// killed and restarted on the same port. The figures are printed with
// t.Logf and copied into docs/failure-modes.md ("Real processes").
const (
	faultProcs = 4
	// faultDeadline is the processes' --store-timeout: above the 10ms
	// default, because race-instrumented servers sharing two cores with the
	// test and Redis push a healthy call past 10ms now and then.
	faultDeadline = 50 * time.Millisecond
	// faultMargin is what a decision may take, measured by the client, beyond
	// the deadline: a gRPC round trip over loopback, the server's own work
	// under the race detector, and above all scheduling: 5 race-instrumented
	// processes and Redis on 2 shared cores, where one goroutine can wait
	// 100–200ms for a core (the in-process fault tests of package breaker
	// measured up to 201ms there).
	faultMargin = 250 * time.Millisecond
	// faultQuota is every rule's limit, per hour.
	faultQuota = 100
	// faultWorkers is the number of load goroutines per process; each sends
	// one request, then sleeps faultPace.
	faultWorkers = 3
	faultPace    = 2 * time.Millisecond
	// faultMax bounds the requests of one load goroutine.
	faultMax = 5000
)

const faultRulesYAML = `
domain: pf
descriptors:
  - key: open
    on_store_error: fail_open
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: closed
    on_store_error: fail_closed
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: local
    on_store_error: local
    rate_limit: {unit: hour, requests_per_unit: 100}
`

// faultAnswer is one request of the load, as the client saw it.
type faultAnswer struct {
	proc       int // the process's index
	rule       string
	value      string
	start, end time.Time
	allowed    bool
	remaining  uint32
	err        error
}

// faultLoad runs faultWorkers goroutines per process until stop is closed
// or each has sent faultMax requests. Request i of a worker asks for
// rules[(worker+i) % 3]: "open" and "closed" with a value of their own
// (a fresh key, which the store admits: only the policy denies it), "local"
// with the value local returns at that moment (one key shared by all).
func faultLoad(clients []pb.RateLimitServiceClient, phase string, local func() string, stop <-chan struct{}) func() []faultAnswer {
	var mu sync.Mutex
	var all []faultAnswer
	var wg sync.WaitGroup
	rules := []string{"open", "closed", "local"}
	for p, c := range clients {
		for w := range faultWorkers {
			wg.Go(func() {
				mine := make([]faultAnswer, 0, 1024)
				defer func() { mu.Lock(); all = append(all, mine...); mu.Unlock() }()
				for i := range faultMax {
					select {
					case <-stop:
						return
					default:
					}
					a := faultAnswer{proc: p, rule: rules[(w+i)%len(rules)]}
					if a.rule == "local" {
						a.value = local()
					} else {
						a.value = fmt.Sprintf("%s-%d-%d-%d", phase, p, w, i)
					}
					req := &pb.RateLimitRequest{Domain: "pf", Descriptors: []*rlv3.RateLimitDescriptor{
						{Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: a.rule, Value: a.value}}}}}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					a.start = time.Now()
					resp, err := c.ShouldRateLimit(ctx, req)
					a.end = time.Now()
					cancel()
					switch {
					case err != nil:
						a.err = err
					case len(resp.Statuses) != 1:
						a.err = fmt.Errorf("%d statuses, want 1", len(resp.Statuses))
					case resp.OverallCode == pb.RateLimitResponse_OK && resp.Statuses[0].Code == pb.RateLimitResponse_OK:
						a.allowed, a.remaining = true, resp.Statuses[0].LimitRemaining
					case resp.OverallCode == pb.RateLimitResponse_OVER_LIMIT && resp.Statuses[0].Code == pb.RateLimitResponse_OVER_LIMIT:
					default:
						a.err = fmt.Errorf("overall code %v, descriptor code %v", resp.OverallCode, resp.Statuses[0].Code)
					}
					mine = append(mine, a)
					time.Sleep(faultPace)
				}
			})
		}
	}
	return func() []faultAnswer { wg.Wait(); return all }
}

// faultReport is what one fault did, measured client-side, plus the
// processes' policy counters.
type faultReport struct {
	total, errs int
	firstErr    error
	p99, worst  time.Duration
	// In the fault: answers that started a deadline after the fault was
	// injected and ended before the repair began.
	inFault                  int
	openAdmitted, openDenied int
	openUnknown              int // fail_open admissions with remaining 0 (the policy's mark)
	closedDenied             int
	closedAdmitted           int // store decisions during the fault
	localAdmitted            int // on the key the load switched to at the fault
	localDenied              int
	// recovered[p] is when process p's first fail_closed admission (only
	// the store admits) after the repair began ended, zero if none.
	recovered []time.Time
	// policyAfter counts fail_closed denials after each process had
	// recovered (a call past its deadline after the store was back).
	policyAfter int
	// From /metrics, summed over the processes, as deltas over the phase.
	localPolicyAllowed, localPolicyDenied, openPolicy, closedPolicy float64
	opened                                                          []float64 // circuit openings per process
}

func analyseFault(as []faultAnswer, procs int, localKey string, from, to time.Time) faultReport {
	r := faultReport{recovered: make([]time.Time, procs)}
	lats := make([]time.Duration, 0, len(as))
	for _, a := range as {
		r.total++
		lat := a.end.Sub(a.start)
		lats = append(lats, lat)
		r.worst = max(r.worst, lat)
		if a.err != nil {
			r.errs++
			if r.firstErr == nil {
				r.firstErr = a.err
			}
			continue
		}
		if a.rule == "closed" && a.allowed && a.end.After(to) {
			if rp := r.recovered[a.proc]; rp.IsZero() || a.end.Before(rp) {
				r.recovered[a.proc] = a.end
			}
		}
		if !a.start.After(from.Add(faultDeadline)) || !a.end.Before(to) {
			continue
		}
		r.inFault++
		switch {
		case a.rule == "open" && a.allowed:
			r.openAdmitted++
			if a.remaining == 0 {
				r.openUnknown++
			}
		case a.rule == "open":
			r.openDenied++
		case a.rule == "closed" && a.allowed:
			r.closedAdmitted++
		case a.rule == "closed":
			r.closedDenied++
		case a.rule == "local" && a.value == localKey && a.allowed:
			r.localAdmitted++
		case a.rule == "local" && a.value == localKey:
			r.localDenied++
		}
	}
	for _, a := range as {
		if a.err == nil && a.rule == "closed" && !a.allowed && !r.recovered[a.proc].IsZero() && a.start.After(r.recovered[a.proc]) {
			r.policyAfter++
		}
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	if len(lats) > 0 {
		r.p99 = lats[len(lats)*99/100]
	}
	return r
}

// policyCounters reads each process's failure-policy and breaker counters.
func policyCounters(t *testing.T, ps []*proctest.Process) []map[string]float64 {
	t.Helper()
	ms := make([]map[string]float64, len(ps))
	for i, p := range ps {
		ms[i] = scrape(t, p.URL("/metrics"))
	}
	return ms
}

var (
	localAllowedSeries = series("floodgate_engine_policy_decisions_total", "policy", "local", "result", "allowed")
	localDeniedSeries  = series("floodgate_engine_policy_decisions_total", "policy", "local", "result", "denied")
	openSeries         = series("floodgate_engine_policy_decisions_total", "policy", "fail_open", "result", "allowed")
	closedSeries       = series("floodgate_engine_policy_decisions_total", "policy", "fail_closed", "result", "denied")
	openedSeries       = series("floodgate_breaker_transitions_total", "to", "open")
	breakerStateSeries = series("floodgate_breaker_state", "shard", "")
	liveSeries         = "floodgate_live_instances"
)

// waitLive waits (at most 15s) until every process counts n live instances,
// so that each one's local share is ceil(quota / n).
func waitLive(t *testing.T, ps []*proctest.Process, n int) {
	t.Helper()
	for _, p := range ps {
		waitMetric(t, p.URL("/metrics"), fmt.Sprintf("%s = %d", liveSeries, n), func(m map[string]float64) bool {
			return m[liveSeries] == float64(n)
		})
	}
}

// awayFromHourEdge waits (at most 20s) until Redis's clock is at least 20s
// before the end of an hour, so that a fault run of a few seconds stays in
// one window of the hourly rules, and returns the hour.
func awayFromHourEdge(t *testing.T, c goredis.UniversalClient) int64 {
	t.Helper()
	for deadline := time.Now().Add(25 * time.Second); time.Now().Before(deadline); {
		m, s := serverMinute(t, c)
		if into := (m%60)*60 + s; into < 3600-20 {
			return m / 60
		}
		time.Sleep(time.Second)
	}
	t.Fatal("Redis clock never got away from the hour edge")
	return 0
}

// restartRedis starts redis-server on port (after a kill, on the same
// address) and waits until it answers PING; it is stopped by pid when the
// test ends.
func restartRedis(t *testing.T, port int) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	c := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server on port %d did not start: %v\n%s", port, err, out)
		}
	}
}

// TestServeFaults pauses Redis with SIGSTOP for 2s, then kills it and
// restarts it on the same port 1.5s later, under a gRPC load spread over 4
// floodgate serve processes, and checks what the clients saw: no errors,
// every answer during the fault by its rule's policy, local admissions
// within the documented bound, the worst latency within the deadline plus
// a margin, and each process deciding in the store again within a second of
// the repair. Slow: about 15s with its start.
func TestServeFaults(t *testing.T) {
	srv := redistest.StartServer(t)
	c := srv.Client()
	defer c.Close()
	cfg := writeFile(t, "fault.yaml", faultRulesYAML)
	ps := proctest.StartN(t, faultProcs, proctest.Options{
		Args: []string{"serve", "--config", cfg, "--store", "redis://" + srv.Addr,
			"--store-timeout", faultDeadline.String(), "--breaker-failures", "3", "--breaker-cooldown", "200ms"},
		Wait: []string{"http", "grpc"},
	})
	clients := make([]pb.RateLimitServiceClient, len(ps))
	for i, p := range ps {
		conn, err := grpc.NewClient(p.Addr("grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients[i] = pb.NewRateLimitServiceClient(conn)
	}
	run := fmt.Sprint(rand.Uint64())

	t.Run("paused", func(t *testing.T) {
		runServeFault(t, c, ps, clients, "paused 2s", run+"-p", 2*time.Second, func() {
			if err := srv.Pause(); err != nil {
				t.Fatal(err)
			}
		}, func() {
			if err := srv.Resume(); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("killed", func(t *testing.T) {
		port := srv.Port()
		runServeFault(t, c, ps, clients, "killed 1.5s", run+"-k", 1500*time.Millisecond, srv.Kill, func() { restartRedis(t, port) })
	})
}

// runServeFault loads the processes, injects fault after a healthy phase,
// begins repair after outage, keeps loading for 1.2s after the repair, and
// checks the answers.
func runServeFault(t *testing.T, c goredis.UniversalClient, ps []*proctest.Process, clients []pb.RateLimitServiceClient,
	name, phase string, outage time.Duration, fault, repair func()) {
	waitLive(t, ps, faultProcs)
	hour := awayFromHourEdge(t, c)
	// The local rule's key: a warm-up key while the store decides, then a
	// fresh one from the fault on, so that every admission on it is the
	// local policy's (its store count is 0 when the fault begins).
	warm, measured := "warm-"+phase, "outage-"+phase
	var localKey atomic.Pointer[string]
	localKey.Store(&warm)
	stop := make(chan struct{})
	wait := faultLoad(clients, phase, func() string { return *localKey.Load() }, stop)
	time.Sleep(300 * time.Millisecond)
	before := policyCounters(t, ps)
	localKey.Store(&measured)
	from := time.Now()
	fault()
	time.Sleep(outage)
	to := time.Now()
	repair()
	repaired := time.Now()
	time.Sleep(1200 * time.Millisecond)
	close(stop)
	as := wait()
	after := policyCounters(t, ps)
	if m, _ := serverMinute(t, c); m/60 != hour {
		t.Fatalf("%s: the run crossed an hour boundary of Redis's clock", name)
	}

	r := analyseFault(as, len(ps), measured, from, to)
	for i := range ps {
		r.localPolicyAllowed += after[i][localAllowedSeries] - before[i][localAllowedSeries]
		r.localPolicyDenied += after[i][localDeniedSeries] - before[i][localDeniedSeries]
		r.openPolicy += after[i][openSeries] - before[i][openSeries]
		r.closedPolicy += after[i][closedSeries] - before[i][closedSeries]
		r.opened = append(r.opened, after[i][openedSeries]-before[i][openedSeries])
	}
	var recovery []string
	for p, at := range r.recovered {
		if at.IsZero() {
			recovery = append(recovery, "never")
			t.Errorf("%s: process %d: the store never decided again after the repair, want within 1s", name, p)
			continue
		}
		d := at.Sub(repaired)
		recovery = append(recovery, d.Round(time.Millisecond).String())
		if d > time.Second {
			t.Errorf("%s: process %d: the store decided again %v after the repair, want within 1s", name, p, d)
		}
	}

	bound := faultProcs * ((faultQuota + faultProcs - 1) / faultProcs) // N × ceil(quota/N), ≤ quota + N − 1
	t.Logf("%s: %d answers, %d errors; latency p99 %v, worst %v (deadline %v); in the fault: %d answers, "+
		"fail_open admitted %d (%d with remaining 0) denied %d, fail_closed denied %d admitted %d, "+
		"local admitted %d denied %d on %d processes (quota %d, bound %d); policy counters over the run: "+
		"local admitted %v denied %v, fail_open %v, fail_closed %v; circuit openings per process %v; "+
		"repair took %v; store deciding again after the repair, per process %v; fail_closed denials after recovery %d",
		name, r.total, r.errs, r.p99.Round(100*time.Microsecond), r.worst.Round(100*time.Microsecond), faultDeadline, r.inFault,
		r.openAdmitted, r.openUnknown, r.openDenied, r.closedDenied, r.closedAdmitted,
		r.localAdmitted, r.localDenied, faultProcs, faultQuota, bound,
		r.localPolicyAllowed, r.localPolicyDenied, r.openPolicy, r.closedPolicy, r.opened,
		repaired.Sub(to).Round(time.Millisecond), recovery, r.policyAfter)

	if r.errs != 0 {
		t.Errorf("%s: %d of %d requests got no decision; first: %v", name, r.errs, r.total, r.firstErr)
	}
	if r.worst > faultDeadline+faultMargin {
		t.Errorf("%s: worst answer took %v, want at most deadline %v + margin %v", name, r.worst, faultDeadline, faultMargin)
	}
	if r.openAdmitted == 0 || r.closedDenied == 0 || r.localAdmitted+r.localDenied == 0 {
		t.Errorf("%s: too few answers in the fault to judge: fail_open %d, fail_closed %d, local %d",
			name, r.openAdmitted+r.openDenied, r.closedAdmitted+r.closedDenied, r.localAdmitted+r.localDenied)
	}
	if r.openDenied != 0 || r.closedAdmitted != 0 {
		t.Errorf("%s: during the fault fail_open denied %d and fail_closed admitted %d, want 0 and 0", name, r.openDenied, r.closedAdmitted)
	}
	if r.localAdmitted > bound || r.localPolicyAllowed > float64(bound) {
		t.Errorf("%s: local admitted %d during the fault (client-side) and %v by policy over the run (metrics) on %d processes, want at most %d",
			name, r.localAdmitted, r.localPolicyAllowed, faultProcs, bound)
	}
	if r.localPolicyAllowed == 0 {
		t.Errorf("%s: the local policy admitted nothing: the test proves nothing about its bound", name)
	}
	for i, m := range after {
		if r.opened[i] < 1 {
			t.Errorf("%s: process %d: its circuit never opened", name, i)
		}
		if m[breakerStateSeries] != 0 {
			t.Errorf("%s: process %d: circuit state %v at the end, want 0 (closed)", name, i, m[breakerStateSeries])
		}
	}
}
