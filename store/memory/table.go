package memory

import (
	"hash/maphash"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate/floodgate"
)

// shard is one independently locked part of the table. Entries are keyed by
// a 64-bit hash of (key, limit) and hold the limit's state encoded around its
// expiry, so the janitor can drop expired entries without knowing their
// limits:
//
//	tw: FixedWindow  [T+W, N]               (T: window start)
//	    TokenBucket  [T+ceil(N/qr), N]      (T: last update, N: deficit)
//	    GCRA         [TAT, 0]
//	sw: SlidingWindow [T+2W or T+W, N, P]  (2W when N > 0)
//	ev: SlidingWindowLog, Concurrency: the events and their expiry
//
// The first word is always the instant from which the state is equivalent to
// a fresh one ([floodgate.Limit.ExpiresAt]), and decoding inverts it.
type shard struct {
	mu        sync.Mutex
	n         int // entries in tw, sw and ev
	cap       int
	tw        twTable
	sw        map[uint64][3]int64
	ev        map[uint64]events
	low       int64 // lowest explicit Op.Now ever decided here; 0 when none
	lastSweep int64 // instant of the last opportunistic sweep
	misses    int   // ops that found the shard full since the last sweep
	_         [64]byte
}

type events struct {
	exp int64
	ev  []floodgate.Event
}

// decide validates and decides one op, and returns its error.
func (s *Store) decide(op *floodgate.Op) error {
	if len(op.Key) == 0 || len(op.Key) > floodgate.MaxKeyLen || op.Cost < 0 || op.Cost > floodgate.MaxCost || op.Now < 0 || len(op.Limits) == 0 {
		return op.Check()
	}
	var infoBuf [4]*limitInfo
	var infos []*limitInfo
	if len(op.Limits) <= len(infoBuf) {
		infos = infoBuf[:len(op.Limits)]
	} else {
		infos = make([]*limitInfo, len(op.Limits))
	}
	for j := range op.Limits {
		if infos[j] = s.info(&op.Limits[j]); infos[j] == nil {
			return op.Check()
		}
	}
	h := maphash.String(s.seed, op.Key)
	sh := &s.shards[h>>s.shift]
	sh.mu.Lock()
	now := op.Now
	if now == 0 {
		now = s.clock()
	} else if sh.low == 0 || now < sh.low {
		sh.low = now
	}
	if len(infos) == 1 && !op.Release {
		// The common case: one limit of a fixed-size state, on a key held.
		li := infos[0]
		switch li.limit.Algorithm {
		case floodgate.FixedWindow, floodgate.TokenBucket, floodgate.GCRA:
			id := entryID(h, li)
			if i := sh.tw.find(id); i >= 0 {
				e := &sh.tw.slots[i]
				next := li.decode(e.exp, e.n)
				li.prep.Acquire(&next, now, op.Cost, "", &op.Result)
				if len(op.Each) == 1 {
					op.Each[0] = op.Result
				}
				if op.Result.Allowed && op.Cost > 0 {
					if exp := li.expiry(next); exp > now {
						e.exp, e.n = exp, next.N
					} else {
						sh.tw.removeAt(i)
						sh.n--
					}
				}
				sh.mu.Unlock()
				return nil
			}
		}
	}
	s.decideSlow(op, infos, h, sh, now)
	return nil
}

// decideSlow decides op on the locked shard sh, and unlocks it: several
// limits, new keys, logs and leases.
func (s *Store) decideSlow(op *floodgate.Op, infos []*limitInfo, h uint64, sh *shard, now int64) {
	nl := len(op.Limits)
	var idBuf [4]uint64
	var stBuf [4]floodgate.State
	var missBuf [4]bool
	ids, states, missing := idBuf[:], stBuf[:], missBuf[:]
	if nl > len(idBuf) {
		ids, states, missing = make([]uint64, nl), make([]floodgate.State, nl), make([]bool, nl)
	}
	ids, states, missing = ids[:nl], states[:nl], missing[:nl]
	nMissing := 0
	for j, li := range infos {
		ids[j] = entryID(h, li)
		var ok bool
		states[j], ok = sh.load(li, ids[j])
		if !ok {
			missing[j] = true
			nMissing++
		}
	}
	useOv, ovLocked := false, false
	if nMissing > 0 {
		if op.Release {
			useOv = s.ov.live.Load() > now
		} else {
			if sh.n+nMissing > sh.cap {
				s.makeRoom(sh, now)
			}
			if sh.n+nMissing > sh.cap {
				if s.policy == OverflowDeny {
					sh.mu.Unlock()
					deny(op, missing)
					return
				}
				useOv = true
			}
		}
		if useOv || s.ov.live.Load() > now {
			s.ov.mu.Lock()
			ovLocked = true
			if !s.ov.fill(op.Limits, states, missing, !useOv, now, op.Now != 0) {
				s.ov.mu.Unlock()
				sh.mu.Unlock()
				deny(op, missing)
				return
			}
		}
	}
	if floodgate.Apply(op, states, now) {
		for j, li := range infos {
			if useOv && missing[j] {
				s.ov.store(li.limit, states[j], now)
			} else {
				sh.store(li, ids[j], states[j], now)
			}
		}
	}
	if ovLocked {
		s.ov.mu.Unlock()
	}
	sh.mu.Unlock()
}

