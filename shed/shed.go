// Package shed is a priority load shedder: it caps the requests one
// instance serves at once, and as that load rises it turns away the least
// important requests first, keeping a reserve for critical work.
//
// Every request has a [Priority]: critical, normal or sheddable. A
// [Shedder] of capacity C admits a sheddable request while fewer than
// SheddableAt × C requests are in flight, a normal one while fewer than
// NormalAt × C are, and a critical one while fewer than C are (each share
// rounded down, at least one slot, and below C when the share is below 1).
// With the defaults (0.5 and 0.9) sheddable work gets at most half the
// capacity, and the last tenth, at least one slot from a capacity of 2, is
// kept for critical work: a flood of normal requests cannot take the room
// critical requests need.
//
// A turned-away request costs an atomic compare-and-swap, no allocation and
// no store call: [Shedder.Middleware] answers it 503 Service Unavailable
// with Retry-After before anything else runs (rate limiting included, so a
// shed request spends no quota).
//
// The shedder counts this instance's requests only. Limits across
// instances, per client, are the rate limits and concurrency rules of the
// rule files; see docs/shedding.md.
package shed

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Priority is a request's class. The zero value is Normal.
type Priority uint8

// The priorities, from the default to the most and least important.
const (
	// Normal requests are shed when the load reaches NormalAt of capacity.
	Normal Priority = iota
	// Critical requests are shed only at full capacity.
	Critical
	// Sheddable requests are shed first, when the load reaches SheddableAt
	// of capacity.
	Sheddable

	numPriorities
)

// String returns "normal", "critical" or "sheddable".
func (p Priority) String() string {
	switch p {
	case Normal:
		return "normal"
	case Critical:
		return "critical"
	case Sheddable:
		return "sheddable"
	}
	return fmt.Sprintf("priority(%d)", p)
}

// ParsePriority parses "critical", "normal" or "sheddable", in any case.
func ParsePriority(s string) (Priority, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "normal":
		return Normal, nil
	case "critical":
		return Critical, nil
	case "sheddable":
		return Sheddable, nil
	}
	return Normal, fmt.Errorf("shed: priority %q: want critical, normal or sheddable", s)
}

// Defaults of [Options].
const (
	DefaultSheddableAt = 0.5
	DefaultNormalAt    = 0.9
	DefaultRetryAfter  = time.Second
)

// Options configure a [Shedder].
type Options struct {
	// Capacity is the most requests in flight at once. Required, at least 1.
	Capacity int
	// SheddableAt is the share of Capacity from which sheddable requests are
	// turned away, in (0, NormalAt]. 0 means [DefaultSheddableAt].
	SheddableAt float64
	// NormalAt is the share of Capacity from which normal requests are
	// turned away, in [SheddableAt, 1]; the rest is kept for critical
	// requests. 0 means [DefaultNormalAt].
	NormalAt float64
	// RetryAfter is the Retry-After of a shed request's answer, rounded up
	// to whole seconds. 0 means [DefaultRetryAfter].
	RetryAfter time.Duration
}

// Shedder admits requests by priority under a capacity. Create it with
// [New]. It is safe for concurrent use.
type Shedder struct {
	limits     [numPriorities]int64 // a priority is admitted while inflight < its limit
	capacity   int64
	retryAfter string

	inflight atomic.Int64
	admitted [numPriorities]atomic.Int64
	shed     [numPriorities]atomic.Int64
}

