package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/batch"
	"github.com/floodgate/floodgate/breaker"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/membership"
	"github.com/floodgate/floodgate/metrics"
	"github.com/floodgate/floodgate/overlimit"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

const config = `
domain: edge
descriptors:
  - key: ip
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: blocked
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: open
    on_store_error: fail_open
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: closed
    on_store_error: fail_closed
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: local
    on_store_error: local
    rate_limit: {unit: minute, requests_per_unit: 1}
`

var at = time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)

// value returns the value of the series of name with exactly labels
// (name=value pairs), and whether it exists.
func value(t *testing.T, g prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
					continue next
				}
			}
			return metricValue(m), true
		}
	}
	return 0, false
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func expect(t *testing.T, g prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := value(t, g, name, labels...)
	if !ok {
		t.Errorf("%s%v: no such series", name, labels)
		return
	}
	if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func parse(t *testing.T) *rules.Set {
	t.Helper()
	set, err := rules.Parse("edge.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func d(k, v string) [][]rules.Entry { return [][]rules.Entry{{{Key: k, Value: v}}} }

func TestDecisions(t *testing.T) {
	m := metrics.NewWithOptions(metrics.Options{NoRuntime: true})
	mem := memory.New(memory.Options{})
	defer mem.Close()
	e := engine.NewWithOptions(mem, engine.Static(parse(t)), engine.Options{Observe: m.Observe, Front: engine.FrontGRPC})
	defer e.Close()
	ctx := context.Background()
	jctx := engine.WithFront(ctx, engine.FrontHTTPJSON)
	for range 3 {
		e.DecideAt(ctx, at, "edge", d("ip", "1.2.3.4"), nil)
	}
	e.DecideAt(jctx, at, "edge", d("ip", "5.6.7.8"), nil)
	for range 2 {
		e.DecideAt(ctx, at, "edge", d("shadow", "x"), nil)
	}
	e.DecideAt(ctx, at, "edge", d("blocked", "x"), nil)
	e.DecideAt(ctx, at, "edge", d("nothing", "x"), nil)    // no rule, known domain
	e.DecideAt(ctx, at, "sprayed", d("nothing", "x"), nil) // unknown domain
	e.DecideAt(ctx, at, "edge", d("ip", "x"), []int64{-1}) // invalid: error
	e.DecideAt(engine.WithFront(ctx, "custom"), at, "edge", d("ip", "9"), nil)

	r := m.Registry()
	const n = "floodgate_decisions_total"
	expect(t, r, 2, n, "domain", "edge", "rule", "edge.ip", "front", "grpc", "outcome", "ok")
	expect(t, r, 1, n, "domain", "edge", "rule", "edge.ip", "front", "grpc", "outcome", "over_limit")
	expect(t, r, 1, n, "domain", "edge", "rule", "edge.ip", "front", "http_json", "outcome", "ok")
	expect(t, r, 1, n, "domain", "edge", "rule", "edge.shadow", "front", "grpc", "outcome", "ok")
	expect(t, r, 1, n, "domain", "edge", "rule", "edge.shadow", "front", "grpc", "outcome", "shadow_over_limit")
	expect(t, r, 1, n, "domain", "edge", "rule", "edge.blocked", "front", "grpc", "outcome", "over_limit")
	expect(t, r, 1, n, "domain", "edge", "rule", "", "front", "grpc", "outcome", "ok")
	expect(t, r, 1, n, "domain", "", "rule", "", "front", "grpc", "outcome", "ok")
	expect(t, r, 1, n, "domain", "edge", "rule", "", "front", "grpc", "outcome", "error")
	expect(t, r, 1, n, "domain", "edge", "rule", "edge.ip", "front", "custom", "outcome", "ok")
	if _, ok := value(t, r, n, "domain", "sprayed", "rule", "", "front", "grpc", "outcome", "ok"); ok {
		t.Error("an unknown domain got a series of its own")
	}
}

// down is a store that cannot decide.
type down struct{ err error }

func (s down) Decide(ctx context.Context, ops []floodgate.Op) error {
	for i := range ops {
		ops[i].Err = s.err
	}
	return s.err
}
func (down) Close() error { return nil }

func TestPolicyOutcomesAndEngineStats(t *testing.T) {
	m := metrics.NewWithOptions(metrics.Options{NoRuntime: true})
	st := m.Store(down{errors.New("connection refused")})
	e := engine.NewWithOptions(st, engine.Static(parse(t)), engine.Options{Observe: m.Observe, Front: engine.FrontGateway})
	defer e.Close()
	if err := m.Engine(e); err != nil {
		t.Fatal(err)
	}
	if err := m.Engine(e); err == nil {
		t.Error("a second engine collector registered")
	}
	ctx := context.Background()
	e.DecideAt(ctx, at, "edge", d("open", "x"), nil)
	e.DecideAt(ctx, at, "edge", d("closed", "x"), nil)
	e.DecideAt(ctx, at, "edge", d("local", "x"), nil)
	e.DecideAt(ctx, at, "edge", d("local", "x"), nil)
	e.DecideAt(ctx, at, "edge", d("ip", "x"), nil) // no policy: error
	op := floodgate.Op{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second}}, Cost: 1}
	e.DecideOp(engine.WithFront(ctx, engine.FrontCheck), &op) // no policy: error

	r := m.Registry()
	const n = "floodgate_decisions_total"
	expect(t, r, 1, n, "domain", "edge", "rule", "edge.open", "front", "gateway", "outcome", "policy_fail_open")
	expect(t, r, 1, n, "domain", "edge", "rule", "edge.closed", "front", "gateway", "outcome", "policy_fail_closed")
	expect(t, r, 2, n, "domain", "edge", "rule", "edge.local", "front", "gateway", "outcome", "policy_local")
	expect(t, r, 1, n, "domain", "edge", "rule", "", "front", "gateway", "outcome", "error")
	expect(t, r, 1, n, "domain", "", "rule", "", "front", "v1_check", "outcome", "error")
	expect(t, r, 6, "floodgate_engine_store_errors_total")
	expect(t, r, 1, "floodgate_engine_policy_decisions_total", "policy", "fail_open", "result", "allowed")
	expect(t, r, 1, "floodgate_engine_policy_decisions_total", "policy", "fail_closed", "result", "denied")
	expect(t, r, 1, "floodgate_engine_policy_decisions_total", "policy", "local", "result", "allowed")
	expect(t, r, 1, "floodgate_engine_policy_decisions_total", "policy", "local", "result", "denied")
	expect(t, r, 2, "floodgate_engine_unhandled_errors_total")
	expect(t, r, 6, "floodgate_store_call_duration_seconds")
	expect(t, r, 6, "floodgate_store_call_errors_total", "kind", "error")
	expect(t, r, 0, "floodgate_store_call_errors_total", "kind", "timeout")
}

// slow is a store that answers when ctx ends.
type slow struct{}

func (slow) Decide(ctx context.Context, ops []floodgate.Op) error {
	<-ctx.Done()
	for i := range ops {
		ops[i].Err = ctx.Err()
	}
	return ctx.Err()
}
func (slow) Close() error { return nil }

func TestStoreTimeoutAndInvalid(t *testing.T) {
	m := metrics.NewWithOptions(metrics.Options{NoRuntime: true})
	st := m.Store(slow{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	st.Decide(ctx, make([]floodgate.Op, 1))
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	st.Decide(cctx, make([]floodgate.Op, 1)) // the caller left: neither
	mem := m.Store(memory.New(memory.Options{}))
	defer mem.Close()
	mem.Decide(context.Background(), []floodgate.Op{{Key: ""}}) // invalid: neither
	r := m.Registry()
	expect(t, r, 1, "floodgate_store_call_errors_total", "kind", "timeout")
	expect(t, r, 0, "floodgate_store_call_errors_total", "kind", "error")
	expect(t, r, 3, "floodgate_store_call_duration_seconds")
}

func TestBreaker(t *testing.T) {
	m := metrics.NewWithOptions(metrics.Options{NoRuntime: true})
	b := breaker.New(down{errors.New("connection refused")}, breaker.Options{Failures: 2, Cooldown: time.Hour})
	if err := m.Breaker(b); err != nil {
		t.Fatal(err)
	}
	r := m.Registry()
	expect(t, r, 0, "floodgate_breaker_state", "shard", "")
	ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second}}, Cost: 1}}
	for range 3 {
		b.Decide(context.Background(), ops)
	}
	expect(t, r, 2, "floodgate_breaker_state", "shard", "")
	expect(t, r, 1, "floodgate_breaker_transitions_total", "to", "open")
	expect(t, r, 0, "floodgate_breaker_transitions_total", "to", "closed")
	expect(t, r, 3, "floodgate_breaker_calls_total")
	expect(t, r, 2, "floodgate_breaker_failures_total", "kind", "error")
	expect(t, r, 1, "floodgate_breaker_rejected_total")

	// Sharded: one series per shard seen.
	m2 := metrics.NewWithOptions(metrics.Options{NoRuntime: true})
	sb := breaker.New(down{errors.New("refused")}, breaker.Options{Failures: 1, Cooldown: time.Hour, Shard: func(key string) string { return key[:1] }})
	m2.Breaker(sb)
	ops[0].Key = "a1"
	sb.Decide(context.Background(), ops)
	expect(t, m2.Registry(), 2, "floodgate_breaker_state", "shard", "a")
	if _, ok := value(t, m2.Registry(), "floodgate_breaker_state", "shard", ""); ok {
		t.Error("sharded breaker also exports shard \"\"")
	}
	for _, want := range []float64{0, 1, 2} {
		s := map[float64]breaker.State{0: breaker.Closed, 1: breaker.HalfOpen, 2: breaker.Open}[want]
		if got := metrics.BreakerStateValue(s); got != want {
			t.Errorf("BreakerStateValue(%v) = %v, want %v", s, got, want)
		}
	}
}

