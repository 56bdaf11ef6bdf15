// Package engine is floodgate's one decision path: every front (Envoy's gRPC
// RateLimitService, the HTTP API's POST /json, the net/http middleware and
// the gateway) asks an [Engine] to decide the descriptors of one request.
//
// # Deciding
//
// [Engine.Decide] matches each descriptor against the rules in force
// ([rules.Set.MatchRequest], which applies replaces), builds one
// [floodgate.Op] per descriptor that has limits to decide, and sends all of
// them to the store in a single [floodgate.Store.Decide] call: one round trip
// per request however many descriptors it carries. It answers one [Status]
// per descriptor and an overall [Code], OverLimit when any descriptor is.
//
// # What each rule does
//
//   - No rule, an unlimited rule, or a rule replaced by another descriptor's:
//     OK, nothing counted, no limit reported.
//   - requests_per_unit 0 (Deny): OverLimit, nothing counted.
//   - Limits: decided and counted by the store; OverLimit when the store
//     denies. A denied descriptor consumes nothing.
//   - shadow_mode: decided and counted as above, but always reported OK, with
//     [Status.ShadowDenied] set when the store denied.
//
// # Errors
//
// A store that cannot decide makes Decide return an error wrapping
// [ErrStore]; no status is then reliable. What a front answers then (fail
// open, fail closed, a local limiter) is a failure policy chosen per rule
// ([rules.Rule.OnStoreError]); the policies are applied by callers of
// Decide, at the one place Decide reports the store's error.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/rules"
)

// Code is a descriptor's or a request's outcome. Its values are those of
// Envoy's RateLimitResponse.Code. The zero value, Unknown, is never returned
// by a successful Decide.
type Code uint8

// The codes.
const (
	Unknown Code = iota
	// OK: the descriptor (or every descriptor of the request) is admitted.
	OK
	// OverLimit: the descriptor (or one of the request's) is over its limit.
	OverLimit
)

// String returns "UNKNOWN", "OK" or "OVER_LIMIT", as Envoy spells them.
func (c Code) String() string {
	switch c {
	case Unknown:
		return "UNKNOWN"
	case OK:
		return "OK"
	case OverLimit:
		return "OVER_LIMIT"
	}
	return fmt.Sprintf("code(%d)", c)
}

// ErrStore is wrapped by the error Decide returns when the store could not
// decide.
var ErrStore = errors.New("engine: store cannot decide")

// Status is the outcome of one descriptor.
type Status struct {
	// Code is OK or OverLimit.
	Code Code
	// Match is the descriptor's match: the rule (nil when none applies), the
	// limits decided with, the store key, and whether the rule is unlimited,
	// a Deny or replaced.
	Match rules.Match
	// Hits is the cost the descriptor was decided with.
	Hits int64
	// Decided reports whether the store decided the descriptor; Result and
	// Each are then set. False for no rule, unlimited, Deny and replaced.
	Decided bool
	// Result is the store's combined result: Result.Limit is the deciding
	// limit (of several, the one that denied with the longest wait, or when
	// all admitted the one with the fewest units left).
	Result floodgate.Result
	// Each holds each of Match.Limits' own result, in order, when Decided.
	Each []floodgate.Result
	// Unit is the Envoy unit the deciding limit was written with, 0 when it
	// was written with a window (or when nothing was decided).
	Unit rules.Unit
	// ShadowDenied is set for a shadow_mode rule whose limits denied: the
	// descriptor is counted and reported OK, but would have been over limit.
	ShadowDenied bool
}

// Engine decides requests against a store and the rules in force. Create it
// with [New]; the zero value is not usable. It is safe for concurrent use.
type Engine struct {
	store  floodgate.Store
	rules  func() *rules.Set
	logger *slog.Logger
}

// New returns an engine deciding with store under the rules that rules
// returns at each request (a [rules.Watcher]'s Current method, or [Static]).
// A nil rules function, or one returning nil, means no rules: every
// descriptor is OK. logger receives debug records of decisions; nil
// discards them. The engine does not close the store.
func New(store floodgate.Store, rules func() *rules.Set, logger *slog.Logger) *Engine {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{store: store, rules: rules, logger: logger}
}

// Static returns a rules function that always returns set, for [New].
func Static(set *rules.Set) func() *rules.Set {
	return func() *rules.Set { return set }
}

// Rules returns the rules in force, nil when none are loaded.
func (e *Engine) Rules() *rules.Set {
	if e.rules == nil {
		return nil
	}
	return e.rules()
}

// Store returns the engine's store.
func (e *Engine) Store() floodgate.Store { return e.store }