// New returns a shedder, or an error naming the option out of range.
func New(opts Options) (*Shedder, error) {
	if opts.Capacity < 1 {
		return nil, fmt.Errorf("shed: capacity %d: want at least 1", opts.Capacity)
	}
	if opts.SheddableAt == 0 {
		opts.SheddableAt = DefaultSheddableAt
	}
	if opts.NormalAt == 0 {
		opts.NormalAt = DefaultNormalAt
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	switch {
	case math.IsNaN(opts.NormalAt) || opts.NormalAt <= 0 || opts.NormalAt > 1:
		return nil, fmt.Errorf("shed: normal-at %v: want a share of capacity in (0, 1]", opts.NormalAt)
	case math.IsNaN(opts.SheddableAt) || opts.SheddableAt <= 0 || opts.SheddableAt > opts.NormalAt:
		return nil, fmt.Errorf("shed: sheddable-at %v: want a share of capacity in (0, normal-at %v]", opts.SheddableAt, opts.NormalAt)
	case opts.RetryAfter < 0:
		return nil, fmt.Errorf("shed: retry-after %v: want a positive duration", opts.RetryAfter)
	}
	c := int64(opts.Capacity)
	s := &Shedder{capacity: c, retryAfter: strconv.FormatInt(int64((opts.RetryAfter+time.Second-1)/time.Second), 10)}
	s.limits[Critical] = c
	s.limits[Normal] = share(c, opts.NormalAt)
	s.limits[Sheddable] = min(share(c, opts.SheddableAt), s.limits[Normal])
	return s, nil
}

// share returns frac of c rounded down, at least 1; and below c when frac
// is below 1 and c is at least 2, so that a share short of the whole
// leaves at least one slot above it.
func share(c int64, frac float64) int64 {
	n := int64(math.Floor(float64(c)*frac + 1e-9))
	if frac < 1 {
		n = min(n, c-1)
	}
	return max(1, min(c, n))
}

// Limit returns how many requests may be in flight when one of priority p
// is still admitted.
func (s *Shedder) Limit(p Priority) int64 {
	if p >= numPriorities {
		p = Normal
	}
	return s.limits[p]
}

// Acquire admits a request of priority p if the load allows it; the caller
// must then call [Shedder.Release] once when the request ends. It reports
// whether the request was admitted. An unknown priority counts as Normal.
func (s *Shedder) Acquire(p Priority) bool {
	if p >= numPriorities {
		p = Normal
	}
	limit := s.limits[p]
	for {
		n := s.inflight.Load()
		if n >= limit {
			s.shed[p].Add(1)
			return false
		}
		if s.inflight.CompareAndSwap(n, n+1) {
			s.admitted[p].Add(1)
			return true
		}
	}
}

// Release ends a request that Acquire admitted. A Release without an
// Acquire panics, leaving the count as it was.
func (s *Shedder) Release() {
	for {
		n := s.inflight.Load()
		if n <= 0 {
			panic("shed: Release without Acquire")
		}
		if s.inflight.CompareAndSwap(n, n-1) {
			return
		}
	}
}

// Stats are a shedder's counters.
type Stats struct {
	// InFlight is the number of requests admitted and not yet released.
	InFlight int64
	// Capacity is Options.Capacity.
	Capacity int64
	// Admitted and Shed count requests by priority since the shedder was
	// made, indexed by Priority.
	Admitted, Shed [numPriorities]int64
}

// Stats returns the counters.
func (s *Shedder) Stats() Stats {
	st := Stats{InFlight: s.inflight.Load(), Capacity: s.capacity}
	for p := range numPriorities {
		st.Admitted[p] = s.admitted[p].Load()
		st.Shed[p] = s.shed[p].Load()
	}
	return st
}

// Priorities lists every priority, for iterating over Stats.
func Priorities() []Priority { return []Priority{Critical, Normal, Sheddable} }

// Classifier returns a request's priority.
type Classifier func(*http.Request) Priority

// Header classifies a request by the value of header name ("critical",
// "normal" or "sheddable", in any case); a request without it, or with
// another value, gets def. The header says how important a request is, so
// it must come from a source you trust: a client could claim critical.
// Set it (or strip it) at your edge.
func Header(name string, def Priority) Classifier {
	return func(r *http.Request) Priority {
		v := r.Header.Get(name)
		if v == "" {
			return def
		}
		p, err := ParsePriority(v)
		if err != nil {
			return def
		}
		return p
	}
}

// ErrNoClassifier is returned by Middleware for a nil classifier.
var ErrNoClassifier = errors.New("shed: nil classifier")

// Middleware returns a net/http middleware that admits each request by the
// priority classify gives it, and answers a request it turns away with 503
// Service Unavailable, Retry-After, and a problem body (RFC 9457):
//
//	{"type":"about:blank","title":"Service Unavailable","status":503,
//	 "detail":"overloaded: normal requests are shed at 9 in flight"}
func (s *Shedder) Middleware(classify Classifier) (func(http.Handler) http.Handler, error) {
	if classify == nil {
		return nil, ErrNoClassifier
	}
	var bodies [numPriorities][]byte
	for _, p := range Priorities() {
		bodies[p] = fmt.Appendf(nil, `{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"overloaded: %s requests are shed at %d in flight"}`+"\n", p, s.limits[p])
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := classify(r)
			if p >= numPriorities {
				p = Normal
			}
			if !s.Acquire(p) {
				h := w.Header()
				h.Set("Content-Type", "application/problem+json")
				h.Set("Retry-After", s.retryAfter)
				h.Set("Cache-Control", "no-store")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write(bodies[p])
				return
			}
			defer s.Release()
			next.ServeHTTP(w, r)
		})
	}, nil
}
