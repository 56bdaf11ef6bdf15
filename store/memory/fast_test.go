package memory

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
)

// TestFastPathMatchesCore checks the transcribed common-case formulas
// against floodgate.Limit.Acquire on random and edge-case states, instants
// and costs: same result always, same state whenever it is kept.
func TestFastPathMatchesCore(t *testing.T) {
	s := New(Options{Clock: func() int64 { return 0 }})
	defer s.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	limits := []floodgate.Limit{
		{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Millisecond},
		{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Second},
		{Algorithm: floodgate.FixedWindow, Quota: 1 << 40, Window: floodgate.MaxWindow},
		{Algorithm: floodgate.TokenBucket, Quota: 100, Window: time.Minute, Burst: 20},
		{Algorithm: floodgate.TokenBucket, Quota: 7, Window: 3 * time.Millisecond},
		{Algorithm: floodgate.TokenBucket, Quota: 3, Window: 1001 * time.Millisecond, Burst: 9},
		{Algorithm: floodgate.TokenBucket, Quota: 1e9, Window: time.Second},
		{Algorithm: floodgate.GCRA, Quota: 10, Window: time.Second},
		{Algorithm: floodgate.GCRA, Quota: 3, Window: 10 * time.Millisecond, Burst: 5},
		{Algorithm: floodgate.GCRA, Quota: 1e6, Window: time.Second, Burst: 1},
	}
	for _, l := range limits {
		li := s.info(&l)
		if li == nil {
			t.Fatalf("limit %v invalid", l)
		}
		capacity := l.Capacity()
		st := floodgate.State{}
		now := t0()
		for i := range 20_000 {
			switch rng.IntN(4) {
			case 0:
				now += rng.Int64N(li.w + 2)
			case 1:
				now -= rng.Int64N(li.w/4 + 1) // out of order
			case 2:
				now += rng.Int64N(3)
			}
			var cost int64
			switch rng.IntN(6) {
			case 0:
				cost = 0
			case 1:
				cost = capacity + rng.Int64N(3)
			case 2:
				cost = capacity
			default:
				cost = 1 + rng.Int64N(min(capacity, 5))
			}
			wantNext, want := l.Acquire(st, now, cost, "")
			var got floodgate.Result
			gotNext := li.decideFast(st, now, cost, &got)
			if got != want {
				t.Fatalf("%v event %d: state %+v at %d cost %d: got %+v, want %+v", l, i, st, now, cost, got, want)
			}
			if want.Allowed && cost > 0 {
				if gotNext.T != wantNext.T || gotNext.N != wantNext.N || gotNext.P != wantNext.P {
					t.Fatalf("%v event %d: state %+v at %d cost %d: next %+v, want %+v", l, i, st, now, cost, gotNext, wantNext)
				}
				// The table keeps it encoded: the round trip must be exact.
				if exp := li.expiry(wantNext); exp != l.ExpiresAt(wantNext) {
					t.Fatalf("%v: expiry %d, core says %d", l, exp, l.ExpiresAt(wantNext))
				} else if exp > 0 {
					back := li.decode(exp, wantNext.N)
					if back.T != wantNext.T || back.N != wantNext.N {
						t.Fatalf("%v: state %+v decodes back as %+v", l, wantNext, back)
					}
				}
				st = wantNext
			}
		}
	}
}

func t0() int64 { return 1767225600 * 1e6 }