// deny answers an op that found no room under [OverflowDeny].
func deny(op *floodgate.Op, missing []bool) {
	each := op.Each
	if len(each) != len(op.Limits) {
		each = nil
	}
	first := true
	for j, l := range op.Limits {
		r := floodgate.Result{Limit: l, RetryAfter: l.Window}
		if each != nil {
			each[j] = r
		}
		if missing[j] && first {
			op.Result = r
			first = false
		}
	}
}

// load returns the state of entry id under l, and whether it is held.
func (sh *shard) load(li *limitInfo, id uint64) (floodgate.State, bool) {
	l := li.limit
	switch l.Algorithm {
	case floodgate.FixedWindow, floodgate.TokenBucket, floodgate.GCRA:
		i := sh.tw.find(id)
		if i < 0 {
			return floodgate.State{}, false
		}
		return li.decode(sh.tw.slots[i].exp, sh.tw.slots[i].n), true
	case floodgate.SlidingWindow:
		v, ok := sh.sw[id]
		if !ok {
			return floodgate.State{}, false
		}
		w := li.w
		if v[1] > 0 {
			w *= 2
		}
		return floodgate.State{T: v[0] - w, N: v[1], P: v[2]}, true
	default:
		e, ok := sh.ev[id]
		return floodgate.State{Events: e.ev}, ok
	}
}

// store keeps st as entry id under l, or drops the entry when st is
// equivalent to a fresh state at now. An op may list a limit twice, so the
// entry's presence is looked up, not taken from the load: it is counted once.
func (sh *shard) store(li *limitInfo, id uint64, st floodgate.State, now int64) {
	l := li.limit
	exp := l.ExpiresAt(st)
	if exp <= now {
		sh.remove(l, id)
		return
	}
	switch l.Algorithm {
	case floodgate.FixedWindow, floodgate.TokenBucket, floodgate.GCRA:
		if i := sh.tw.find(id); i >= 0 {
			sh.tw.slots[i].exp, sh.tw.slots[i].n = exp, st.N
			return
		}
		sh.tw.insert(id, exp, st.N)
	case floodgate.SlidingWindow:
		_, held := sh.sw[id]
		sh.sw[id] = [3]int64{exp, st.N, st.P}
		if held {
			return
		}
	default:
		_, held := sh.ev[id]
		sh.ev[id] = events{exp: exp, ev: st.Events}
		if held {
			return
		}
	}
	sh.n++
}

// remove drops entry id under l, if held.
func (sh *shard) remove(l floodgate.Limit, id uint64) {
	switch l.Algorithm {
	case floodgate.FixedWindow, floodgate.TokenBucket, floodgate.GCRA:
		i := sh.tw.find(id)
		if i < 0 {
			return
		}
		sh.tw.removeAt(i)
	case floodgate.SlidingWindow:
		if _, ok := sh.sw[id]; !ok {
			return
		}
		delete(sh.sw, id)
	default:
		if _, ok := sh.ev[id]; !ok {
			return
		}
		delete(sh.ev, id)
	}
	sh.n--
}

// makeRoom sweeps a full shard, at most once per cap/16 ops that found it
// full or per interval/8, so that a table full of live entries costs O(16)
// entry checks per new key, not a whole sweep.
func (s *Store) makeRoom(sh *shard, now int64) {
	sh.misses++
	if sh.misses < max(sh.cap/16, 1) && now < sh.lastSweep+int64(s.interval/8/time.Microsecond) {
		return
	}
	sh.misses = 0
	sh.lastSweep = now
	sh.sweepAt(sh.sweepInstant(now))
}

// sweepInstant is the instant expired entries are judged at: now, or the
// lowest explicit Op.Now ever decided in the shard when lower. Explicit
// instants need not follow one timeline (tests replay sequences from a common
// base on several keys), so an entry is only dropped when it is expired at
// every instant an op could come with.
func (sh *shard) sweepInstant(now int64) int64 { return lowest(now, sh.low) }

// lowest returns the lower of now and low, an explicit instant (0: none).
func lowest(now, low int64) int64 {
	if low != 0 && low < now {
		return low
	}
	return now
}

// sweep drops the shard's expired entries, under its lock.
func (sh *shard) sweep(clock func() int64) {
	sh.mu.Lock()
	if sh.n > 0 {
		sh.sweepAt(sh.sweepInstant(clock()))
	}
	sh.mu.Unlock()
}

