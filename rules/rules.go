package rules

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/floodgate/floodgate"
)

// Entry is one key/value pair of a descriptor, as Envoy sends it: for
// example {Key: "remote_address", Value: "10.0.0.1"}. An empty Value is
// allowed; it matches only key-only and wildcard rules.
type Entry struct {
	Key   string
	Value string
}

// String formats the entry as key=value.
func (e Entry) String() string { return e.Key + "=" + e.Value }

// Position is where something was written in a configuration file. Line and
// Column count from 1; zero means unknown.
type Position struct {
	File   string
	Line   int
	Column int
}

// String formats the position as file:line:col.
func (p Position) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Column == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// Unit is one of the fixed window units of envoyproxy/ratelimit. The zero
// value is not a unit.
type Unit uint8

// The units a rate_limit's unit field accepts (case-insensitive), as Envoy's
// RateLimitResponse.RateLimit.Unit enumerates them. Their windows are aligned
// to the Unix epoch; a month is 30 days and a year 365 days, as in Envoy.
const (
	Second Unit = iota + 1
	Minute
	Hour
	Day
	Week
	Month
	Year
)

var unitNames = [...]string{Second: "second", Minute: "minute", Hour: "hour", Day: "day", Week: "week", Month: "month", Year: "year"}

var unitDurations = [...]time.Duration{
	Second: time.Second,
	Minute: time.Minute,
	Hour:   time.Hour,
	Day:    24 * time.Hour,
	Week:   7 * 24 * time.Hour,
	Month:  30 * 24 * time.Hour,
	Year:   365 * 24 * time.Hour,
}

// String returns the unit's name in lower case ("minute"); Envoy's enum name
// is its upper-case form.
func (u Unit) String() string {
	if u == 0 || int(u) >= len(unitNames) {
		return fmt.Sprintf("unit(%d)", u)
	}
	return unitNames[u]
}

// Duration returns the unit's window length, 0 for an invalid unit.
func (u Unit) Duration() time.Duration {
	if u == 0 || int(u) >= len(unitDurations) {
		return 0
	}
	return unitDurations[u]
}

// ParseUnit returns the unit named s, in any case ("second", "SECOND").
func ParseUnit(s string) (Unit, error) {
	ls := strings.ToLower(s)
	for u, name := range unitNames {
		if name != "" && name == ls {
			return Unit(u), nil
		}
	}
	return 0, fmt.Errorf("rules: unknown unit %q (want second, minute, hour, day, week, month or year)", s)
}

