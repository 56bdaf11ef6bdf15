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
//   - consistency: approximate: decided by [Options.Approximate] when set
//     (in the same Decide call, its ops in one batch), by the store otherwise.
//
// # When the store cannot decide
//
// A descriptor the store could not decide (its op has an error, or the whole
// store call failed) is decided by its rule's failure policy
// ([rules.Rule.OnStoreError]), or when the rule names none by
// [Options.OnStoreError]:
//
//   - fail_open: admitted (Remaining 0: unknown), and counted in [Stats].
//   - fail_closed: denied with RetryAfter [Options.FailClosedRetryAfter]
//     (default 1s).
//   - local: decided by an in-process memory store with each limit's quota
//     (and burst) scaled to this instance's share, ceil(quota / live
//     instances), the count coming from [Options.Instances] (package
//     membership). The local state starts empty at the first failure and
//     lives as long as the engine.
//
// The status then carries the policy in [Status.Policy] and the store's
// error in [Status.StoreErr]. With no policy at all (the rule names none and
// Options.OnStoreError is FailureDefault, as with [New]) Decide returns an
// error wrapping [ErrStore]; so it does for invalid input
// ([floodgate.ErrInvalid]) and when ctx itself has ended.
//
// [Engine.DecideOp] decides one op with inline limits (the HTTP API's POST
// /v1/check) with the same store and the same failure handling, under
// [Options.OnStoreError].
//
// # Concurrency leases
//
// A front that knows when a request ends (the net/http middleware, the
// gateway) decides with [Engine.DecideWithLeases]: a descriptor whose
// limits include a concurrency limit then acquires a lease of its own,
// named in [Status.Lease], and the front gives it back with
// [Engine.Release], so the limit counts requests in flight. Envoy's API and
// POST /json have no such call: there the lease is anonymous and only
// expires, after the limit's window. Leases the store may have granted
// while its answer was lost are released in the background.
//
// # Observing
//
// [Options.Observe] is told of every call, with the front it came through
// ([WithFront], or [Options.Front]): package metrics counts decisions by
// rule and outcome with it.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
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
	// Policy is the failure policy that decided the descriptor because the
	// store could not; FailureDefault when the store decided it.
	Policy rules.FailurePolicy
	// StoreErr is the store's error when Policy is set.
	StoreErr error
	// Lease names the lease the descriptor's concurrency limits hold, when
	// it has one and they admitted it (by the store or the local policy):
	// release it with [Engine.Release] when the request is done, or it
	// expires after the limit's window.
	Lease string
}

// Engine decides requests against a store and the rules in force. Create it
// with [New]; the zero value is not usable. It is safe for concurrent use.
type Engine struct {
	store  floodgate.Store
	rules  func() *rules.Set
	logger *slog.Logger
	opts   Options

	localOnce sync.Once
	local     floodgate.Store
	ownLocal  bool

	storeErrors, failOpen, failClosed, localAllowed, localDenied, unhandled atomic.Uint64
	lastWarn, lastOverrideWarn                                              atomic.Int64
}

// DefaultFailClosedRetryAfter is the RetryAfter of a fail_closed denial: long
// enough not to invite a retry storm, short enough that clients come back
// soon after the store does (the circuit breaker probes every 500ms).
const DefaultFailClosedRetryAfter = time.Second

// Options configure an engine built by [NewWithOptions]. The zero value is
// what [New] uses.
type Options struct {
	// Logger receives debug records of decisions and, at most once a second,
	// a warning while failure policies decide. Default: discarded.
	Logger *slog.Logger
	// OnStoreError is the failure policy of rules that name none. Default
	// FailureDefault: Decide returns the store's error for them.
	OnStoreError rules.FailurePolicy
	// FailClosedRetryAfter is the RetryAfter (and ResetAfter) of fail_closed
	// denials. Default [DefaultFailClosedRetryAfter] (1s).
	FailClosedRetryAfter time.Duration
	// Instances returns the number of live instances sharing the quotas,
	// for the local policy (a [membership.Membership]'s Live method). Nil,
	// or a value below 1, means 1: the whole quota.
	Instances func() int
	// Local is the store of the local policy. Default: a memory store with
	// default options, created at the first local decision and closed by
	// [Engine.Close].
	Local floodgate.Store
	// Approximate decides the rules whose consistency is approximate (an
	// approx.Store). Default nil: the engine's store decides every rule.
	// The engine does not close it.
	Approximate floodgate.Store
	// Overrides, when set, replaces the limits of the descriptors it names
	// (an overrides.Table): a descriptor whose rule has limits, and whose
	// domain and store key Lookup knows, is decided under the override's
	// limits, with [rules.Match.Override] set.
	Overrides interface {
		Lookup(domain, key string) ([]floodgate.Limit, bool)
	}
	// Front names the front of decisions whose context names none (see
	// [WithFront]): serve's gRPC listener leaves its contexts unnamed and
	// sets FrontGRPC here. Default "".
	Front string
	// Observe, when set, is called once at the end of every Decide,
	// DecideAt and DecideOp call, on the caller's goroutine: front is the
	// context's front ([FrontOf]) or Options.Front, set the rules the call
	// matched against (nil for DecideOp or with no rules), sts the statuses
	// (nil when err is not nil). It must be fast, must not block, and must
	// not keep sts. For metrics (package metrics). Default nil.
	Observe func(front, domain string, set *rules.Set, sts []Status, err error)
}