// Decide decides one request of domain carrying descriptors (each a list of
// entries, as Envoy sends them). hits[i] is the cost of descriptor i: nil
// means 1 for every descriptor; 0 checks the descriptor without counting
// (Envoy's per-descriptor hits_addend 0). Fronts that take Envoy's
// request-level hits_addend, where 0 means 1, convert it before calling.
//
// It returns one Status per descriptor and the request's code: OverLimit
// when any status is. Every limited descriptor is decided in one store
// call. The error wraps [floodgate.ErrInvalid] for bad hits, or [ErrStore]
// when the store cannot decide; statuses are nil then.
func (e *Engine) Decide(ctx context.Context, domain string, descriptors [][]rules.Entry, hits []int64) ([]Status, Code, error) {
	return e.decide(ctx, 0, domain, descriptors, hits)
}

// DecideAt is Decide at an explicit instant instead of the store's clock,
// for tests that must not depend on the time they run at.
func (e *Engine) DecideAt(ctx context.Context, now time.Time, domain string, descriptors [][]rules.Entry, hits []int64) ([]Status, Code, error) {
	return e.decide(ctx, floodgate.UnixMicro(now), domain, descriptors, hits)
}

func (e *Engine) decide(ctx context.Context, now int64, domain string, descriptors [][]rules.Entry, hits []int64) ([]Status, Code, error) {
	if hits != nil && len(hits) != len(descriptors) {
		return nil, Unknown, fmt.Errorf("engine: %d hits for %d descriptors: %w", len(hits), len(descriptors), floodgate.ErrInvalid)
	}
	for i, h := range hits {
		if err := floodgate.ValidateCost(h); err != nil {
			return nil, Unknown, fmt.Errorf("engine: descriptor %d: hits %d: %w", i, h, err)
		}
	}
	var set *rules.Set
	if e.rules != nil {
		set = e.rules()
	}
	ms, ok := set.MatchRequest(domain, descriptors)
	sts := make([]Status, len(descriptors))
	n := 0
	for i := range ms {
		sts[i] = Status{Code: OK, Match: ms[i], Hits: 1}
		if hits != nil {
			sts[i].Hits = hits[i]
		}
		if ok[i] && !ms[i].Unlimited && !ms[i].Deny {
			n++
		}
	}
	var ops []floodgate.Op
	var idx []int // ops[j] decides descriptor idx[j]
	if n > 0 {
		ops = make([]floodgate.Op, 0, n)
		idx = make([]int, 0, n)
		each := make([]floodgate.Result, 0, n*2)
		for i := range ms {
			m := &ms[i]
			if !ok[i] || m.Unlimited || m.Deny {
				continue
			}
			start := len(each)
			each = append(each, make([]floodgate.Result, len(m.Limits))...)
			ops = append(ops, floodgate.Op{
				Key:    m.Key,
				Limits: m.Limits,
				Cost:   sts[i].Hits,
				Now:    now,
				Each:   each[start:len(each):len(each)],
			})
			idx = append(idx, i)
		}
		if err := e.store.Decide(ctx, ops); err != nil {
			// Failure policies (rules.Rule.OnStoreError) are applied by the
			// caller on this error; nothing below is reliable.
			return nil, Unknown, fmt.Errorf("%w: domain %q, %d descriptor(s): %w", ErrStore, domain, len(ops), err)
		}
		for j := range ops {
			if ops[j].Err != nil {
				return nil, Unknown, fmt.Errorf("%w: domain %q, key %q: %w", ErrStore, domain, ops[j].Key, ops[j].Err)
			}
		}
	}
	overall := OK
	for j := range ops {
		i := idx[j]
		st := &sts[i]
		st.Decided = true
		st.Result = ops[j].Result
		st.Each = ops[j].Each
		for k, l := range st.Match.Limits {
			if l == st.Result.Limit && k < len(st.Match.Units) {
				st.Unit = st.Match.Units[k]
				break
			}
		}
		if !st.Result.Allowed {
			if st.Match.Rule.ShadowMode {
				st.ShadowDenied = true
			} else {
				st.Code = OverLimit
			}
		}
	}
	for i := range sts {
		st := &sts[i]
		if ok[i] && st.Match.Deny {
			if st.Match.Rule.ShadowMode {
				st.ShadowDenied = true
			} else {
				st.Code = OverLimit
			}
		}
		if st.Code == OverLimit {
			overall = OverLimit
		}
		if st.ShadowDenied {
			e.logger.Debug("shadow mode: would deny", "domain", domain, "rule", st.Match.Rule.ID, "key", st.Match.Key)
		}
	}
	return sts, overall, nil
}