// beats is a heartbeater answering a fixed count.
type beats struct{ live int }

func (b beats) Heartbeat(ctx context.Context, id string, ttl time.Duration) (int, error) {
	return b.live, nil
}

func TestMembership(t *testing.T) {
	m := metrics.NewWithOptions(metrics.Options{NoRuntime: true})
	mb := membership.Start(beats{3}, membership.Options{Interval: time.Hour})
	defer mb.Close()
	if err := m.Membership(mb); err != nil {
		t.Fatal(err)
	}
	expect(t, m.Registry(), 3, "floodgate_live_instances")
	expect(t, m.Registry(), 1, "floodgate_membership_heartbeats_total", "result", "success")
}

func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := rules.Watch(context.Background(), []string{dir}, rules.WatchOptions{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	m := metrics.NewWithOptions(metrics.Options{NoRuntime: true})
	if err := m.Watcher(w); err != nil {
		t.Fatal(err)
	}
	r := m.Registry()
	v1 := w.Current().Version()
	expect(t, r, 1, "floodgate_config_info", "version", v1)
	expect(t, r, 0, "floodgate_rules_reloads_total", "result", "success")
	expect(t, r, 0, "floodgate_rules_reload_failing")
	if ts, _ := value(t, r, "floodgate_rules_last_reload_success_timestamp_seconds"); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last reload timestamp %v", ts)
	}
	os.WriteFile(file, []byte("domain: edge\ndescriptors: [{key: ip, rate_limit: {unit: fortnight, requests_per_unit: 1}}]\n"), 0o644)
	if _, err := w.Check(); err == nil {
		t.Fatal("broken file reloaded")
	}
	expect(t, r, 1, "floodgate_rules_reloads_total", "result", "failure")
	expect(t, r, 1, "floodgate_rules_reload_failing")
	expect(t, r, 1, "floodgate_config_info", "version", v1)
	os.WriteFile(file, []byte(config+"  - key: more\n    rate_limit: {unit: second, requests_per_unit: 5}\n"), 0o644)
	if ok, err := w.Check(); !ok || err != nil {
		t.Fatalf("reload: %v %v", ok, err)
	}
	v2 := w.Current().Version()
	expect(t, r, 1, "floodgate_rules_reloads_total", "result", "success")
	expect(t, r, 0, "floodgate_rules_reload_failing")
	expect(t, r, 1, "floodgate_config_info", "version", v2)
	if _, ok := value(t, r, "floodgate_config_info", "version", v1); ok {
		t.Error("the old version is still exported")
	}
}

