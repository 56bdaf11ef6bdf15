package floodgate

import "time"

// Result is the outcome of one decision. A denial is a Result with Allowed
// false, never an error: an error means no decision could be made.
//
// Worked example: with Limit{Algorithm: FixedWindow, Quota: 10, Window:
// time.Minute}, the 4th request of cost 1 at 12:00:15 gets Result{Allowed:
// true, Remaining: 6, ResetAfter: 45s, RetryAfter: 0}; the 11th request at
// 12:00:40 gets Result{Allowed: false, Remaining: 0, ResetAfter: 20s,
// RetryAfter: 20s}; a request of cost 11 gets Allowed false and RetryAfter
// [Never], since no window ever holds 11.
type Result struct {
	// Allowed reports whether the request was admitted (and its cost consumed).
	Allowed bool
	// Limit is the limit that decided the result: of several limits, the one
	// that denied with the longest RetryAfter, or when all allowed, the one with
	// the fewest units remaining.
	Limit Limit
	// Remaining is the cost that could still be admitted right now under Limit,
	// after this request: the units left in the window, the whole tokens in the
	// bucket, the back-to-back requests GCRA would still pass, the lease units
	// free. It is never negative; for TokenBucket and GCRA it may exceed
	// Limit.Quota when Burst does.
	Remaining int64
	// ResetAfter is how long until Limit is back to its full capacity if nothing
	// more is admitted: the end of the fixed window, the time the bucket is full
	// again, the time the newest logged event or lease expires.
	ResetAfter time.Duration
	// RetryAfter is zero when Allowed. When denied it is the shortest wait after
	// which the same request could be admitted if nothing else is admitted
	// meanwhile, or [Never] when its cost exceeds Limit's capacity.
	RetryAfter time.Duration
}

// Combine folds one limit's result r into acc, the combined result of the
// limits before it (first is true when r is the first limit's): of several
// limits, the denial with the longest RetryAfter decides, or when every
// limit admits, the one with the fewest units remaining (then the latest
// reset). Every store combines the limits of an op this way.
func Combine(acc, r Result, first bool) Result {
	if first {
		return r
	}
	switch {
	case acc.Allowed && !r.Allowed:
		return r
	case !acc.Allowed && r.Allowed:
		return acc
	case !acc.Allowed: // both denied: the longer wait decides
		if r.RetryAfter > acc.RetryAfter {
			return r
		}
		return acc
	default: // both allowed: the tighter limit decides
		if r.Remaining < acc.Remaining || (r.Remaining == acc.Remaining && r.ResetAfter > acc.ResetAfter) {
			return r
		}
		return acc
	}
}
