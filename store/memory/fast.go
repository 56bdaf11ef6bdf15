package memory

import (
	"time"

	"github.com/floodgate/floodgate"
)

// The decision path of the common case (one FixedWindow, TokenBucket or
// GCRA limit on a key held) decides with the formulas of
// [floodgate.Limit.Acquire], transcribed here so that the state and result
// are computed in place rather than passed through three layers of struct
// returns (about half the cost of a decision). TestFastPathMatchesCore feeds
// both the same events, edge cases included, and requires identical results
// and states; any change to those algorithms in the core must be mirrored
// here.

// decideFast decides a request of cost (0: peek) under li at now against
// st, as [floodgate.Limit.Acquire] does: it sets *r and returns the state to
// keep when the request is admitted with cost > 0.
func (li *limitInfo) decideFast(st floodgate.State, now, cost int64, r *floodgate.Result) floodgate.State {
	*r = floodgate.Result{}
	peek := cost == 0
	if peek {
		cost = 1
	}
	l := &li.limit
	switch l.Algorithm {
	case floodgate.FixedWindow:
		w := li.w
		start := now - now%w
		n := st.N
		if st.T != start {
			n = 0
		}
		r.ResetAfter = us(start + w - now)
		n0 := n
		switch {
		case n+cost <= l.Quota:
			n += cost
			r.Allowed = true
		case cost > l.Quota:
			r.RetryAfter = floodgate.Never
		default:
			r.RetryAfter = r.ResetAfter
		}
		if peek {
			n = n0
		}
		r.Remaining = l.Quota - n
		if n == 0 {
			r.ResetAfter = 0
		}
		st = floodgate.State{T: start, N: n}
	case floodgate.TokenBucket:
		qr, wr, capacity := li.qr, li.wr, li.capacity
		d := st.N
		if elapsed := now - st.T; elapsed > 0 && d > 0 {
			if elapsed >= ceilDiv(d, qr) {
				d = 0
			} else {
				d -= elapsed * qr
			}
		}
		st = floodgate.State{T: max(now, st.T), N: d}
		switch {
		case cost > capacity:
			r.RetryAfter = floodgate.Never
		case d+cost*wr <= capacity*wr:
			if !peek {
				st.N += cost * wr
			}
			r.Allowed = true
		default:
			r.RetryAfter = us(ceilDiv(d+cost*wr-capacity*wr, qr))
		}
		if st.N == 0 {
			st.T = 0
		}
		r.Remaining = (capacity*wr - st.N) / wr
		r.ResetAfter = us(ceilDiv(st.N, qr))
	default: // GCRA
		t := li.interval
		tau := li.capacity * t
		tat := max(st.T, now)
		newTAT := tat + cost*t
		switch {
		case cost > li.capacity:
			r.RetryAfter = floodgate.Never
		case newTAT-now <= tau:
			if !peek {
				st.T = newTAT
				tat = newTAT
			}
			r.Allowed = true
		default:
			r.RetryAfter = us(newTAT - now - tau)
		}
		r.Remaining = max(0, (tau-(tat-now))/t)
		r.ResetAfter = us(tat - now)
	}
	r.Limit = *l
	return st
}

func us(n int64) time.Duration { return time.Duration(n) * time.Microsecond }