func TestBatchAndOverlimit(t *testing.T) {
	m := metrics.NewWithOptions(metrics.Options{NoRuntime: true})
	mem := memory.New(memory.Options{})
	b := batch.New(mem, batch.Options{})
	o := overlimit.New(b, overlimit.Options{})
	defer o.Close()
	if err := m.Batch(b); err != nil {
		t.Fatal(err)
	}
	if err := m.Overlimit(o); err != nil {
		t.Fatal(err)
	}
	lim := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Minute}}
	for range 3 {
		o.Decide(context.Background(), []floodgate.Op{{Key: "k", Limits: lim, Cost: 1}})
	}
	r := m.Registry()
	hits, _ := value(t, r, "floodgate_overlimit_cache_hits_total")
	calls, _ := value(t, r, "floodgate_overlimit_store_calls_total")
	bcalls, _ := value(t, r, "floodgate_batch_calls_total")
	bops, _ := value(t, r, "floodgate_batch_ops_total")
	if hits+calls != 3 || hits < 1 || bcalls != calls || bops != calls {
		t.Errorf("overlimit hits %v calls %v, batch calls %v ops %v", hits, calls, bcalls, bops)
	}
}

func TestCacheBound(t *testing.T) {
	m := metrics.NewWithOptions(metrics.Options{NoRuntime: true, MaxCachedRules: 2})
	mem := memory.New(memory.Options{})
	defer mem.Close()
	set := parse(t)
	e := engine.NewWithOptions(mem, func() *rules.Set { return set }, engine.Options{Observe: m.Observe})
	ctx := context.Background()
	for round := range 3 {
		set = parse(t) // a reload: new rule pointers, same IDs
		for _, k := range []string{"ip", "shadow", "blocked"} {
			e.DecideAt(ctx, at.Add(time.Duration(round)*time.Hour), "edge", d(k, "x"), nil)
		}
	}
	expect(t, m.Registry(), 3, "floodgate_decisions_total", "domain", "edge", "rule", "edge.ip", "front", "", "outcome", "ok")
	expect(t, m.Registry(), 3, "floodgate_decisions_total", "domain", "edge", "rule", "edge.blocked", "front", "", "outcome", "over_limit")
}

func TestHandler(t *testing.T) {
	m := metrics.New()
	m.Observe(engine.FrontGRPC, "edge", nil, nil, errors.New("x"))
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`floodgate_decisions_total{domain="",front="grpc",outcome="error",rule=""} 1`,
		"go_goroutines ",
		"process_cpu_seconds_total ",
		"# TYPE floodgate_store_call_duration_seconds histogram",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if problems, err := testutil.GatherAndLint(m.Registry()); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}

func BenchmarkObserve(b *testing.B) {
	m := metrics.NewWithOptions(metrics.Options{NoRuntime: true})
	set, err := rules.Parse("edge.yaml", []byte(config))
	if err != nil {
		b.Fatal(err)
	}
	mt, _ := set.Match("edge", []rules.Entry{{Key: "ip", Value: "x"}})
	sts := []engine.Status{{Code: engine.OK, Match: mt, Decided: true}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Observe(engine.FrontGRPC, "edge", set, sts, nil)
		}
	})
}