// The fronts, as [WithFront] and [Options.Front] name them.
const (
	FrontGRPC       = "grpc"       // Envoy's RateLimitService over gRPC
	FrontHTTPJSON   = "http_json"  // Envoy's RateLimitService as POST /json
	FrontCheck      = "v1_check"   // the HTTP API's POST /v1/check (inline limits)
	FrontMiddleware = "middleware" // the net/http middleware
	FrontGateway    = "gateway"    // the reverse-proxy gateway
)

// frontKey is the context key of [WithFront].
type frontKey struct{}

// WithFront returns ctx naming the front a decision comes through, for
// [Options.Observe]. Fronts that share an engine with another front set it
// (POST /json beside gRPC); a front alone on its engine can rely on
// [Options.Front] instead, at no cost per request.
func WithFront(ctx context.Context, front string) context.Context {
	return context.WithValue(ctx, frontKey{}, front)
}

// FrontOf returns the front ctx names (see [WithFront]), "" when none.
func FrontOf(ctx context.Context) string {
	f, _ := ctx.Value(frontKey{}).(string)
	return f
}

// Stats count, since the engine was created, the descriptors the store
// could not decide and what became of them.
type Stats struct {
	// StoreErrors counts descriptors the store could not decide.
	StoreErrors uint64
	// FailOpen counts descriptors admitted by fail_open.
	FailOpen uint64
	// FailClosed counts descriptors denied by fail_closed.
	FailClosed uint64
	// LocalAllowed and LocalDenied count the local policy's decisions.
	LocalAllowed, LocalDenied uint64
	// Unhandled counts descriptors whose error Decide returned (no policy,
	// or ctx ended).
	Unhandled uint64
}

// New returns an engine deciding with store under the rules that rules
// returns at each request (a [rules.Watcher]'s Current method, or [Static]).
// A nil rules function, or one returning nil, means no rules: every
// descriptor is OK. logger receives debug records of decisions; nil
// discards them. The engine does not close the store. Failure policies
// apply only to rules that name one; see [NewWithOptions].
func New(store floodgate.Store, rules func() *rules.Set, logger *slog.Logger) *Engine {
	return NewWithOptions(store, rules, Options{Logger: logger})
}

// NewWithOptions is [New] with [Options]: a default failure policy, the
// live-instance count of the local policy.
func NewWithOptions(store floodgate.Store, rules func() *rules.Set, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.FailClosedRetryAfter <= 0 {
		opts.FailClosedRetryAfter = DefaultFailClosedRetryAfter
	}
	return &Engine{store: store, rules: rules, logger: opts.Logger, opts: opts, local: opts.Local}
}

// Stats returns the failure-policy counters.
func (e *Engine) Stats() Stats {
	return Stats{
		StoreErrors:  e.storeErrors.Load(),
		FailOpen:     e.failOpen.Load(),
		FailClosed:   e.failClosed.Load(),
		LocalAllowed: e.localAllowed.Load(),
		LocalDenied:  e.localDenied.Load(),
		Unhandled:    e.unhandled.Load(),
	}
}

// Close closes the local policy's store if the engine created it. It does
// not close the engine's store.
func (e *Engine) Close() error {
	e.localOnce.Do(func() {}) // no local store is created after Close
	if e.ownLocal {
		return e.local.Close()
	}
	return nil
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

// Approximate returns the store of approximate rules
// ([Options.Approximate]), nil when the engine's store decides them.
func (e *Engine) Approximate() floodgate.Store { return e.opts.Approximate }

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
	return e.decide(ctx, 0, domain, descriptors, hits, false)
}

