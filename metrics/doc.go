// Package metrics exports floodgate's Prometheus metrics: decisions by rule
// and outcome, store latency and errors, the circuit breaker, live
// instances, rule reloads, and the counters of the optional store wrappers.
//
// # Usage
//
// [New] makes a set of collectors on a registry of its own (never the
// global one), with the Go runtime and process collectors. Hook it to an
// engine and to what serves beside it, and serve [Metrics.Handler]:
//
//	m := metrics.New()
//	st = m.Store(st) // times each store call
//	e := engine.NewWithOptions(st, w.Current, engine.Options{Observe: m.Observe, Front: engine.FrontGRPC})
//	_ = m.Engine(e)
//	_ = m.Watcher(w)
//	mux.Handle("GET /metrics", m.Handler())
//
// # Cost
//
// Everything but the decision counter and the store timer is read at
// scrape time from the counters the packages keep anyway ([engine.Stats],
// [breaker.Store.Stats], [rules.Watcher.Stats], ...). The decision counter
// ([Metrics.Observe]) costs per descriptor one lookup of the rule's
// pointer in a concurrent map and one atomic add: the counters of a rule
// are resolved once, not per request.
//
// # Cardinality
//
// Labels hold rule IDs (from the configuration), domains known to the
// rules, fronts, outcomes, shards and states: never descriptor values nor
// client keys. A rule removed by a reload keeps its series until restart.
//
// See docs/operations.md for every metric and example alerts.
package metrics
