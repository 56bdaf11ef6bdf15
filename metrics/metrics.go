package metrics

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rules"
)

// The outcome label's values.
const (
	OutcomeOK                = "ok"
	OutcomeOverLimit         = "over_limit"
	OutcomeShadowOverLimit   = "shadow_over_limit"
	OutcomePolicyFailOpen    = "policy_fail_open"
	OutcomePolicyFailClosed  = "policy_fail_closed"
	OutcomePolicyLocal       = "policy_local"
	OutcomeError             = "error"
	outcomeCount             = 7
	defaultMaxCachedCounters = 10000
)

// outcomes indexes the outcome label's values.
var outcomes = [outcomeCount]string{OutcomeOK, OutcomeOverLimit, OutcomeShadowOverLimit, OutcomePolicyFailOpen, OutcomePolicyFailClosed, OutcomePolicyLocal, OutcomeError}

// fronts indexes the fronts whose counters are cached.
var fronts = [...]string{engine.FrontGRPC, engine.FrontHTTPJSON, engine.FrontCheck, engine.FrontMiddleware, engine.FrontGateway}

// frontIndex returns front's index in fronts, -1 for another front.
func frontIndex(front string) int {
	switch front {
	case engine.FrontGRPC:
		return 0
	case engine.FrontHTTPJSON:
		return 1
	case engine.FrontCheck:
		return 2
	case engine.FrontMiddleware:
		return 3
	case engine.FrontGateway:
		return 4
	}
	return -1
}

// StoreBuckets are the bucket bounds, in seconds, of the store call
// latency histogram: 50µs to 100ms, finer below a millisecond where a
// healthy nearby Redis answers, with the default store deadline (10ms)
// and a few multiples of it as bounds.
var StoreBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1}

// Metrics is floodgate's set of Prometheus collectors, on a registry of
// its own (not the global one). Create it with [New]; the zero value is not
// usable. Its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	decisions    *prometheus.CounterVec
	storeSeconds prometheus.Histogram
	storeErrors  *prometheus.CounterVec

	// cache maps a *rules.Rule, or a noRule for decisions that matched
	// none, to its counters; cleared when it holds more than maxCached.
	cache     sync.Map
	cached    atomic.Int64
	maxCached int64
	clearMu   sync.Mutex
}

// Options configure [NewWithOptions]. The zero value gives every default.
type Options struct {
	// NoRuntime leaves out the Go runtime (go_*) and process (process_*)
	// collectors. Default false: both are registered.
	NoRuntime bool
	// MaxCachedRules bounds how many rules (and domains without a matching
	// rule) the decision counters keep resolved; past it the cache is
	// emptied and refilled as decisions come (the counters keep their
	// values). Default 10000.
	MaxCachedRules int
}

// New returns the metrics with the Go runtime and process collectors.
func New() *Metrics { return NewWithOptions(Options{}) }

// NewWithOptions returns the metrics configured by opts.
func NewWithOptions(opts Options) *Metrics {
	if opts.MaxCachedRules <= 0 {
		opts.MaxCachedRules = defaultMaxCachedCounters
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_decisions_total",
			Help: "Descriptors decided, by domain, rule ID (empty when no rule matched or the limits were inline), front and outcome; a call that could not be decided counts once with outcome error.",
		}, []string{"domain", "rule", "front", "outcome"}),
		storeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "floodgate_store_call_duration_seconds",
			Help:    "Duration of the calls to the store (one call decides every descriptor of a request), failed ones included.",
			Buckets: StoreBuckets,
		}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_store_call_errors_total",
			Help: "Store calls that failed, by kind: timeout (the call's deadline passed) or error.",
		}, []string{"kind"}),
		maxCached: int64(opts.MaxCachedRules),
	}
	m.reg.MustRegister(m.decisions, m.storeSeconds, m.storeErrors)
	m.storeErrors.WithLabelValues("timeout")
	m.storeErrors.WithLabelValues("error")
	if !opts.NoRuntime {
		m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// Registry returns the registry the collectors are registered on, to add
// others or to gather.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler returns the HTTP handler of GET /metrics: the registry in the
// Prometheus text (or OpenMetrics, when asked) exposition format. A
// collector that fails is reported in the answer without failing the rest.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true})
}

// ruleCounters are the decision counters of one rule (or of one domain's
// decisions that matched no rule), resolved on first use.
type ruleCounters struct {
	domain, rule string
	c            [len(fronts)][outcomeCount]atomic.Pointer[counter]
}

