package breaker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/breaker"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/membership"
	"github.com/floodgate/floodgate/rules"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// The figures of these tests are printed with t.Logf and copied into
// docs/failure-modes.md. Run them with -v to see them.

const (
	// faultTimeout is the store deadline of the fault tests: above the
	// default, because the race detector and a shared 2-core machine slow a
	// healthy Redis call past 10ms now and then; still well under the
	// 200ms round trip of the slow fault.
	faultTimeout = 50 * time.Millisecond
	// margin is what a decision may take beyond the deadline: scheduling of
	// the load goroutines on 2 shared cores, the engine's own work, the race
	// detector. Measured worst cases on a loaded machine reached 200ms.
	margin = 250 * time.Millisecond
	// quota of the limited descriptors, per hour (all decisions use one
	// instant, so one window).
	quota = 100
)

const faultRules = `
domain: f
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

// desc is one descriptor of the load: a policy key and a client value.
type desc struct{ key, value string }

var policyDescs = []desc{{"open", "client"}, {"closed", "client"}, {"local", "client"}}

// instance is one floodgate instance in the test process: its Redis store
// behind a breaker, its membership and its engine.
type instance struct {
	eng *engine.Engine
	brk *breaker.Store
	mem *membership.Membership

	mu      sync.Mutex
	changes []change // the breaker's state changes
}

// change is one state change of a circuit.
type change struct {
	at       time.Time
	shard    string
	from, to breaker.State
}

// opened returns the shards whose circuit opened, with the first time.
func (in *instance) opened() map[string]time.Time {
	in.mu.Lock()
	defer in.mu.Unlock()
	m := map[string]time.Time{}
	for _, c := range in.changes {
		if _, ok := m[c.shard]; !ok && c.to == breaker.Open {
			m[c.shard] = c.at
		}
	}
	return m
}

func newInstances(t *testing.T, n int, opts func(i int) redisstore.Options) []*instance {
	t.Helper()
	return newInstancesTimeout(t, n, faultTimeout, opts)
}

// newInstancesTimeout is newInstances with a store deadline of timeout.
func newInstancesTimeout(t *testing.T, n int, timeout time.Duration, opts func(i int) redisstore.Options) []*instance {
	t.Helper()
	set, err := rules.Parse("fault.yaml", []byte(faultRules))
	if err != nil {
		t.Fatal(err)
	}
	ins := make([]*instance, n)
	for i := range ins {
		st, err := redisstore.New(opts(i))
		if err != nil {
			t.Fatal(err)
		}
		in := &instance{}
		bo := breaker.Options{Timeout: timeout, Failures: 3, Cooldown: 200 * time.Millisecond,
			OnStateChange: func(shard string, from, to breaker.State) {
				in.mu.Lock()
				in.changes = append(in.changes, change{time.Now(), shard, from, to})
				in.mu.Unlock()
			}}
		if opts(i).Cluster {
			// As serve does for a cluster store.
			cc := st.Client().(*goredis.ClusterClient)
			bo.Shard = clusterShard(st)
			bo.Refresh = func() { cc.ReloadState(context.Background()) }
		}
		in.brk = breaker.New(st, bo)
		in.mem = membership.Start(st, membership.Options{Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond})
		in.eng = engine.NewWithOptions(in.brk, engine.Static(set), engine.Options{Instances: in.mem.Live})
		ins[i] = in
		t.Cleanup(func() { in.mem.Close(); in.eng.Close(); in.brk.Close() })
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, in := range ins {
		for in.mem.Live() != n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if in.mem.Live() != n {
			t.Fatalf("membership counts %d, want %d", in.mem.Live(), n)
		}
	}
	return ins
}

// decision is one decision of the load.
type decision struct {
	start   time.Time
	in      int // the instance's index
	latency time.Duration
	key     string
	value   string
	allowed bool
	policy  rules.FailurePolicy
	err     error
	// storeErr is the store's error of a decision made by the policy.
	storeErr error
}

// load runs workers goroutines per instance, each deciding in turn the
// policy keys every pace, until stop is closed or each has made max
// decisions. Every decision is at the instant at, so all fall in one window.
func load(ins []*instance, workers, max int, pace time.Duration, at time.Time, stop <-chan struct{}) func() []decision {
	return loadDescs(ins, policyDescs, workers, max, pace, at, stop)
}

// loadDescs is load over descs.
func loadDescs(ins []*instance, descs []desc, workers, max int, pace time.Duration, at time.Time, stop <-chan struct{}) func() []decision {
	var mu sync.Mutex
	var all []decision
	var wg sync.WaitGroup
	for n, in := range ins {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []decision
				defer func() { mu.Lock(); all = append(all, mine...); mu.Unlock() }()
				for i := 0; i < max; i++ {
					select {
					case <-stop:
						return
					default:
					}
					ds := descs[(w+i)%len(descs)]
					d := decision{start: time.Now(), in: n, key: ds.key, value: ds.value}
					sts, _, err := in.eng.DecideAt(context.Background(), at, "f", [][]rules.Entry{{{Key: ds.key, Value: ds.value}}}, nil)
					d.latency, d.err = time.Since(d.start), err
					if err == nil {
						d.allowed, d.policy, d.storeErr = sts[0].Result.Allowed, sts[0].Policy, sts[0].StoreErr
					}
					mine = append(mine, d)
					time.Sleep(pace)
				}
			}()
		}
	}
	return func() []decision { wg.Wait(); return all }
}

// figures checks and reports the decisions of a fault between from and to.
type report struct {
	total, errs              int
	worst                    time.Duration
	p99                      time.Duration
	inFault, byPolicy        int
	openAdmitted, openDenied int
	closedAdmitted           int
	localAdmitted            int
	firstPolicy, lastPolicy  time.Time
	firstStoreAfter          time.Time
	notPolicyInFault         int
}

func analyse(ds []decision, from, to time.Time) report {
	var r report
	lats := make([]time.Duration, 0, len(ds))
	for _, d := range ds {
		r.total++
		lats = append(lats, d.latency)
		if d.latency > r.worst {
			r.worst = d.latency
		}
		if d.err != nil {
			r.errs++
			continue
		}
		if d.policy != rules.FailureDefault {
			r.byPolicy++
			if r.firstPolicy.IsZero() || d.start.Before(r.firstPolicy) {
				r.firstPolicy = d.start
			}
			if end := d.start.Add(d.latency); end.After(r.lastPolicy) {
				r.lastPolicy = end
			}
			switch d.policy {
			case rules.FailOpen:
				if d.allowed {
					r.openAdmitted++
				} else {
					r.openDenied++
				}
			case rules.FailClosed:
				if d.allowed {
					r.closedAdmitted++
				}
			case rules.FailLocal:
				if d.allowed {
					r.localAdmitted++
				}
			}
		}
		// Decisions that started when the fault was surely noticed and
		// ended before it was repaired must all follow the policy.
		if d.start.After(from.Add(faultTimeout+margin)) && d.start.Add(d.latency).Before(to) {
			r.inFault++
			if d.policy == rules.FailureDefault {
				r.notPolicyInFault++
			}
		}
		if d.policy == rules.FailureDefault && d.start.After(to) && (r.firstStoreAfter.IsZero() || d.start.Before(r.firstStoreAfter)) {
			r.firstStoreAfter = d.start
		}
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	if len(lats) > 0 {
		r.p99 = lats[len(lats)*99/100]
	}
	return r
}

func (r report) check(t *testing.T, name string, n int, from, to time.Time) {
	t.Helper()
	t.Logf("%s: %d decisions, %d errors, %d by policy; latency p99 %v, worst %v (deadline %v); "+
		"in the fault: %d decisions, %d not by policy; fail_open admitted %d denied %d; fail_closed admitted %d; "+
		"local admitted %d on %d instances (quota %d); policy in force %v; store used again %v after repair",
		name, r.total, r.errs, r.byPolicy, r.p99, r.worst, faultTimeout,
		r.inFault, r.notPolicyInFault, r.openAdmitted, r.openDenied, r.closedAdmitted,
		r.localAdmitted, n, quota, r.lastPolicy.Sub(r.firstPolicy).Round(time.Millisecond), r.firstStoreAfter.Sub(to).Round(time.Millisecond))
	if r.errs != 0 {
		t.Errorf("%s: %d decisions returned an error", name, r.errs)
	}
	if r.worst > faultTimeout+margin {
		t.Errorf("%s: worst decision %v, want at most deadline %v + margin %v", name, r.worst, faultTimeout, margin)
	}
	if r.inFault == 0 || r.notPolicyInFault != 0 {
		t.Errorf("%s: %d of %d decisions during the fault not decided by the policy", name, r.notPolicyInFault, r.inFault)
	}
	if r.openDenied != 0 || r.closedAdmitted != 0 {
		t.Errorf("%s: fail_open denied %d, fail_closed admitted %d", name, r.openDenied, r.closedAdmitted)
	}
	if bound := n * ((quota + n - 1) / n); r.localAdmitted > bound {
		t.Errorf("%s: local admitted %d during the fault on %d instances, want at most %d", name, r.localAdmitted, n, bound)
	}
	if r.firstStoreAfter.IsZero() || r.firstStoreAfter.Sub(to) > time.Second {
		t.Errorf("%s: store used again %v after the repair, want within 1s", name, r.firstStoreAfter.Sub(to))
	}
}

// startOn starts redis-server on port (after a kill, to restart it on the
// same address), stopped by pid when the test ends.
func startOn(t *testing.T, port int) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
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
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server on port %d did not start: %s", port, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// quiet drops go-redis's own log lines (failed dials during the faults).
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func init() { goredis.SetLogger(quiet{}) }

// clusterShard names the master holding a key's slot, as serve does for a
// cluster store.
func clusterShard(st *redisstore.Store) func(string) string {
	cc := st.Client().(*goredis.ClusterClient)
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second}
	return func(key string) string {
		node, err := cc.MasterForKey(context.Background(), st.Key(key, lim))
		if err != nil {
			return ""
		}
		return node.Options().Addr
	}
}