func (sh *shard) sweepAt(now int64) {
	sh.n -= sh.tw.sweep(now)
	for id, v := range sh.sw {
		if v[0] <= now {
			delete(sh.sw, id)
			sh.n--
		}
	}
	for id, e := range sh.ev {
		if e.exp <= now {
			delete(sh.ev, id)
			sh.n--
		}
	}
}

// overflow holds the states shared by new keys that find their shard full,
// one per limit, at most maxOverflowLimits of them.
type overflow struct {
	mu   sync.Mutex
	m    map[uint64]ovEntry
	live atomic.Int64 // no state is live from this instant on
	low  int64        // lowest explicit instant ever seen; see shard.sweepInstant
}

type ovEntry struct {
	limit floodgate.Limit
	st    floodgate.State
}

// fill loads the overflow state of every missing limit into states, a copy
// when own (the key is getting entries of its own). It reports false when a
// limit has no overflow state and there is no room for one.
func (o *overflow) fill(limits []floodgate.Limit, states []floodgate.State, missing []bool, own bool, now int64, explicit bool) bool {
	if explicit && (o.low == 0 || now < o.low) {
		o.low = now
	}
	for j, l := range limits {
		if !missing[j] {
			continue
		}
		fp := fingerprint(&l)
		e, ok := o.m[fp]
		switch {
		case ok && e.limit == l:
			st := e.st
			if own {
				st.Events = slices.Clone(st.Events)
			}
			states[j] = st
		case ok: // another limit with the same fingerprint
			if !own {
				return false
			}
		case !own && len(o.m) >= maxOverflowLimits:
			o.sweepAt(lowest(now, o.low))
			if len(o.m) >= maxOverflowLimits {
				return false
			}
		}
	}
	return true
}

func (o *overflow) store(l floodgate.Limit, st floodgate.State, now int64) {
	fp := fingerprint(&l)
	exp := l.ExpiresAt(st)
	if exp <= now {
		delete(o.m, fp)
		return
	}
	o.m[fp] = ovEntry{limit: l, st: st}
	if exp > o.live.Load() {
		o.live.Store(exp)
	}
}

func (o *overflow) sweep(clock func() int64) {
	o.mu.Lock()
	o.sweepAt(lowest(clock(), o.low))
	o.mu.Unlock()
}

func (o *overflow) sweepAt(now int64) {
	var live int64
	for fp, e := range o.m {
		exp := e.limit.ExpiresAt(e.st)
		if exp <= now {
			delete(o.m, fp)
			continue
		}
		live = max(live, exp)
	}
	o.live.Store(live)
}

// Hashing. A key hashes to 64 bits with a seed chosen at New; its shard is
// the top bits of that hash, so every limit of an op lives in one shard. An
// entry is identified by a 64-bit mix of the key hash and the limit.
const (
	k0 = 0xa0761d6478bd642f
	k1 = 0xe7037ed1a0b428db
	k2 = 0x8ebc6af09c88c6e3
	k3 = 0x589965cc75374cc3
)

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func fingerprint(l *floodgate.Limit) uint64 {
	a := mum(uint64(l.Quota)|uint64(l.Algorithm)<<56^k0, uint64(l.Window)^k1)
	return mum(a^k2, uint64(l.Burst)^k3)
}

func entryID(h uint64, li *limitInfo) uint64 {
	return nonZero(mum(li.fp^k0, h^k1))
}

// decode returns the state a tw entry holds (FixedWindow, TokenBucket, GCRA).
func (li *limitInfo) decode(exp, n int64) floodgate.State {
	switch li.limit.Algorithm {
	case floodgate.FixedWindow:
		return floodgate.State{T: exp - li.w, N: n}
	case floodgate.TokenBucket:
		return floodgate.State{T: exp - ceilDiv(n, li.qr), N: n}
	}
	return floodgate.State{T: exp}
}

// expiry is [floodgate.Limit.ExpiresAt] for FixedWindow, TokenBucket and
// GCRA, without recomputing the refill.
func (li *limitInfo) expiry(st floodgate.State) int64 {
	switch li.limit.Algorithm {
	case floodgate.FixedWindow:
		if st.N == 0 {
			return 0
		}
		return st.T + li.w
	case floodgate.TokenBucket:
		if st.N == 0 {
			return 0
		}
		return st.T + ceilDiv(st.N, li.qr)
	}
	return st.T
}

// refill returns qr: the token bucket's refill per microsecond in units of
// 1/wr token, where Quota/Window = qr/wr in lowest terms.
func refill(l floodgate.Limit) int64 {
	q, w := l.Quota, int64(l.Window/time.Microsecond)
	a, b := q, w
	for b != 0 {
		a, b = b, a%b
	}
	return q / a
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