// DecideAt is Decide at an explicit instant instead of the store's clock,
// for tests that must not depend on the time they run at.
func (e *Engine) DecideAt(ctx context.Context, now time.Time, domain string, descriptors [][]rules.Entry, hits []int64) ([]Status, Code, error) {
	return e.decide(ctx, floodgate.UnixMicro(now), domain, descriptors, hits, false)
}

// DecideWithLeases is Decide for a front that releases, with
// [Engine.Release], the leases of the statuses it returns once the request
// ends, as the net/http middleware does: a concurrency limit's lease is then
// named ([Status.Lease]). Otherwise (Decide: Envoy's API, POST /json) the
// lease is anonymous and only expires. A zero now decides on the store's
// clock; another, at that instant (see [Engine.DecideAt]).
func (e *Engine) DecideWithLeases(ctx context.Context, now time.Time, domain string, descriptors [][]rules.Entry, hits []int64) ([]Status, Code, error) {
	var at int64
	if !now.IsZero() {
		at = floodgate.UnixMicro(now)
	}
	return e.decide(ctx, at, domain, descriptors, hits, true)
}

func (e *Engine) decide(ctx context.Context, now int64, domain string, descriptors [][]rules.Entry, hits []int64, releasing bool) ([]Status, Code, error) {
	var set *rules.Set
	if e.rules != nil {
		set = e.rules()
	}
	sts, code, err := e.decideWith(ctx, set, now, domain, descriptors, hits, releasing)
	if e.opts.Observe != nil {
		e.observe(ctx, domain, set, sts, err)
	}
	return sts, code, err
}

// observe reports one call to Options.Observe.
func (e *Engine) observe(ctx context.Context, domain string, set *rules.Set, sts []Status, err error) {
	front := FrontOf(ctx)
	if front == "" {
		front = e.opts.Front
	}
	e.opts.Observe(front, domain, set, sts, err)
}

// DecideOp decides one op with inline limits, under no rule (the HTTP
// API's POST /v1/check), in the engine's store. When the store cannot
// decide it, [Options.OnStoreError] does, as for a rule that names no
// policy: the status then carries Policy and StoreErr, and fail_closed
// denies with RetryAfter [Options.FailClosedRetryAfter]. The status's
// Match holds op's key and limits and no rule; its Code is OverLimit when
// the op was denied (a release is always OK). op.Result, op.Each (when
// set) and op.Err are set as the store sets them.
//
// The error wraps [floodgate.ErrInvalid] for an invalid op, or [ErrStore]
// when neither the store nor a policy could decide (no OnStoreError, or
// ctx ended).
func (e *Engine) DecideOp(ctx context.Context, op *floodgate.Op) (Status, error) {
	return e.DecideOpAs(ctx, op, rules.Strict)
}

// DecideOpAs is [Engine.DecideOp] with a consistency, as a rule's: with
// [rules.Approximate] the op is decided by [Options.Approximate] when it is
// set (which decides fixed_window and sliding_window limits only: other
// ops get an error wrapping [floodgate.ErrInvalid]), by the engine's store
// otherwise.
func (e *Engine) DecideOpAs(ctx context.Context, op *floodgate.Op, c rules.Consistency) (Status, error) {
	st, err := e.decideOp(ctx, op, c)
	if e.opts.Observe != nil {
		var sts []Status
		if err == nil {
			sts = []Status{st}
		}
		e.observe(ctx, "", nil, sts, err)
	}
	return st, err
}

func (e *Engine) decideOp(ctx context.Context, op *floodgate.Op, c rules.Consistency) (Status, error) {
	if err := op.Check(); err != nil {
		op.Err = err
		return Status{}, err
	}
	sts := []Status{{Code: OK, Match: rules.Match{Key: op.Key, Limits: op.Limits}, Hits: op.Cost}}
	ops := []floodgate.Op{*op}
	ops[0].Result, ops[0].Err = floodgate.Result{}, nil
	err := e.storeFor(c).Decide(ctx, ops)
	if err == nil {
		err = ops[0].Err
	}
	if err != nil {
		if ferr := e.fallback(ctx, "", ops, []int{0}, sts, err); ferr != nil {
			*op = ops[0]
			if op.Err == nil {
				op.Err = err
			}
			return Status{}, ferr
		}
	}
	*op = ops[0]
	st := sts[0]
	st.Decided = true
	st.Result = op.Result
	st.Each = op.Each
	if !op.Result.Allowed && !op.Release {
		st.Code = OverLimit
	}
	return st, nil
}

