package floodgate

import "time"

// State is what a store keeps for one key under one limit. Its zero value is
// the state of a key never seen, or fully replenished. Times are integer
// microseconds since the Unix epoch, the unit Redis TIME gives and one that
// keeps every value exact in a Lua double.
//
// The fields mean, by algorithm:
//
//	FixedWindow       T: window start         N: cost admitted in it
//	SlidingWindow     T: current window start N: cost in it    P: cost in the previous window
//	TokenBucket       T: last update          N: deficit below a full bucket, in 1/w token (see docs/algorithms.md)
//	GCRA              T: theoretical arrival time
//	SlidingWindowLog  Events: admitted events of the last window, oldest first
//	Concurrency       Events: leases held, At is the expiry, soonest first
type State struct {
	T, N, P int64
	Events  []Event
}

// Event is one admitted request of a sliding window log (At: when it was
// admitted) or one concurrency lease (At: when it expires, ID: the lease).
type Event struct {
	At   int64
	Cost int64
	ID   string
}

// Decide applies a request of cost at now (µs since the Unix epoch) to st
// under l, and returns the state to keep if the request is admitted, and the
// result. It is a pure function: st is not modified, but the returned state
// may share st.Events' backing array. Cost 0 is a peek: Allowed and RetryAfter
// say what a request of cost 1 would get, Remaining and ResetAfter describe
// the state now, and the returned state equals st up to expired entries.
//
// A Concurrency limit acquires an anonymous lease; use [Limit.Acquire] to
// name it.
//
// Decide assumes l is valid ([Limit.Validate]) and 0 <= cost <= [MaxCost].
func (l Limit) Decide(st State, now, cost int64) (State, Result) {
	return l.Acquire(st, now, cost, "")
}

// Acquire is Decide with a lease name for Concurrency limits: acquiring a
// lease already held renews it (its expiry moves to now + Window) and consumes
// no more units. Other algorithms ignore lease.
func (l Limit) Acquire(st State, now, cost int64, lease string) (State, Result) {
	p := l.Prepare()
	var r Result
	p.Acquire(&st, now, cost, lease, &r)
	return st, r
}

// Prepared is a limit with the constants its decisions derive from it
// (window in µs, the token bucket's reduced rate, GCRA's interval) computed
// once. [Limit.Acquire] prepares its limit on every call; a store that
// decides the same limit over and over keeps one Prepared per limit and
// decides in place. Prepare only valid limits ([Limit.Validate]). A Prepared
// is immutable and safe for concurrent use.
type Prepared struct {
	limit    Limit
	w        int64 // Window in µs
	qr, wr   int64 // token bucket: Quota/Window = qr/wr in lowest terms
	capacity int64 // Limit.Capacity()
	interval int64 // GCRA emission interval in µs
}

// Prepare returns l with its derived constants.
func (l Limit) Prepare() Prepared {
	p := Prepared{limit: l, w: micros(l.Window), capacity: l.Capacity()}
	switch l.Algorithm {
	case TokenBucket:
		p.qr, p.wr = reduced(l.Quota, p.w)
	case GCRA:
		p.interval = interval(l)
	}
	return p
}

// Limit returns the prepared limit.
func (p *Prepared) Limit() Limit { return p.limit }

// Acquire is [Limit.Acquire] in place: it sets *r, and replaces *st by the
// state to keep if the request is admitted (the state Limit.Acquire
// returns). FixedWindow, TokenBucket and GCRA decide without allocating.
func (p *Prepared) Acquire(st *State, now, cost int64, lease string, r *Result) {
	peek := cost == 0
	if peek {
		cost = 1
	}
	switch p.limit.Algorithm {
	case FixedWindow, TokenBucket, GCRA:
		p.meter(st, now, cost, peek, r)
		r.Limit = p.limit
		return
	}
	l := p.limit
	var next State
	switch l.Algorithm {
	case SlidingWindow:
		next, *r = l.slidingWindow(*st, now, cost)
	case SlidingWindowLog:
		next, *r = l.slidingLog(*st, now, cost)
	case Concurrency:
		next, *r = l.concurrency(*st, now, cost, lease)
	}
	r.Limit = l
	if peek {
		// Report the state as it is, and keep only the expiry of old entries.
		before, cur := l.current(*st, now)
		r.Remaining, r.ResetAfter = cur.Remaining, cur.ResetAfter
		next = before
	}
	*st = next
}