// counter boxes a prometheus.Counter for an atomic pointer.
type counter struct{ prometheus.Counter }

// noRule keys the counters of a domain's descriptors that matched no rule.
type noRule struct{ domain string }

// Observe counts the decisions of one engine call; it is the signature of
// [engine.Options.Observe]. Each status counts once, under its rule's ID
// and domain and its outcome; a call that returned an error counts once
// with outcome error and an empty rule. The domain label of a decision
// without a rule is kept only when set knows the domain (so that clients
// cannot create series by naming domains), else it is empty.
func (m *Metrics) Observe(front, domain string, set *rules.Set, sts []engine.Status, err error) {
	if err != nil {
		m.decisions.WithLabelValues(knownDomain(set, domain), "", front, OutcomeError).Inc()
		return
	}
	fi := frontIndex(front)
	for i := range sts {
		st := &sts[i]
		o := outcome(st)
		var rc *ruleCounters
		if r := st.Match.Rule; r != nil {
			rc = m.counters(r, r.Domain, r.ID)
		} else {
			d := knownDomain(set, domain)
			rc = m.counters(noRule{d}, d, "")
		}
		if fi < 0 {
			m.decisions.WithLabelValues(rc.domain, rc.rule, front, outcomes[o]).Inc()
			continue
		}
		p := &rc.c[fi][o]
		c := p.Load()
		if c == nil {
			c = &counter{m.decisions.WithLabelValues(rc.domain, rc.rule, front, outcomes[o])}
			p.Store(c)
		}
		c.Inc()
	}
}

// knownDomain returns domain when set has rules or a request mapping for
// it, "" otherwise.
func knownDomain(set *rules.Set, domain string) string {
	if domain == "" || set == nil {
		return ""
	}
	if set.Rules(domain) == nil && set.Mapper(domain) == nil {
		return ""
	}
	return domain
}

// counters returns the counters of key, creating them.
func (m *Metrics) counters(key any, domain, rule string) *ruleCounters {
	if v, ok := m.cache.Load(key); ok {
		return v.(*ruleCounters)
	}
	if m.cached.Load() >= m.maxCached {
		// Rules replaced by reloads pile up here; start afresh.
		m.clearMu.Lock()
		if m.cached.Load() >= m.maxCached {
			m.cache.Range(func(k, _ any) bool {
				m.cache.Delete(k)
				return true
			})
			m.cached.Store(0)
		}
		m.clearMu.Unlock()
	}
	v, loaded := m.cache.LoadOrStore(key, &ruleCounters{domain: domain, rule: rule})
	if !loaded {
		m.cached.Add(1)
	}
	return v.(*ruleCounters)
}

// outcome returns the index in outcomes of a status.
func outcome(st *engine.Status) int {
	switch st.Policy {
	case rules.FailOpen:
		return 3
	case rules.FailClosed:
		return 4
	case rules.FailLocal:
		return 5
	}
	switch {
	case st.ShadowDenied:
		return 2
	case st.Code == engine.OverLimit:
		return 1
	}
	return 0
}

// Store returns st with every Decide call timed into
// floodgate_store_call_duration_seconds and its failures counted in
// floodgate_store_call_errors_total. A failure is a call that returned an
// error other than invalid input, while its caller was still waiting; it
// is a timeout when the call's deadline had passed. Closing the returned
// store closes st.
func (m *Metrics) Store(st floodgate.Store) floodgate.Store {
	return &timedStore{inner: st, seconds: m.storeSeconds, timeouts: m.storeErrors.WithLabelValues("timeout"), errors: m.storeErrors.WithLabelValues("error")}
}

// timedStore is the store of [Metrics.Store].
type timedStore struct {
	inner            floodgate.Store
	seconds          prometheus.Histogram
	timeouts, errors prometheus.Counter
}

func (s *timedStore) Decide(ctx context.Context, ops []floodgate.Op) error {
	start := time.Now()
	err := s.inner.Decide(ctx, ops)
	s.seconds.Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, floodgate.ErrInvalid) {
		switch cerr := ctx.Err(); {
		case errors.Is(cerr, context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
			s.timeouts.Inc()
		case cerr == nil:
			s.errors.Inc()
		}
	}
	return err
}

func (s *timedStore) Close() error { return s.inner.Close() }

// Unwrap returns the inner store, for [floodgate.Reset].
func (s *timedStore) Unwrap() floodgate.Store { return s.inner }