// storeFor returns the store that decides ops of consistency c:
// [Options.Approximate] for approximate ones when it is set, the engine's
// store otherwise.
func (e *Engine) storeFor(c rules.Consistency) floodgate.Store {
	if c == rules.Approximate && e.opts.Approximate != nil {
		return e.opts.Approximate
	}
	return e.store
}

// Peek reads the state of m's key under m.Limits without consuming
// anything (cost 0), from the store that keeps it: [Options.Approximate]
// for an approximate rule when it is set, the engine's store otherwise. It
// returns each limit's result, in order. Unlike Decide, no failure policy
// answers for the store and the observer is not told: it is for the admin
// API, which shows the store's state or says that it cannot.
func (e *Engine) Peek(ctx context.Context, m rules.Match) ([]floodgate.Result, error) {
	each := make([]floodgate.Result, len(m.Limits))
	ops := []floodgate.Op{{Key: m.Key, Limits: m.Limits, Each: each}}
	if err := ops[0].Check(); err != nil {
		return nil, err
	}
	c := rules.Strict
	if m.Rule != nil {
		c = m.Rule.Consistency
	}
	err := e.storeFor(c).Decide(ctx, ops)
	if err == nil {
		err = ops[0].Err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	return each, nil
}

// decideWith is decide under the rules set.
func (e *Engine) decideWith(ctx context.Context, set *rules.Set, now int64, domain string, descriptors [][]rules.Entry, hits []int64, releasing bool) ([]Status, Code, error) {
	if hits != nil && len(hits) != len(descriptors) {
		return nil, Unknown, fmt.Errorf("engine: %d hits for %d descriptors: %w", len(hits), len(descriptors), floodgate.ErrInvalid)
	}
	for i, h := range hits {
		if err := floodgate.ValidateCost(h); err != nil {
			return nil, Unknown, fmt.Errorf("engine: descriptor %d: hits %d: %w", i, h, err)
		}
	}
	ms, ok := set.MatchRequest(domain, descriptors)
	if e.opts.Overrides != nil {
		for i := range ms {
			if ok[i] {
				e.override(&ms[i])
			}
		}
	}
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
		// Strict ops first, then approximate ones (when a store for them
		// is set): ops[:split] go to the store, ops[split:] to Approximate.
		split := 0
		for pass := range 2 {
			for i := range ms {
				m := &ms[i]
				if !ok[i] || m.Unlimited || m.Deny {
					continue
				}
				approximate := e.opts.Approximate != nil && m.Rule != nil && m.Rule.Consistency == rules.Approximate
				if approximate != (pass == 1) {
					continue
				}
				start := len(each)
				each = append(each, make([]floodgate.Result, len(m.Limits))...)
				ops = append(ops, floodgate.Op{
					Key:    m.Key,
					Limits: m.Limits,
					Cost:   sts[i].Hits,
					Now:    now,
					Lease:  leaseFor(releasing, m.Limits, sts[i].Hits),
					Each:   each[start:len(each):len(each)],
				})
				idx = append(idx, i)
			}
			if pass == 0 {
				split = len(ops)
			}
		}
		var err error
		if split > 0 {
			ended := ctx.Err() != nil // nothing reaches the store then
			if err = e.store.Decide(ctx, ops[:split]); err != nil && !ended {
				e.releaseLost(ops[:split])
			}
		}
		if split < len(ops) {
			if aerr := e.opts.Approximate.Decide(ctx, ops[split:]); err == nil {
				err = aerr
			}
		}
		if err != nil {
			if err := e.fallback(ctx, domain, ops, idx, sts, err); err != nil {
				return nil, Unknown, err
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
		if ops[j].Lease != "" && st.Result.Allowed && (st.Policy == rules.FailureDefault || st.Policy == rules.FailLocal) {
			st.Lease = ops[j].Lease
		}
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

// override applies the runtime override of m's descriptor, if any, to a
// match with limits.
func (e *Engine) override(m *rules.Match) {
	if m.Rule == nil || m.Unlimited || m.Deny || m.Replaced {
		return
	}
	limits, found := e.opts.Overrides.Lookup(m.Domain, m.Key)
	if !found {
		return
	}
	if m.Rule.Consistency == rules.Approximate && e.opts.Approximate != nil {
		if err := rules.CheckApproximate(limits); err != nil {
			// The approximate store could not decide these limits: the
			// rule's own apply (the override was set under other rules).
			if now := time.Now().Unix(); e.lastOverrideWarn.Load() != now && e.lastOverrideWarn.Swap(now) != now {
				e.logger.Warn("override ignored: its limits cannot be counted approximately", "domain", m.Domain, "rule", m.Rule.ID, "key", m.Key, "err", err)
			}
			return
		}
	}
	m.Limits, m.Units, m.Override = limits, nil, true
}

// Match matches one descriptor of domain under the rules in force, with
// the runtime overrides applied, as Decide would; see [rules.Set.Match].
func (e *Engine) Match(domain string, entries []rules.Entry) (rules.Match, bool) {
	m, ok := e.Rules().Match(domain, entries)
	if ok && e.opts.Overrides != nil {
		e.override(&m)
	}
	return m, ok
}

// releaseLost gives back, in the background and on a short deadline of its
// own, the leases of ops the store may have granted although its answer
// did not arrive (a timeout, a lost connection, a cancelled request). A
// failure policy then decides those ops, and nobody else would release
// what the store holds; a release the store cannot make either leaves the
// lease to expire after its window.
func (e *Engine) releaseLost(ops []floodgate.Op) {
	var lost []floodgate.Op
	for i := range ops {
		op := &ops[i]
		if op.Lease != "" && op.Cost > 0 && (op.Err != nil || op.Result.Limit == (floodgate.Limit{})) {
			lost = append(lost, floodgate.Op{Key: op.Key, Limits: op.Limits, Lease: op.Lease, Release: true})
		}
	}
	if len(lost) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), lostReleaseTimeout)
		defer cancel()
		if err := e.store.Decide(ctx, lost); err != nil {
			e.logger.Debug("leases the store may hold could not be released; they expire after their window", "leases", len(lost), "err", err)
		}
	}()
}

// lostReleaseTimeout bounds [Engine.releaseLost]'s store call.
const lostReleaseTimeout = time.Second

// leaseFor returns a new lease name for an op of cost hits under limits
// when the caller releases leases and one of the limits is a concurrency
// limit, "" otherwise.
func leaseFor(releasing bool, limits []floodgate.Limit, hits int64) string {
	if !releasing || hits <= 0 {
		return ""
	}
	for _, l := range limits {
		if l.Algorithm == floodgate.Concurrency {
			return strconv.FormatUint(rand.Uint64(), 36)
		}
	}
	return ""
}

// Release gives back the leases sts hold ([Status.Lease]), as Decide
// returned them, once the request is done: those the store granted in one
// store call, those the local policy granted to the local store. A lease
// the local policy granted while the number of live instances was another
// is not found there, and expires after its window. Releasing a lease that
// has expired is not an error. The error wraps [ErrStore]; the leases it
// could not release expire after their window.
func (e *Engine) Release(ctx context.Context, sts []Status) error {
	var ops, lops []floodgate.Op
	for i := range sts {
		st := &sts[i]
		if st.Lease == "" {
			continue
		}
		op := floodgate.Op{Key: st.Match.Key, Limits: st.Match.Limits, Lease: st.Lease, Release: true}
		if st.Policy == rules.FailLocal {
			lops = append(lops, op)
		} else {
			ops = append(ops, op)
		}
	}
	var errs []error
	if len(ops) > 0 {
		if err := e.store.Decide(ctx, ops); err != nil {
			errs = append(errs, err)
		}
	}
	if len(lops) > 0 && e.local != nil {
		n := e.instances()
		for i := range lops {
			lops[i].Limits = shares(lops[i].Limits, n)
		}
		if err := e.local.Decide(ctx, lops); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: releasing leases: %w", ErrStore, err)
	}
	return nil
}

// fallback decides by failure policy the ops the store could not decide
// (batchErr is the store's error), setting their Result and Each and the
// statuses' Policy and StoreErr. It returns an error wrapping [ErrStore]
// when an op has no policy, its error is invalid input, or ctx has ended.
func (e *Engine) fallback(ctx context.Context, domain string, ops []floodgate.Op, idx []int, sts []Status, batchErr error) error {
	var local []int // indexes into ops decided by the local policy
	for j := range ops {
		op := &ops[j]
		if op.Err == nil && op.Result.Limit != (floodgate.Limit{}) {
			continue // decided by the store
		}
		serr := op.Err
		if serr == nil {
			serr = batchErr
		}
		e.storeErrors.Add(1)
		st := &sts[idx[j]]
		pol := e.opts.OnStoreError
		if r := st.Match.Rule; r != nil && r.OnStoreError != rules.FailureDefault {
			pol = r.OnStoreError
		}
		if pol == rules.FailureDefault || errors.Is(serr, floodgate.ErrInvalid) || ctx.Err() != nil {
			e.unhandled.Add(1)
			return fmt.Errorf("%w: domain %q, key %q: %w", ErrStore, domain, op.Key, serr)
		}
		st.Policy, st.StoreErr = pol, serr
		op.Err = nil
		switch pol {
		case rules.FailOpen:
			e.failOpen.Add(1)
			e.fixed(op, floodgate.Result{Allowed: true})
		case rules.FailClosed:
			e.failClosed.Add(1)
			d := e.opts.FailClosedRetryAfter
			e.fixed(op, floodgate.Result{RetryAfter: d, ResetAfter: d})
		default:
			local = append(local, j)
		}
	}
	if now := time.Now().Unix(); e.lastWarn.Load() != now && e.lastWarn.Swap(now) != now {
		e.logger.Warn("store cannot decide: failure policies apply", "domain", domain, "err", batchErr, "stats", e.Stats())
	}
	if len(local) == 0 {
		return nil
	}
	return e.decideLocal(ctx, domain, ops, local)
}

// fixed sets op's result (and each limit's) to r with each limit in turn.
func (e *Engine) fixed(op *floodgate.Op, r floodgate.Result) {
	r.Limit = op.Limits[0]
	op.Result = r
	for k := range op.Each {
		op.Each[k] = r
		op.Each[k].Limit = op.Limits[k]
	}
}

// decideLocal decides ops[j] for j in local in the local store, with each
// limit scaled to this instance's share.
func (e *Engine) decideLocal(ctx context.Context, domain string, ops []floodgate.Op, local []int) error {
	e.localOnce.Do(func() {
		if e.local == nil {
			e.local = memory.New(memory.Options{})
			e.ownLocal = true
		}
	})
	if e.local == nil {
		return fmt.Errorf("%w: domain %q: engine closed, no local store", ErrStore, domain)
	}
	n := e.instances()
	lops := make([]floodgate.Op, len(local))
	for i, j := range local {
		op := &ops[j]
		limits := shares(op.Limits, n)
		lops[i] = floodgate.Op{Key: op.Key, Limits: limits, Cost: op.Cost, Lease: op.Lease, Release: op.Release, Now: op.Now, Each: make([]floodgate.Result, len(limits))}
	}
	if err := e.local.Decide(ctx, lops); err != nil {
		e.unhandled.Add(uint64(len(local)))
		return fmt.Errorf("%w: domain %q: local policy: %w", ErrStore, domain, err)
	}
	for i, j := range local {
		op, lop := &ops[j], &lops[i]
		op.Result = lop.Result
		for k := range lop.Limits {
			if lop.Limits[k] == op.Result.Limit {
				op.Result.Limit = op.Limits[k]
				break
			}
		}
		for k := range op.Each {
			op.Each[k] = lop.Each[k]
			op.Each[k].Limit = op.Limits[k]
		}
		if op.Result.Allowed {
			e.localAllowed.Add(1)
		} else {
			e.localDenied.Add(1)
		}
	}
	return nil
}

// instances returns the live instances the local policy divides quotas
// among (Options.Instances), at least 1.
func (e *Engine) instances() int {
	if e.opts.Instances == nil {
		return 1
	}
	return max(e.opts.Instances(), 1)
}

// shares returns each of limits' share for one of n instances ([Share]),
// in a new slice.
func shares(limits []floodgate.Limit, n int) []floodgate.Limit {
	out := make([]floodgate.Limit, len(limits))
	for k, l := range limits {
		out[k] = Share(l, n)
	}
	return out
}

// Share returns l with its quota (and burst) divided among n instances,
// rounded up: ceil(quota / n), at least 1. l is returned unchanged when n
// is below 2 or the scaled limit would not be valid.
func Share(l floodgate.Limit, n int) floodgate.Limit {
	if n < 2 {
		return l
	}
	s := l
	s.Quota = (l.Quota + int64(n) - 1) / int64(n)
	if l.Burst > 0 {
		s.Burst = (l.Burst + int64(n) - 1) / int64(n)
	}
	if s.Validate() != nil {
		return l
	}
	return s
}