// current returns st with expired entries dropped, and the result of a
// request of cost 0 that changes nothing: remaining and reset only.
func (l Limit) current(st State, now int64) (State, Result) {
	var next State
	var r Result
	// A zero-cost decision is allowed by every algorithm and adds nothing,
	// except the bookkeeping of time (windows rolled, refill applied).
	switch l.Algorithm {
	case FixedWindow, TokenBucket, GCRA:
		// A peek changes nothing but the bookkeeping of time.
		p := l.Prepare()
		next = st
		p.meter(&next, now, 1, true, &r)
		r.Allowed, r.RetryAfter = true, 0
	case SlidingWindow:
		next, r = l.slidingWindow(st, now, 0)
	case SlidingWindowLog:
		next, r = l.slidingLog(st, now, 0)
	case Concurrency:
		next, r = l.concurrency(st, now, 0, "")
	}
	return next, r
}

// Release removes lease from a Concurrency state and reports whether it was
// held (and not yet expired at now).
func Release(st State, now int64, lease string) (State, bool) {
	for i, e := range st.Events {
		if e.ID == lease && lease != "" {
			found := e.At > now
			ev := make([]Event, 0, len(st.Events)-1)
			ev = append(ev, st.Events[:i]...)
			ev = append(ev, st.Events[i+1:]...)
			st.Events = ev
			return st, found
		}
	}
	return st, false
}

// Expired reports whether st holds nothing a store must remember at now: a
// key whose state is expired can be forgotten, and comes back as the zero
// State, with no change to any decision.
func (l Limit) Expired(st State, now int64) bool {
	return l.ExpiresAt(st) <= now
}

