package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate/floodgate/approx"
	"github.com/floodgate/floodgate/batch"
	"github.com/floodgate/floodgate/breaker"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/membership"
	"github.com/floodgate/floodgate/overlimit"
	"github.com/floodgate/floodgate/rules"
)

// statsCollector is a prometheus.Collector that reads counters kept
// elsewhere at scrape time: nothing runs on the decision path.
type statsCollector struct {
	descs   []*prometheus.Desc
	collect func(ch chan<- prometheus.Metric)
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// register registers a statsCollector; the error names what was
// registered (a second registration of the same kind fails).
func (m *Metrics) register(what string, c *statsCollector) error {
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("metrics: registering the %s collector: %w", what, err)
	}
	return nil
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

func counterOf(d *prometheus.Desc, v uint64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gaugeOf(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// Engine registers the failure-policy counters of e ([engine.Stats]):
// descriptors the store could not decide, what each policy decided, and
// the ones no policy could.
func (m *Metrics) Engine(e *engine.Engine) error {
	storeErrs := desc("floodgate_engine_store_errors_total", "Descriptors the store could not decide (then decided by a failure policy, or returned as an error).")
	policy := desc("floodgate_engine_policy_decisions_total", "Descriptors decided by a failure policy because the store could not, by policy and result.", "policy", "result")
	unhandled := desc("floodgate_engine_unhandled_errors_total", "Descriptors no failure policy decided (no policy, invalid input or the caller gone): the front answered an error.")
	return m.register("engine", &statsCollector{
		descs: []*prometheus.Desc{storeErrs, policy, unhandled},
		collect: func(ch chan<- prometheus.Metric) {
			s := e.Stats()
			ch <- counterOf(storeErrs, s.StoreErrors)
			ch <- counterOf(policy, s.FailOpen, "fail_open", "allowed")
			ch <- counterOf(policy, s.FailClosed, "fail_closed", "denied")
			ch <- counterOf(policy, s.LocalAllowed, "local", "allowed")
			ch <- counterOf(policy, s.LocalDenied, "local", "denied")
			ch <- counterOf(unhandled, s.Unhandled)
		},
	})
}

// BreakerStateValue is the value of floodgate_breaker_state for a state:
// 0 closed, 1 half-open, 2 open (worse is higher).
func BreakerStateValue(s breaker.State) float64 {
	switch s {
	case breaker.HalfOpen:
		return 1
	case breaker.Open:
		return 2
	}
	return 0
}

// Breaker registers the circuit breaker's state (a gauge per shard) and
// counters ([breaker.Stats]). Without shards, or before any call with
// shards, the one series has shard "".
func (m *Metrics) Breaker(b *breaker.Store) error {
	state := desc("floodgate_breaker_state", "State of the circuit toward the store, per shard (a Redis Cluster master): 0 closed, 1 half-open, 2 open.", "shard")
	transitions := desc("floodgate_breaker_transitions_total", "Circuit state changes, by the state entered.", "to")
	calls := desc("floodgate_breaker_calls_total", "Store calls through the breaker, refused ones included.")
	failures := desc("floodgate_breaker_failures_total", "Store calls that reached the store and failed, by kind (timeout: the deadline passed).", "kind")
	rejected := desc("floodgate_breaker_rejected_total", "Store calls refused because a circuit was open: decided by the failure policy without touching the network.")
	return m.register("breaker", &statsCollector{
		descs: []*prometheus.Desc{state, transitions, calls, failures, rejected},
		collect: func(ch chan<- prometheus.Metric) {
			shards := b.Shards()
			if len(shards) == 0 {
				ch <- gaugeOf(state, BreakerStateValue(b.State()), "")
			}
			for name, s := range shards {
				ch <- gaugeOf(state, BreakerStateValue(s), name)
			}
			s := b.Stats()
			ch <- counterOf(transitions, s.Opened, "open")
			ch <- counterOf(transitions, s.HalfOpened, "half_open")
			ch <- counterOf(transitions, s.Closed, "closed")
			ch <- counterOf(calls, s.Calls)
			ch <- counterOf(failures, s.Timeouts, "timeout")
			ch <- counterOf(failures, s.Failures-min(s.Timeouts, s.Failures), "error")
			ch <- counterOf(rejected, s.Rejected)
		},
	})
}

// Membership registers the live-instance count the local policy divides
// quotas by, and the heartbeats.
func (m *Metrics) Membership(mb *membership.Membership) error {
	live := desc("floodgate_live_instances", "Live instances sharing the quotas, as the last heartbeat saw them (the assumed count before any answered).")
	beats := desc("floodgate_membership_heartbeats_total", "Heartbeats sent to the store, by result.", "result")
	return m.register("membership", &statsCollector{
		descs: []*prometheus.Desc{live, beats},
		collect: func(ch chan<- prometheus.Metric) {
			ok, failed := mb.Stats()
			ch <- gaugeOf(live, float64(mb.Live()))
			ch <- counterOf(beats, ok, "success")
			ch <- counterOf(beats, failed, "failure")
		},
	})
}

// Watcher registers the rule reloads: successes and failures, the version
// in force (floodgate_config_info{version="..."} 1), when it was loaded,
// and whether the latest reload failed.
func (m *Metrics) Watcher(w *rules.Watcher) error {
	reloads := desc("floodgate_rules_reloads_total", "Rule reloads after the first load, by result; a failed reload keeps the previous rules.", "result")
	info := desc("floodgate_config_info", "The version (a hash of the rule files) of the rules in force, as a label; the value is 1.", "version")
	last := desc("floodgate_rules_last_reload_success_timestamp_seconds", "When the rules in force were loaded, in seconds since the Unix epoch.")
	failing := desc("floodgate_rules_reload_failing", "1 while the rule files on disk are invalid or unreadable (the previous rules serve), else 0.")
	return m.register("rules", &statsCollector{
		descs: []*prometheus.Desc{reloads, info, last, failing},
		collect: func(ch chan<- prometheus.Metric) {
			s := w.Stats()
			ch <- counterOf(reloads, s.Reloads, "success")
			ch <- counterOf(reloads, s.Failures, "failure")
			ch <- gaugeOf(info, 1, s.Version)
			ch <- gaugeOf(last, float64(s.LastReload.UnixNano())/1e9)
			f := 0.0
			if s.LastError != nil {
				f = 1
			}
			ch <- gaugeOf(failing, f)
		},
	})
}

// Approx registers the syncs of the approximate-consistency store.
func (m *Metrics) Approx(a *approx.Store) error {
	syncs := desc("floodgate_approx_syncs_total", "Sync round trips of approximate counts to the shared store, by result.", "result")
	counters := desc("floodgate_approx_synced_counters_total", "Counters synced successfully.")
	maxSync := desc("floodgate_approx_sync_max_seconds", "The longest sync round trip so far.")
	offset := desc("floodgate_approx_clock_offset_seconds", "The shared store's clock minus this process's, as learned at the last sync.")
	entries := desc("floodgate_approx_entries", "Keys × limits counted locally.")
	return m.register("approx", &statsCollector{
		descs: []*prometheus.Desc{syncs, counters, maxSync, offset, entries},
		collect: func(ch chan<- prometheus.Metric) {
			s := a.Stats()
			ch <- counterOf(syncs, s.Syncs-min(s.SyncErrors, s.Syncs), "success")
			ch <- counterOf(syncs, s.SyncErrors, "failure")
			ch <- counterOf(counters, s.Counters)
			ch <- gaugeOf(maxSync, s.MaxSync.Seconds())
			ch <- gaugeOf(offset, s.Offset.Seconds())
			ch <- gaugeOf(entries, float64(s.Entries))
		},
	})
}

// Batch registers a batching store's calls and ops: the mean ops per call
// is rate(floodgate_batch_ops_total) / rate(floodgate_batch_calls_total).
func (m *Metrics) Batch(b *batch.Store) error {
	calls := desc("floodgate_batch_calls_total", "Calls the batching store made to the store behind it.")
	ops := desc("floodgate_batch_ops_total", "Ops those calls carried.")
	return m.register("batch", &statsCollector{
		descs: []*prometheus.Desc{calls, ops},
		collect: func(ch chan<- prometheus.Metric) {
			c, o := b.Stats()
			ch <- counterOf(calls, uint64(max(c, 0)))
			ch <- counterOf(ops, uint64(max(o, 0)))
		},
	})
}

// Overlimit registers the over-limit cache's hits (ops answered without
// the store) and the calls it passed on.
func (m *Metrics) Overlimit(o *overlimit.Store) error {
	hits := desc("floodgate_overlimit_cache_hits_total", "Ops answered over limit from the local cache, without a store call.")
	calls := desc("floodgate_overlimit_store_calls_total", "Calls the over-limit cache passed on to the store.")
	entries := desc("floodgate_overlimit_cache_entries", "Entries held by the over-limit cache, live or expired.")
	return m.register("overlimit", &statsCollector{
		descs: []*prometheus.Desc{hits, calls, entries},
		collect: func(ch chan<- prometheus.Metric) {
			h, c := o.Stats()
			ch <- counterOf(hits, uint64(max(h, 0)))
			ch <- counterOf(calls, uint64(max(c, 0)))
			ch <- gaugeOf(entries, float64(o.Len()))
		},
	})
}