// UnitFor returns the Envoy unit whose window is closest to d (at least
// Second), and whether d is exactly that unit. A front that must report a
// limit in Envoy's terms (the gRPC RateLimitService) uses it for windows of
// other lengths, scaling the quota as it sees fit.
func UnitFor(d time.Duration) (u Unit, exact bool) {
	u = Second
	for v := Second; v <= Year; v++ {
		if v.Duration() == d {
			return v, true
		}
		if absDur(v.Duration()-d) < absDur(u.Duration()-d) {
			u = v
		}
	}
	return u, false
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// Consistency says how a rule's counters are kept. The zero value is Strict.
type Consistency uint8

const (
	// Strict decides every request atomically in the store: exactly the
	// limit, under any concurrency across any number of processes.
	Strict Consistency = iota
	// Approximate counts locally and synchronises periodically; it may admit
	// more than the limit, within a documented bound.
	Approximate
)

// String returns "strict" or "approximate".
func (c Consistency) String() string {
	switch c {
	case Strict:
		return "strict"
	case Approximate:
		return "approximate"
	}
	return fmt.Sprintf("consistency(%d)", c)
}

// FailurePolicy says what a rule decides when the store cannot answer. The
// zero value, FailureDefault, leaves the choice to the server's default.
type FailurePolicy uint8

const (
	// FailureDefault means the rule names no policy.
	FailureDefault FailurePolicy = iota
	// FailOpen admits requests while the store is down.
	FailOpen
	// FailClosed denies requests while the store is down.
	FailClosed
	// FailLocal decides with an in-process limiter holding this instance's
	// share of the quota while the store is down.
	FailLocal
)

// String returns "", "fail_open", "fail_closed" or "local".
func (p FailurePolicy) String() string {
	switch p {
	case FailureDefault:
		return ""
	case FailOpen:
		return "fail_open"
	case FailClosed:
		return "fail_closed"
	case FailLocal:
		return "local"
	}
	return fmt.Sprintf("failure_policy(%d)", p)
}

// Rule is one descriptor node of a configuration that carries a rate_limit
// (or rate_limits). Rules are built by [Parse] and [Load] and never change
// afterwards; they are safe to share between goroutines. Callers must not
// modify a Rule or its slices.
type Rule struct {
	// ID names the rule as Envoy's statistics do: the domain and the path of
	// key or key_value from the top level, joined by dots
	// ("edge.remote_address", "edge.path_/login.remote_address").
	ID string
	// Domain is the rule's domain.
	Domain string
	// Name is rate_limit.name, the name other rules' replaces refer to. It
	// may be empty.
	Name string
	// Replaces lists the names of the rules this one replaces (see
	// [Set.MatchRequest]).
	Replaces []string
	// Limits are the limits that all must admit a request. Every one passes
	// [floodgate.Limit.Validate]. Empty when Unlimited or Deny.
	Limits []floodgate.Limit
	// Units holds, for each of Limits, the Envoy unit it was written with, or
	// 0 when it was written with a window.
	Units []Unit
	// Unlimited is rate_limit.unlimited: requests are admitted without being
	// counted.
	Unlimited bool
	// Deny is set when a limit has requests_per_unit 0: Envoy's way of
	// blocking a value. Every request is over the limit.
	Deny bool
	// ShadowMode is shadow_mode: requests are decided and counted, but an
	// over-limit decision is reported as OK (and flagged as a would-be
	// denial).
	ShadowMode bool
	// DetailedMetric is detailed_metric: metrics should name the request's
	// value, not only the rule.
	DetailedMetric bool
	// ShareThreshold is share_threshold: on a wildcard value, every matching
	// value shares one counter (the store key holds the pattern, not the
	// value).
	ShareThreshold bool
	// Consistency is the rule's consistency mode (default Strict).
	Consistency Consistency
	// OnStoreError is the rule's failure policy (default FailureDefault: the
	// server's choice).
	OnStoreError FailurePolicy
	// Pos is where the descriptor node was written.
	Pos Position

	tiers []tierLimits // tier overrides, in the order the tiers are declared
}

// tierLimits overrides a rule's limits for the members of one tier.
type tierLimits struct {
	tier      *tier
	limits    []floodgate.Limit
	units     []Unit
	unlimited bool
	deny      bool
}

// String describes the rule's limits: "fixed_window 10/1s", "unlimited",
// "deny (requests_per_unit 0)".
func (r *Rule) String() string {
	return describeLimits(r.Limits, r.Unlimited, r.Deny)
}

func describeLimits(limits []floodgate.Limit, unlimited, deny bool) string {
	switch {
	case unlimited:
		return "unlimited"
	case deny:
		return "deny (requests_per_unit 0)"
	}
	parts := make([]string, len(limits))
	for i, l := range limits {
		parts[i] = l.String()
	}
	return strings.Join(parts, " and ")
}

// MatchKind says how one descriptor entry matched a configuration node.
type MatchKind uint8

const (
	// Exact: the node's key and value equal the entry's.
	Exact MatchKind = iota + 1
	// Wildcard: the node's value ends in * and is a prefix of the entry's
	// value (up to the *).
	Wildcard
	// KeyOnly: the node has no value and its key equals the entry's.
	KeyOnly
)

// String returns "exact", "wildcard" or "key-only".
func (k MatchKind) String() string {
	switch k {
	case Exact:
		return "exact"
	case Wildcard:
		return "wildcard"
	case KeyOnly:
		return "key-only"
	}
	return fmt.Sprintf("match_kind(%d)", k)
}

// Step is one level of the walk from a descriptor's first entry down the
// configuration tree.
type Step struct {
	// Entry is the request's entry at this level.
	Entry Entry
	// Kind says how it matched.
	Kind MatchKind
	// Node is the configuration node it matched: "key", "key=value" or
	// "key=prefix*".
	Node string
	// Pos is where that node was written.
	Pos Position
}

// Match is the outcome of matching one descriptor against a domain.
type Match struct {
	// Domain is the domain the descriptor was matched in.
	Domain string
	// Rule is the matched rule, nil when no rule applies (the descriptor is
	// admitted without being counted).
	Rule *Rule
	// Path is the walk through the configuration tree, one Step per entry
	// that matched a node, even when no rule applied in the end.
	Path []Step
	// Tier is the tier whose override applies, "" for none.
	Tier string
	// Limits are the limits to decide with: the rule's, or its tier
	// override's. Empty when Unlimited or Deny.
	Limits []floodgate.Limit
	// Units holds, for each of Limits, the Envoy unit it was written with, or
	// 0 when it was written with a window.
	Units []Unit
	// Unlimited: admit without counting.
	Unlimited bool
	// Deny: every request is over the limit (requests_per_unit 0).
	Deny bool
	// Replaced is set by [Set.MatchRequest] when another descriptor's rule of
	// the same request replaces this one: the descriptor is then admitted
	// without being counted, as Envoy does.
	Replaced bool
	// Override is set by an engine whose runtime overrides replaced the
	// rule's limits (and Units) for this descriptor.
	Override bool
	// Key is the store key: the domain and every entry of the descriptor,
	// escaped so that distinct descriptors never share a key, at most
	// [floodgate.MaxKeyLen] bytes (longer keys are hashed). It is stable
	// across reloads and processes. Empty when Rule is nil.
	Key string

	end     int   // how the walk ended, for Reason
	failed  Entry // the entry no node matched
	entries int   // the descriptor's length
}

// Set is a compiled configuration of one or more domains. It is immutable
// once built by [Parse] or [Load], and safe for concurrent use. The zero
// value and a nil *Set hold no domains: every Match reports no rule.
type Set struct {
	domains map[string]*domain
	files   []string
	version string
}

// Version returns a hash of the files the set was built from (their names
// relative to the loaded paths, and their contents): two sets built from the
// same bytes have the same version. "" for an empty set.
func (s *Set) Version() string {
	if s == nil {
		return ""
	}
	return s.version
}

// Domains returns the domain names, sorted.
func (s *Set) Domains() []string {
	if s == nil {
		return nil
	}
	names := make([]string, 0, len(s.domains))
	for name := range s.domains {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Files returns the files the set was built from, in load order.
func (s *Set) Files() []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s.files...)
}

// Rules returns every rule of domain, in the order they were written
// (depth first), or nil for an unknown domain.
func (s *Set) Rules(domain string) []*Rule {
	if s == nil {
		return nil
	}
	d := s.domains[domain]
	if d == nil {
		return nil
	}
	return append([]*Rule(nil), d.rules...)
}