// ExpiresAt returns the instant (µs) from which st is equivalent to the zero
// State.
func (l Limit) ExpiresAt(st State) int64 {
	w := micros(l.Window)
	switch l.Algorithm {
	case FixedWindow:
		if st.N == 0 {
			return 0
		}
		return st.T + w
	case SlidingWindow:
		switch {
		case st.N > 0:
			return st.T + 2*w
		case st.P > 0:
			return st.T + w
		}
		return 0
	case TokenBucket:
		if st.N == 0 {
			return 0
		}
		qr, _ := reduced(l.Quota, w)
		return st.T + ceilDiv(st.N, qr)
	case GCRA:
		return st.T
	case SlidingWindowLog:
		if len(st.Events) == 0 {
			return 0
		}
		return st.Events[len(st.Events)-1].At + w
	case Concurrency:
		var last int64
		for _, e := range st.Events {
			last = max(last, e.At)
		}
		return last
	}
	return 0
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func us(n int64) time.Duration { return time.Duration(n) * time.Microsecond }

// meter decides the algorithms whose state is a fixed number of integers
// (FixedWindow, TokenBucket, GCRA) in place. With peek, the request of cost
// is evaluated but not charged: Remaining and ResetAfter describe the state
// as it stands.
//
// FixedWindow counts cost N in the window starting at T = now - now mod W.
//
// TokenBucket keeps the deficit D below a full bucket, in units of 1/wr
// token where Quota/Window = qr/wr in lowest terms: the bucket refills qr
// units per microsecond and holds Burst×wr units.
//
// GCRA keeps the theoretical arrival time TAT. With emission interval
// T = ceil(Window/Quota) µs and tolerance τ = Burst×T, a request of cost c is
// admitted when max(TAT, now) + c×T - now <= τ.
func (p *Prepared) meter(st *State, now, cost int64, peek bool, r *Result) {
	*r = Result{}
	switch p.limit.Algorithm {
	case FixedWindow:
		quota, w := p.limit.Quota, p.w
		start := now - now%w
		if st.T > start {
			// The clock went back (a failover to a server behind this
			// one): keep counting in the newer window, never a fresh one.
			start = st.T
		}
		n := st.N
		if st.T != start {
			n = 0
		}
		r.ResetAfter = us(start + w - now)
		switch {
		case n+cost <= quota:
			if !peek {
				n += cost
			}
			r.Allowed = true
		case cost > quota:
			r.RetryAfter = Never
		default:
			r.RetryAfter = r.ResetAfter
		}
		r.Remaining = quota - n
		if n == 0 {
			r.ResetAfter = 0
		}
		*st = State{T: start, N: n}
	case TokenBucket:
		qr, wr, capacity := p.qr, p.wr, p.capacity
		d := st.N
		if elapsed := now - st.T; elapsed > 0 && d > 0 {
			if elapsed >= ceilDiv(d, qr) {
				d = 0
			} else {
				d -= elapsed * qr
			}
		}
		t := max(now, st.T)
		switch {
		case cost > capacity:
			r.RetryAfter = Never
		case d+cost*wr <= capacity*wr:
			if !peek {
				d += cost * wr
			}
			r.Allowed = true
		default:
			r.RetryAfter = us(ceilDiv(d+cost*wr-capacity*wr, qr))
		}
		if d == 0 {
			t = 0
		}
		*st = State{T: t, N: d}
		r.Remaining = (capacity*wr - d) / wr
		r.ResetAfter = us(ceilDiv(d, qr))
	case GCRA:
		t, capacity := p.interval, p.capacity
		tau := capacity * t
		tat := max(st.T, now)
		newTAT := tat + cost*t
		switch {
		case cost > capacity:
			r.RetryAfter = Never
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
}

// slidingWindow estimates the cost in the sliding window (now-W, now] as
// cur + ceil(prev × (W-e)/W), with e the time elapsed in the current aligned
// window, both in whole milliseconds.
func (l Limit) slidingWindow(st State, now, cost int64) (State, Result) {
	w := micros(l.Window)
	start := now - now%w
	if st.T > start {
		start = st.T // the clock went back: stay in the newer window
	}
	switch {
	case st.T == start:
	case st.T == start-w:
		st = State{T: start, P: st.N}
	default:
		st = State{T: start}
	}
	wms := w / 1000
	ems := max(0, (now-start)/1000)
	weighted := ceilDiv(st.P*(wms-ems), wms)
	r := Result{}
	switch {
	case cost > l.Quota:
		r.RetryAfter = Never
	case weighted+st.N+cost <= l.Quota:
		st.N += cost
		r.Allowed = true
	default:
		r.RetryAfter = us(l.slidingRetry(st, start, now, cost))
	}
	r.Remaining = max(0, l.Quota-weighted-st.N)
	switch {
	case st.N > 0:
		r.ResetAfter = us(start + 2*w - now)
	case st.P > 0:
		r.ResetAfter = us(start + w - now)
	}
	return st, r
}

// slidingRetry returns the microseconds from now until a request of cost
// (<= Quota) passes the sliding window counter, if nothing else is admitted.
func (l Limit) slidingRetry(st State, start, now, cost int64) int64 {
	w := micros(l.Window)
	wms := w / 1000
	// Within the current window the estimate falls as the previous window's
	// weight does; find the first millisecond where it fits.
	if st.N+cost <= l.Quota && st.P > 0 {
		// Need ceil(P × (wms-e)/wms) <= Quota - N - cost =: room, i.e.
		// P × (wms-e) <= room × wms, i.e. e >= wms - room×wms/P.
		room := l.Quota - st.N - cost
		e := wms - (room*wms)/st.P
		if e < wms {
			at := start + e*1000
			return max(at-now, 1)
		}
	}
	// Otherwise wait for the next window, where the current count becomes the
	// previous one and decays in turn.
	next := start + w
	if cost <= l.Quota && st.N > 0 {
		room := l.Quota - cost
		e := wms - (room*wms)/st.N
		if room*wms >= st.N*wms {
			e = 0
		}
		return max(next+e*1000-now, 1)
	}
	return next - now
}

// slidingLog counts the cost of events in (now-W, now].
func (l Limit) slidingLog(st State, now, cost int64) (State, Result) {
	w := micros(l.Window)
	ev := st.Events
	for len(ev) > 0 && ev[0].At <= now-w {
		ev = ev[1:]
	}
	var sum int64
	for _, e := range ev {
		sum += e.Cost
	}
	r := Result{}
	switch {
	case cost > l.Quota:
		r.RetryAfter = Never
	case sum+cost <= l.Quota:
		if cost > 0 {
			ev = insertByAt(ev, Event{At: now, Cost: cost})
			sum += cost
		}
		r.Allowed = true
	default:
		// Wait until enough of the oldest events leave the window.
		need := sum + cost - l.Quota
		for _, e := range ev {
			need -= e.Cost
			if need <= 0 {
				r.RetryAfter = us(e.At + w - now)
				break
			}
		}
	}
	r.Remaining = l.Quota - sum
	if len(ev) > 0 {
		r.ResetAfter = us(ev[len(ev)-1].At + w - now)
	}
	if len(ev) == 0 {
		ev = nil
	}
	return State{Events: ev}, r
}

// concurrency counts the units of leases that expire after now.
func (l Limit) concurrency(st State, now, cost int64, lease string) (State, Result) {
	w := micros(l.Window)
	// Keep live leases, and take out the one being renewed.
	var held int64
	var renew *Event
	// Leases are ordered by expiry, so the expired ones are usually a prefix
	// and the live ones can be kept without copying; a renewal or an expired
	// lease out of order needs a copy.
	skip, inOrder := 0, true
	for i, e := range st.Events {
		switch {
		case e.At <= now && skip == i:
			skip++
		case e.At <= now, lease != "" && e.ID == lease:
			inOrder = false
		}
	}
	var live []Event
	if inOrder {
		live = st.Events[skip:]
		for _, e := range live {
			held += e.Cost
		}
	} else {
		live = make([]Event, 0, len(st.Events)+1)
		for i, e := range st.Events {
			if e.At <= now {
				continue
			}
			if lease != "" && e.ID == lease {
				renew = &st.Events[i]
				continue
			}
			live = append(live, e)
			held += e.Cost
		}
	}
	r := Result{}
	switch {
	case renew != nil && cost > 0:
		// Renewal keeps the lease's units and moves its expiry.
		live = append(live, Event{At: now + w, Cost: renew.Cost, ID: lease})
		held += renew.Cost
		r.Allowed = true
	case cost > l.Quota:
		r.RetryAfter = Never
	case held+cost <= l.Quota:
		if cost > 0 {
			live = insertByAt(live, Event{At: now + w, Cost: cost, ID: lease})
			held += cost
		}
		r.Allowed = true
	default:
		need := held + cost - l.Quota
		for _, e := range live {
			need -= e.Cost
			if need <= 0 {
				r.RetryAfter = us(e.At - now)
				break
			}
		}
	}
	if renew != nil && !r.Allowed {
		// A denied or peeking renewal leaves the lease as it was.
		live = append(live, *renew)
		held += renew.Cost
		sortByAt(live)
	}
	r.Remaining = max(0, l.Quota-held)
	var last int64
	for _, e := range live {
		last = max(last, e.At)
	}
	if last > now {
		r.ResetAfter = us(last - now)
	}
	if len(live) == 0 {
		live = nil
	}
	return State{Events: live}, r
}

// insertByAt adds e to ev, which is ordered by At, keeping the order (equal
// instants in arrival order). When e goes last, as it does unless the clock
// went back, it is appended in place, past the end of ev; otherwise ev is
// copied, so a caller's slice never changes.
func insertByAt(ev []Event, e Event) []Event {
	i := len(ev)
	for i > 0 && ev[i-1].At > e.At {
		i--
	}
	if i == len(ev) {
		return append(ev, e)
	}
	out := make([]Event, 0, len(ev)+1)
	out = append(out, ev[:i]...)
	out = append(out, e)
	return append(out, ev[i:]...)
}

// sortByAt keeps leases ordered by expiry (insertion sort: lists are short and
// nearly sorted).
func sortByAt(ev []Event) {
	for i := 1; i < len(ev); i++ {
		for j := i; j > 0 && ev[j].At < ev[j-1].At; j-- {
			ev[j], ev[j-1] = ev[j-1], ev[j]
		}
	}
}
