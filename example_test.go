package floodgate_test

import (
	"fmt"
	"time"

	"github.com/floodgate/floodgate"
)

// A fixed window of 10 per second admits 10 at 12:00:00.999 and 10 more at
// 12:00:01.000, the next window.
func ExampleLimit_Decide() {
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Second}
	at := time.Date(2024, 1, 1, 12, 0, 0, 999_000_000, time.UTC).UnixMicro()

	var st floodgate.State
	decide := func(now, cost int64) floodgate.Result {
		next, r := l.Decide(st, now, cost)
		if r.Allowed {
			st = next // keep the new state only when admitted
		}
		return r
	}
	r := decide(at, 10)
	fmt.Println(r.Allowed, r.Remaining, r.ResetAfter)
	r = decide(at, 1)
	fmt.Println(r.Allowed, r.RetryAfter)
	r = decide(at+1000, 10) // 1ms later
	fmt.Println(r.Allowed, r.Remaining, r.ResetAfter)
	r = decide(at+1000, 11)
	fmt.Println(r.Allowed, r.RetryAfter == floodgate.Never)
	// Output:
	// true 0 1ms
	// false 1ms
	// true 0 1s
	// false true
}

// A token bucket of 100 per minute with a burst of 20 refills a token every
// 600ms: 20 at once from rest, then one per 600ms.
func ExampleLimit_Decide_tokenBucket() {
	l := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 100, Window: time.Minute, Burst: 20}
	now := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC).UnixMicro()

	st, r := l.Decide(floodgate.State{}, now, 20)
	fmt.Println(r.Allowed, r.Remaining, r.ResetAfter)
	_, r = l.Decide(st, now, 1)
	fmt.Println(r.Allowed, r.RetryAfter)
	_, r = l.Decide(st, now+1_500_000, 0) // a peek 1.5s later: 2.5 tokens
	fmt.Println(r.Allowed, r.Remaining, r.ResetAfter)
	// Output:
	// true 0 12s
	// false 600ms
	// true 2 10.5s
}

// Two limits on one key, 10 per second and 1000 per day: a request passes
// only if both admit it, and a denial consumes nothing from either.
func ExampleApply() {
	limits := []floodgate.Limit{
		{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Second},
		{Algorithm: floodgate.FixedWindow, Quota: 1000, Window: 24 * time.Hour},
	}
	states := make([]floodgate.State, len(limits)) // what a store keeps for the key
	now := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC).UnixMicro()

	op := floodgate.Op{Key: "user:42", Limits: limits, Cost: 10, Each: make([]floodgate.Result, 2)}
	floodgate.Apply(&op, states, now)
	fmt.Println(op.Result.Allowed, op.Result.Limit, op.Each[1].Remaining)

	op = floodgate.Op{Key: "user:42", Limits: limits, Cost: 1, Each: make([]floodgate.Result, 2)}
	floodgate.Apply(&op, states, now)
	fmt.Println(op.Result.Allowed, op.Result.Limit, op.Result.RetryAfter, op.Each[1].Remaining)
	// Output:
	// true fixed_window 10/1s 990
	// false fixed_window 10/1s 1s 990
}
