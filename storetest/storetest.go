// Package storetest is the conformance suite every [floodgate.Store] runs, in
// the spirit of testing/slogtest: [Run] feeds a store fixed tables of
// (instant, cost) events whose expected results were worked out by hand from
// the formulas in docs/algorithms.md, and [RunProperties] feeds it random
// event sequences and compares every result, field by field, with
// brute-force reference models of the six algorithms.
//
// Every operation carries an explicit instant ([floodgate.Op.Now]), so no
// test sleeps and a store with a shared backend (Redis) is fed exactly the
// same events as the in-memory store. Every test case uses its own key, with
// a random suffix, so the suite can run against a server that other tests
// share.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
)

// Base instants of the tables, in µs since the Unix epoch.
const (
	// weekBase is Thursday 2023-12-28 00:00:00 UTC: a multiple of one week
	// since the epoch, so every window that divides a week (1s, 7s, 1m, 5m,
	// 1h, 24h) starts there.
	weekBase int64 = 1703721600 * 1_000_000
	// dayBase is Monday 2024-01-01 00:00:00 UTC: a day boundary that is 3s
	// past a multiple of 7s since the epoch.
	dayBase int64 = 1704067200 * 1_000_000
)

// unalignedBases are instants that no window aligns to, for the algorithms
// whose decisions do not depend on clock alignment.
var unalignedBases = []int64{
	weekBase,
	weekBase + 1,
	dayBase + 123_456_789,
	dayBase + 86_399_999_999, // one µs before the next day
}

// Run runs the conformance suite against the stores newStore returns.
//
// newStore is called once per test case with that case's t, and must return
// a new Store each time (stores may share a backing server). The suite
// closes the store when the case ends; a case that tests Close closes it
// earlier, so Close must tolerate being called twice. newStore may register
// its own cleanup with t.Cleanup; it runs after the store is closed.
//
// Run only uses operations with an explicit [floodgate.Op.Now], so its cases
// take no wall-clock time beyond the store's own latency.
func Run(t *testing.T, newStore func(t *testing.T) floodgate.Store) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, s floodgate.Store)
	}{
		{"FixedWindow/EdgeBurst", testFixedWindowEdge},
		{"FixedWindow/EpochAligned", testFixedWindowEpochAligned},
		{"FixedWindow/FiveMinutes", testFixedWindowFiveMinutes},
		{"SlidingWindow/Weighting", testSlidingWindowWeighting},
		{"SlidingWindow/NextWindow", testSlidingWindowNextWindow},
		{"SlidingWindow/UnalignedMinute", testSlidingWindowMinute},
		{"TokenBucket/BurstAboveQuota", testTokenBucketBurst},
		{"TokenBucket/ThirdOfAToken", testTokenBucketThirds},
		{"GCRA/BurstAndInterval", testGCRABurst},
		{"GCRA/RoundedInterval", testGCRARounded},
		{"SlidingWindowLog/Exact", testSlidingLog},
		{"Concurrency/Leases", testConcurrency},
		{"ClockBack", testClockBack},
		{"Peek/ChangesNothing", testPeek},
		{"CostAboveCapacity", testCostAboveCapacity},
		{"SeveralLimits/SecondAndDay", testSeveralFixed},
		{"SeveralLimits/BucketAndLog", testSeveralMixed},
		{"SeveralLimits/EachLength", testEachLength},
		{"SeparateKeys", testSeparateKeys},
		{"InvalidOps", testInvalidOps},
		{"Batch/InOrder", testBatchInOrder},
		{"Concurrent/ExactlyQuota", testConcurrentExact},
		{"Reset", testReset},
		{"Close", testClose},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			if s == nil {
				t.Fatal("newStore returned nil")
			}
			t.Cleanup(func() { s.Close() })
			c.fn(t, s)
		})
	}
}

// want is an expected result; the suite fills in Limit.
type want struct {
	allowed      bool
	remaining    int64
	reset, retry time.Duration
}

func ok(remaining int64, reset time.Duration) want {
	return want{allowed: true, remaining: remaining, reset: reset}
}

func deny(remaining int64, reset, retry time.Duration) want {
	return want{remaining: remaining, reset: reset, retry: retry}
}

// step is one operation of a table, at an offset from the table's base.
type step struct {
	at      time.Duration
	cost    int64
	lease   string
	release bool
	want    want
	// by is the index of the limit that decides the combined result, for
	// operations on several limits.
	by int
	// each, when set, is every limit's own result.
	each []want
}

func us(n int64) time.Duration  { return time.Duration(n) * time.Microsecond }
func ms(n int64) time.Duration  { return time.Duration(n) * time.Millisecond }
func sec(n int64) time.Duration { return time.Duration(n) * time.Second }

// uniqueKey returns a key that no other case, run or process uses.
func uniqueKey(t *testing.T, name string) string {
	return "storetest:" + name + ":" + strconv.FormatUint(rand.Uint64(), 36)
}

// runTable feeds steps to s on a fresh key, from base, and checks every result.
func runTable(t *testing.T, s floodgate.Store, base int64, limits []floodgate.Limit, steps []step) {
	t.Helper()
	key := uniqueKey(t, limits[0].Algorithm.String())
	for i, st := range steps {
		op := floodgate.Op{
			Key: key, Limits: limits, Cost: st.cost, Lease: st.lease, Release: st.release,
			Now: base + int64(st.at/time.Microsecond),
		}
		if len(limits) > 1 || st.each != nil {
			op.Each = make([]floodgate.Result, len(limits))
		}
		ops := []floodgate.Op{op}
		if err := s.Decide(context.Background(), ops); err != nil {
			t.Fatalf("step %d (at +%v, cost %d): Decide: %v", i, st.at, st.cost, err)
		}
		got := ops[0]
		if got.Err != nil {
			t.Fatalf("step %d (at +%v, cost %d): op error: %v", i, st.at, st.cost, got.Err)
		}
		label := fmt.Sprintf("base %d, step %d (at +%v, cost %d, lease %q, release %v)", base, i, st.at, st.cost, st.lease, st.release)
		checkResult(t, label, got.Result, st.want, limits[st.by])
		for j, w := range st.each {
			checkResult(t, fmt.Sprintf("%s, limit %d", label, j), got.Each[j], w, limits[j])
		}
	}
}

func checkResult(t *testing.T, label string, got floodgate.Result, w want, l floodgate.Limit) {
	t.Helper()
	exp := floodgate.Result{Allowed: w.allowed, Limit: l, Remaining: w.remaining, ResetAfter: w.reset, RetryAfter: w.retry}
	if got != exp {
		t.Errorf("%s:\n got %s\nwant %s", label, FormatResult(got), FormatResult(exp))
	}
}

// FormatResult formats r on one line with every field, for failure messages.
func FormatResult(r floodgate.Result) string {
	retry := r.RetryAfter.String()
	if r.RetryAfter == floodgate.Never {
		retry = "never"
	}
	return fmt.Sprintf("{allowed %v, limit %v, remaining %d, reset %v, retry %s}", r.Allowed, r.Limit, r.Remaining, r.ResetAfter, retry)
}

// The store's clock going back (a failover to a server whose clock is
// behind) never hands out a fresh window, and the log stays ordered by time:
// fixed and sliding windows keep counting in the newer window; an event
// admitted at an earlier instant is logged in its place.
func testClockBack(t *testing.T, s floodgate.Store) {
	fw := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Second}
	runTable(t, s, weekBase, []floodgate.Limit{fw}, []step{
		{at: ms(1500), cost: 2, want: ok(0, ms(500))},
		// 600ms back, into the previous window: still the newer one's count.
		{at: ms(900), cost: 1, want: deny(0, ms(1100), ms(1100))},
		{at: ms(2000), cost: 1, want: ok(1, sec(1))},
	})
	sw := floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: 2, Window: time.Second}
	runTable(t, s, weekBase, []floodgate.Limit{sw}, []step{
		{at: ms(1500), cost: 2, want: ok(0, ms(1500))},
		// Back in the previous window: the newer window, not yet elapsed.
		// Retry: at 2s the 2 become the previous window's, weighted 1 at
		// 2.5s, leaving room for 1.
		{at: ms(900), cost: 1, want: deny(0, ms(2100), ms(1600))},
	})
	log := floodgate.Limit{Algorithm: floodgate.SlidingWindowLog, Quota: 3, Window: time.Second}
	runTable(t, s, weekBase, []floodgate.Limit{log}, []step{
		{at: ms(1000), cost: 1, want: ok(2, sec(1))},
		// Logged before the 1.0s event, so it also leaves the window first.
		{at: ms(800), cost: 1, want: ok(1, ms(1200))},
		// At 1.85s the 0.8s event is gone and the 1.0s one is not.
		{at: ms(1850), cost: 1, want: ok(1, sec(1))},
	})
}

// Fixed window, 10 per second: 10 at 0.999s and 10 more at 1.000s, 20
// admitted within one millisecond across the window edge.
func testFixedWindowEdge(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Second}
	runTable(t, s, weekBase, []floodgate.Limit{l}, []step{
		{at: ms(999), cost: 10, want: ok(0, ms(1))},
		{at: us(999_500), cost: 1, want: deny(0, us(500), us(500))},
		{at: ms(1000), cost: 10, want: ok(0, sec(1))},
		{at: us(1_000_001), cost: 0, want: deny(0, us(999_999), us(999_999))},
		{at: us(1_999_999), cost: 11, want: deny(0, us(1), floodgate.Never)},
		{at: sec(2), cost: 11, want: deny(10, 0, floodgate.Never)},
		{at: sec(2), cost: 0, want: ok(10, 0)},
		{at: ms(2500), cost: 4, want: ok(6, ms(500))},
		{at: ms(2500), cost: 7, want: deny(6, ms(500), ms(500))},
		{at: ms(2500), cost: 6, want: ok(0, ms(500))},
		{at: ms(2999), cost: 1, want: deny(0, ms(1), ms(1))},
		// Two windows later the count starts over.
		{at: ms(4000), cost: 1, want: ok(9, sec(1))},
	})
}

// Fixed window of 7s: windows are aligned to the Unix epoch, not to the
// key's first request. dayBase is 3s past a multiple of 7s, so the window
// holding dayBase ends at dayBase+4s.
func testFixedWindowEpochAligned(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 2, Window: 7 * time.Second}
	runTable(t, s, dayBase, []floodgate.Limit{l}, []step{
		{at: 0, cost: 1, want: ok(1, sec(4))},
		{at: us(3_999_999), cost: 1, want: ok(0, us(1))},
		{at: sec(4), cost: 2, want: ok(0, sec(7))},
		{at: us(10_999_999), cost: 1, want: deny(0, us(1), us(1))},
		{at: sec(11), cost: 1, want: ok(1, sec(7))},
	})
}

// Fixed window of 5 minutes, started on the clock's 5-minute marks.
func testFixedWindowFiveMinutes(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 100, Window: 5 * time.Minute}
	runTable(t, s, weekBase+int64(time.Hour/time.Microsecond), []floodgate.Limit{l}, []step{
		{at: ms(299_999), cost: 100, want: ok(0, ms(1))},
		{at: ms(299_999), cost: 1, want: deny(0, ms(1), ms(1))},
		{at: sec(300), cost: 100, want: ok(0, 5*time.Minute)},
		{at: sec(330), cost: 1, want: deny(0, sec(270), sec(270))},
	})
}

// Sliding window counter, 10 per second: the estimate is
// cur + ceil(prev × (1000 - elapsed ms) / 1000).
func testSlidingWindowWeighting(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: 10, Window: time.Second}
	runTable(t, s, weekBase, []floodgate.Limit{l}, []step{
		// Window [0,1s): 8 admitted; reset when the next window ends.
		{at: ms(200), cost: 8, want: ok(2, ms(1800))},
		// Window [1s,2s) at e=0: prev 8 weighs 8.
		{at: ms(1000), cost: 1, want: ok(1, sec(2))},
		// e=250: weighted ceil(8×750/1000) = 6; 6+1+4 > 10. It fits from
		// e = 1000 - floor(5×1000/8) = 375 (ceil(8×625/1000) = 5).
		{at: ms(1250), cost: 4, want: deny(3, ms(1750), ms(125))},
		{at: ms(1375), cost: 4, want: ok(0, ms(1625))},
		// Peek: cost 1 needs weight <= 4, from e = 1000 - 4000/8 = 500.
		{at: ms(1375), cost: 0, want: deny(0, ms(1625), ms(125))},
		// e=999: weighted ceil(8/1000) = 1; 1+5+5 > 10, and in this window
		// the room is 0 < 8/1000: wait for the next window, where prev = 5
		// weighs 5 at e=0 and 5+5 fits.
		{at: us(1_999_999), cost: 5, want: deny(4, us(1_000_001), us(1))},
		// Window [2s,3s): prev 5 weighs 5; cost 6 needs weight <= 4, from
		// e = 1000 - 4000/5 = 200.
		{at: sec(2), cost: 6, want: deny(5, sec(1), ms(200))},
		{at: ms(2200), cost: 6, want: ok(0, ms(1800))},
		// Window [3s,4s): prev 6, e=500 weighs 3; cost 8 needs weight <= 2,
		// from e = 1000 - floor(2000/6) = 667 (ceil(6×333/1000) = 2).
		{at: ms(3500), cost: 8, want: deny(7, ms(500), ms(167))},
		{at: ms(3667), cost: 8, want: ok(0, ms(1333))},
		// Two windows after the last admission the key is fresh again.
		{at: ms(5100), cost: 10, want: ok(0, ms(1900))},
		{at: ms(5100), cost: 11, want: deny(0, ms(1900), floodgate.Never)},
	})
}

// Sliding window counter: a request that cannot fit in the current window
// waits for the next one, where the current count decays in turn.
func testSlidingWindowNextWindow(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: 10, Window: time.Second}
	runTable(t, s, weekBase, []floodgate.Limit{l}, []step{
		{at: ms(100), cost: 8, want: ok(2, ms(1900))},
		// 8+3 > 10 in this window. Next window: ceil(8×(1000-e)/1000) <= 7
		// from e = 1000 - floor(7000/8) = 125, at 1.125s.
		{at: ms(900), cost: 3, want: deny(2, ms(1100), ms(225))},
		// Cost 10 needs the previous count to weigh 0: at 2s.
		{at: ms(900), cost: 10, want: deny(2, ms(1100), ms(1100))},
		{at: us(1_124_999), cost: 3, want: deny(2, us(875_001), us(1))},
		{at: ms(1125), cost: 3, want: ok(0, ms(1875))},
		{at: us(1_999_999), cost: 10, want: deny(6, us(1_000_001), us(1_000_001))},
		// At 2s the previous window holds 3 (weighs 3), and 8 is gone.
		{at: sec(2), cost: 7, want: ok(0, sec(2))},
	})
}

// Sliding window counter of one minute on a base 45s into a minute.
func testSlidingWindowMinute(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: 60, Window: time.Minute}
	runTable(t, s, weekBase+45_000_000, []floodgate.Limit{l}, []step{
		// 45s into minute 0.
		{at: 0, cost: 30, want: ok(30, sec(75))},
		// Minute 1 at e=0: prev 30 weighs 30; cost 31 needs weight <= 29,
		// from e = 60000 - floor(29×60000/30) = 2000 ms.
		{at: sec(15), cost: 31, want: deny(30, sec(60), sec(2))},
		{at: ms(16_999), cost: 31, want: deny(30, ms(58_001), ms(1))},
		// e=30000 ms: weight ceil(30×30000/60000) = 15; 15+45 = 60.
		{at: sec(45), cost: 45, want: ok(0, sec(90))},
	})
}

// Token bucket, 10 per second into a bucket of 20: one token every 100ms.
func testTokenBucketBurst(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 10, Window: time.Second, Burst: 20}
	for _, base := range unalignedBases {
		runTable(t, s, base, []floodgate.Limit{l}, []step{
			{at: 0, cost: 20, want: ok(0, sec(2))},
			{at: 0, cost: 1, want: deny(0, sec(2), ms(100))},
			// Half a token refilled.
			{at: ms(50), cost: 0, want: deny(0, ms(1950), ms(50))},
			{at: us(99_999), cost: 1, want: deny(0, us(1_900_001), us(1))},
			{at: ms(100), cost: 1, want: ok(0, sec(2))},
			// 10 tokens refilled in a second.
			{at: ms(1100), cost: 5, want: ok(5, ms(1500))},
			{at: ms(1100), cost: 6, want: deny(5, ms(1500), ms(100))},
			// 5.5 tokens: 5 whole.
			{at: ms(1150), cost: 6, want: deny(5, ms(1450), ms(50))},
			{at: sec(10), cost: 0, want: ok(20, 0)},
			{at: sec(10), cost: 21, want: deny(20, 0, floodgate.Never)},
			{at: sec(10), cost: 20, want: ok(0, sec(2))},
		})
	}
}

// Token bucket, 3 per second (burst 3): a token every 333,333.3µs, kept
// exact in units of 1/1,000,000 token.
func testTokenBucketThirds(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 3, Window: time.Second}
	for _, base := range unalignedBases {
		runTable(t, s, base, []floodgate.Limit{l}, []step{
			{at: 0, cost: 3, want: ok(0, sec(1))},
			{at: 0, cost: 1, want: deny(0, sec(1), us(333_334))},
			// 0.999999 token refilled: 1µs short.
			{at: us(333_333), cost: 1, want: deny(0, us(666_667), us(1))},
			// 1.000002 tokens: admitted, 0.000002 left; full again after
			// (3 - 0.000002) / 0.000003 = 999,999.33µs, rounded up.
			{at: us(333_334), cost: 1, want: ok(0, sec(1))},
			{at: us(1_333_334), cost: 0, want: ok(3, 0)},
		})
	}
}

// GCRA, 10 per second, burst 3: emission interval T = 100ms, tolerance
// τ = 3T = 300ms; admitted when max(TAT, now) + cost×T - now <= τ.
func testGCRABurst(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 10, Window: time.Second, Burst: 3}
	for _, base := range unalignedBases {
		runTable(t, s, base, []floodgate.Limit{l}, []step{
			{at: 0, cost: 1, want: ok(2, ms(100))},
			{at: 0, cost: 2, want: ok(0, ms(300))},
			{at: 0, cost: 1, want: deny(0, ms(300), ms(100))},
			{at: ms(50), cost: 0, want: deny(0, ms(250), ms(50))},
			{at: ms(100), cost: 1, want: ok(0, ms(300))},
			// TAT 400ms: 400+100-350 = 150 <= 300.
			{at: ms(350), cost: 1, want: ok(1, ms(150))},
			{at: ms(350), cost: 3, want: deny(1, ms(150), ms(150))},
			{at: ms(350), cost: 4, want: deny(1, ms(150), floodgate.Never)},
			{at: sec(2), cost: 3, want: ok(0, ms(300))},
		})
	}
}

// GCRA, 3 per second: T = ceil(1,000,000/3) = 333,334µs, τ = 1,000,002µs.
func testGCRARounded(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 3, Window: time.Second}
	for _, base := range unalignedBases {
		runTable(t, s, base, []floodgate.Limit{l}, []step{
			{at: 0, cost: 3, want: ok(0, us(1_000_002))},
			{at: us(333_333), cost: 1, want: deny(0, us(666_669), us(1))},
			{at: us(333_334), cost: 1, want: ok(0, us(1_000_002))},
			{at: us(2_000_000), cost: 0, want: ok(3, 0)},
		})
	}
}

// Sliding window log, 5 per second: the cost of events in (now-1s, now].
func testSlidingLog(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.SlidingWindowLog, Quota: 5, Window: time.Second}
	for _, base := range unalignedBases {
		runTable(t, s, base, []floodgate.Limit{l}, []step{
			{at: 0, cost: 2, want: ok(3, sec(1))},
			{at: ms(300), cost: 2, want: ok(1, sec(1))},
			// The event at 0 leaves the window at 1s.
			{at: ms(600), cost: 2, want: deny(1, ms(700), ms(400))},
			{at: us(999_999), cost: 1, want: ok(0, sec(1))},
			{at: sec(1), cost: 2, want: ok(0, sec(1))},
			{at: ms(1200), cost: 1, want: deny(0, ms(800), ms(100))},
			// At 1.3s the event at 0.3s has left: 3 in the window. Cost 3
			// waits for the event at 0.999999s to leave.
			{at: ms(1300), cost: 3, want: deny(2, ms(700), us(699_999))},
			{at: ms(1300), cost: 0, want: ok(2, ms(700))},
			{at: ms(1300), cost: 6, want: deny(2, ms(700), floodgate.Never)},
			{at: sec(5), cost: 0, want: ok(5, 0)},
		})
	}
}

// Concurrency, 3 units, leases live 10s unless renewed or released.
func testConcurrency(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.Concurrency, Quota: 3, Window: 10 * time.Second}
	for _, base := range unalignedBases {
		runTable(t, s, base, []floodgate.Limit{l}, []step{
			{at: 0, cost: 2, lease: "a", want: ok(1, sec(10))},
			{at: sec(1), cost: 1, lease: "b", want: ok(0, sec(10))},
			// Full: the first 2 units free up when "a" expires at 10s.
			{at: sec(2), cost: 1, lease: "c", want: deny(0, sec(9), sec(8))},
			// Renewing a held lease at full capacity: "a" now expires at 13s.
			{at: sec(3), cost: 1, lease: "a", want: ok(0, sec(10))},
			{at: sec(4), lease: "b", release: true, want: ok(1, sec(9))},
			{at: sec(4), lease: "b", release: true, want: deny(1, sec(9), 0)},
			{at: sec(5), cost: 2, lease: "c", want: deny(1, sec(8), sec(8))},
			{at: sec(5), cost: 4, lease: "c", want: deny(1, sec(8), floodgate.Never)},
			{at: sec(5), cost: 0, want: ok(1, sec(8))},
			// "a" expires at 13s: its units come back without a release.
			{at: us(12_999_999), cost: 3, lease: "c", want: deny(1, us(1), us(1))},
			{at: sec(13), cost: 3, lease: "c", want: ok(0, sec(10))},
			{at: sec(13), lease: "a", release: true, want: deny(0, sec(10), 0)},
			// An anonymous lease only expires.
			{at: sec(23), cost: 1, want: ok(2, sec(10))},
			// "c" expired at 23s: acquiring it again takes new units.
			{at: sec(23), cost: 1, lease: "c", want: ok(1, sec(10))},
			{at: sec(24), lease: "", release: true, want: deny(1, sec(9), 0)},
		})
	}
}

// Reset forgets a key's state under the limits it names, and nothing else:
// not the key's other limits, not another key's state. A store that cannot
// reset keys ([floodgate.ErrNoReset]) skips the case.
func testReset(t *testing.T, s floodgate.Store) {
	ctx := context.Background()
	limits := []floodgate.Limit{
		{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Minute},
		{Algorithm: floodgate.SlidingWindow, Quota: 2, Window: time.Minute},
		{Algorithm: floodgate.SlidingWindowLog, Quota: 2, Window: time.Minute},
		{Algorithm: floodgate.TokenBucket, Quota: 2, Window: time.Minute},
		{Algorithm: floodgate.GCRA, Quota: 2, Window: time.Minute},
		{Algorithm: floodgate.Concurrency, Quota: 2, Window: time.Minute},
	}
	key, other := uniqueKey(t, "reset"), uniqueKey(t, "reset-other")
	at := weekBase + 7_000_000
	decide := func(key string, l floodgate.Limit, at int64) floodgate.Result {
		t.Helper()
		ops := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{l}, Cost: 1, Now: at}}
		if err := s.Decide(ctx, ops); err != nil {
			t.Fatalf("%v: %v", l, err)
		}
		return ops[0].Result
	}
	for _, l := range limits {
		for _, k := range []string{key, other} {
			decide(k, l, at)
			decide(k, l, at)
			if r := decide(k, l, at); r.Allowed {
				t.Fatalf("%v: the third unit of 2 admitted", l)
			}
		}
	}
	// Reset key under every limit but the last.
	if err := floodgate.Reset(ctx, s, key, limits[:len(limits)-1]); err != nil {
		if errors.Is(err, floodgate.ErrNoReset) {
			t.Skip("the store cannot reset keys")
		}
		t.Fatal(err)
	}
	for i, l := range limits {
		r := decide(key, l, at+1)
		if reset := i < len(limits)-1; r.Allowed != reset {
			t.Errorf("%v after the reset: allowed %v, want %v", l, r.Allowed, reset)
		} else if reset && r.Remaining != 1 {
			t.Errorf("%v after the reset: %s, want a fresh state (remaining 1)", l, FormatResult(r))
		}
		if r := decide(other, l, at+1); r.Allowed {
			t.Errorf("%v: another key's state was reset: %s", l, FormatResult(r))
		}
	}
	// Resetting a key with no state is not an error; bad input is.
	if err := floodgate.Reset(ctx, s, uniqueKey(t, "reset-none"), limits); err != nil {
		t.Errorf("reset of a key with no state: %v", err)
	}
	if err := floodgate.Reset(ctx, s, "", limits); !errors.Is(err, floodgate.ErrInvalid) {
		t.Errorf("reset of an empty key: %v, want ErrInvalid", err)
	}
	if err := floodgate.Reset(ctx, s, key, []floodgate.Limit{{Algorithm: floodgate.FixedWindow}}); !errors.Is(err, floodgate.ErrInvalid) {
		t.Errorf("reset under an invalid limit: %v, want ErrInvalid", err)
	}
}

// A peek (cost 0) reports without consuming, for every algorithm.
func testPeek(t *testing.T, s floodgate.Store) {
	for _, l := range []floodgate.Limit{
		{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Second},
		{Algorithm: floodgate.SlidingWindow, Quota: 2, Window: time.Second},
		{Algorithm: floodgate.SlidingWindowLog, Quota: 2, Window: time.Second},
		{Algorithm: floodgate.TokenBucket, Quota: 2, Window: time.Second},
		{Algorithm: floodgate.GCRA, Quota: 2, Window: time.Second},
		{Algorithm: floodgate.Concurrency, Quota: 2, Window: time.Second},
	} {
		t.Run(l.Algorithm.String(), func(t *testing.T) {
			// Fresh: a peek is allowed and says 2 remain; three peeks in a
			// row leave the key untouched.
			steps := []step{
				{at: ms(100), cost: 0, want: ok(2, 0)},
				{at: ms(100), cost: 0, want: ok(2, 0)},
				{at: ms(100), cost: 0, want: ok(2, 0)},
			}
			// Then two single requests fill the limit, and a peek is denied.
			// The reset and retry instants differ by algorithm:
			switch l.Algorithm {
			case floodgate.FixedWindow:
				steps = append(steps,
					step{at: ms(100), cost: 1, want: ok(1, ms(900))},
					step{at: ms(100), cost: 0, want: ok(1, ms(900))},
					step{at: ms(100), cost: 1, want: ok(0, ms(900))},
					step{at: ms(100), cost: 0, want: deny(0, ms(900), ms(900))},
					step{at: ms(100), cost: 0, want: deny(0, ms(900), ms(900))},
				)
			case floodgate.SlidingWindow:
				// Current window [0,1s); the next one holds prev 2, which
				// weighs 1 from e = 1000 - floor(1×1000/2) = 500.
				steps = append(steps,
					step{at: ms(100), cost: 1, want: ok(1, ms(1900))},
					step{at: ms(100), cost: 0, want: ok(1, ms(1900))},
					step{at: ms(100), cost: 1, want: ok(0, ms(1900))},
					step{at: ms(100), cost: 0, want: deny(0, ms(1900), ms(1400))},
					step{at: ms(100), cost: 0, want: deny(0, ms(1900), ms(1400))},
				)
			case floodgate.SlidingWindowLog, floodgate.Concurrency:
				steps = append(steps,
					step{at: ms(100), cost: 1, want: ok(1, sec(1))},
					step{at: ms(100), cost: 0, want: ok(1, sec(1))},
					step{at: ms(100), cost: 1, want: ok(0, sec(1))},
					step{at: ms(100), cost: 0, want: deny(0, sec(1), sec(1))},
					step{at: ms(100), cost: 0, want: deny(0, sec(1), sec(1))},
				)
			case floodgate.TokenBucket, floodgate.GCRA:
				// A token (an emission interval) every 500ms.
				steps = append(steps,
					step{at: ms(100), cost: 1, want: ok(1, ms(500))},
					step{at: ms(100), cost: 0, want: ok(1, ms(500))},
					step{at: ms(100), cost: 1, want: ok(0, sec(1))},
					step{at: ms(100), cost: 0, want: deny(0, sec(1), ms(500))},
					step{at: ms(100), cost: 0, want: deny(0, sec(1), ms(500))},
				)
			}
			runTable(t, s, weekBase, []floodgate.Limit{l}, steps)
		})
	}
}

// A cost above the capacity is denied with RetryAfter Never, consumes
// nothing, and is not an error; MaxCost itself is valid.
func testCostAboveCapacity(t *testing.T, s floodgate.Store) {
	for _, l := range []floodgate.Limit{
		{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Second},
		{Algorithm: floodgate.SlidingWindow, Quota: 5, Window: time.Second},
		{Algorithm: floodgate.SlidingWindowLog, Quota: 5, Window: time.Second},
		{Algorithm: floodgate.TokenBucket, Quota: 2, Window: time.Second, Burst: 5},
		{Algorithm: floodgate.GCRA, Quota: 2, Window: time.Second, Burst: 5},
		{Algorithm: floodgate.Concurrency, Quota: 5, Window: time.Second},
	} {
		t.Run(l.Algorithm.String(), func(t *testing.T) {
			runTable(t, s, weekBase, []floodgate.Limit{l}, []step{
				{at: 0, cost: 6, want: deny(5, 0, floodgate.Never)},
				{at: 0, cost: floodgate.MaxCost, want: deny(5, 0, floodgate.Never)},
				{at: 0, cost: 0, want: ok(5, 0)},
			})
		})
	}
}

// 3 per second and 5 per day on one key: a denial by either consumes
// nothing from the other.
func testSeveralFixed(t *testing.T, s floodgate.Store) {
	perSec := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 3, Window: time.Second}
	perDay := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 5, Window: 24 * time.Hour}
	day := 24 * time.Hour
	runTable(t, s, weekBase, []floodgate.Limit{perSec, perDay}, []step{
		{at: 0, cost: 2, want: ok(1, sec(1)), by: 0,
			each: []want{ok(1, sec(1)), ok(3, day)}},
		// Denied by the second limit; the day limit would have admitted and
		// is reported as it stands, uncharged.
		{at: 0, cost: 2, want: deny(1, sec(1), sec(1)), by: 0,
			each: []want{deny(1, sec(1), sec(1)), ok(3, day)}},
		// 2+3 = 5 fits the day: the denial above took nothing. Both have 0
		// left; the longer reset (the day) decides.
		{at: sec(1), cost: 3, want: ok(0, day-sec(1)), by: 1,
			each: []want{ok(0, sec(1)), ok(0, day-sec(1))}},
		// The second limit would admit (a fresh window), the day denies.
		{at: sec(2), cost: 1, want: deny(0, day-sec(2), day-sec(2)), by: 1,
			each: []want{ok(3, 0), deny(0, day-sec(2), day-sec(2))}},
		{at: sec(2), cost: 0, want: deny(0, day-sec(2), day-sec(2)), by: 1,
			each: []want{ok(3, 0), deny(0, day-sec(2), day-sec(2))}},
		{at: day, cost: 3, want: ok(0, sec(1)), by: 0,
			each: []want{ok(0, sec(1)), ok(2, day)}},
	})
}

// A token bucket (10/s, burst 10) and a sliding log (2/s) on one key.
func testSeveralMixed(t *testing.T, s floodgate.Store) {
	bucket := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 10, Window: time.Second}
	log := floodgate.Limit{Algorithm: floodgate.SlidingWindowLog, Quota: 2, Window: time.Second}
	for _, base := range unalignedBases {
		runTable(t, s, base, []floodgate.Limit{bucket, log}, []step{
			{at: 0, cost: 2, want: ok(0, sec(1)), by: 1,
				each: []want{ok(8, ms(200)), ok(0, sec(1))}},
			// The log denies; the bucket (9 tokens) is not charged.
			{at: ms(100), cost: 1, want: deny(0, ms(900), ms(900)), by: 1,
				each: []want{ok(9, ms(100)), deny(0, ms(900), ms(900))}},
			// 9.5 tokens: had the denial above taken one, 8.5.
			{at: ms(150), cost: 0, want: deny(0, ms(850), ms(850)), by: 1,
				each: []want{ok(9, ms(50)), deny(0, ms(850), ms(850))}},
			// Above the log's capacity: never, and the bucket is untouched.
			{at: sec(1), cost: 10, want: deny(2, 0, floodgate.Never), by: 1,
				each: []want{ok(10, 0), deny(2, 0, floodgate.Never)}},
			{at: sec(1), cost: 2, want: ok(0, sec(1)), by: 1,
				each: []want{ok(8, ms(200)), ok(0, sec(1))}},
		})
	}
}

// Op.Each is filled only when it has one element per limit.
func testEachLength(t *testing.T, s floodgate.Store) {
	a := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 3, Window: time.Second}
	b := floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 4, Window: time.Second}
	key := uniqueKey(t, "each")
	sentinel := floodgate.Result{Remaining: -42}
	ops := []floodgate.Op{
		{Key: key, Limits: []floodgate.Limit{a, b}, Cost: 1, Now: weekBase, Each: []floodgate.Result{sentinel}},
		{Key: key, Limits: []floodgate.Limit{a, b}, Cost: 1, Now: weekBase, Each: []floodgate.Result{sentinel, sentinel}},
	}
	if err := s.Decide(context.Background(), ops); err != nil {
		t.Fatalf("Decide: %v", err)
	}
	if ops[0].Each[0] != sentinel {
		t.Errorf("Each of length 1 for 2 limits was written: %s", FormatResult(ops[0].Each[0]))
	}
	// Fixed window: 1 left of 3, reset 1s. GCRA: T = 250ms, τ = 1s; TAT is
	// 500ms ahead, so (1000-500)/250 = 2 left, reset 500ms.
	checkResult(t, "first op", ops[0].Result, ok(2, sec(1)), a)
	checkResult(t, "second op", ops[1].Result, ok(1, sec(1)), a)
	checkResult(t, "second op, limit 0", ops[1].Each[0], ok(1, sec(1)), a)
	checkResult(t, "second op, limit 1", ops[1].Each[1], ok(2, ms(500)), b)
}

// Keys are independent.
func testSeparateKeys(t *testing.T, s floodgate.Store) {
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Minute}
	k1, k2 := uniqueKey(t, "a"), uniqueKey(t, "b")
	ops := []floodgate.Op{
		{Key: k1, Limits: []floodgate.Limit{l}, Cost: 1, Now: weekBase},
		{Key: k2, Limits: []floodgate.Limit{l}, Cost: 1, Now: weekBase},
		{Key: k1, Limits: []floodgate.Limit{l}, Cost: 1, Now: weekBase},
		{Key: k2, Limits: []floodgate.Limit{l}, Cost: 0, Now: weekBase},
		{Key: k1 + "x", Limits: []floodgate.Limit{l}, Cost: 1, Now: weekBase},
	}
	if err := s.Decide(context.Background(), ops); err != nil {
		t.Fatalf("Decide: %v", err)
	}
	checkResult(t, "key 1", ops[0].Result, ok(0, time.Minute), l)
	checkResult(t, "key 2", ops[1].Result, ok(0, time.Minute), l)
	checkResult(t, "key 1 again", ops[2].Result, deny(0, time.Minute, time.Minute), l)
	checkResult(t, "key 2 peek", ops[3].Result, deny(0, time.Minute, time.Minute), l)
	checkResult(t, "key 1 with a suffix", ops[4].Result, ok(0, time.Minute), l)
}

// Invalid ops get an error wrapping ErrInvalid; the valid ops of the same
// batch are still decided, in order.
func testInvalidOps(t *testing.T, s floodgate.Store) {
	good := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Second}
	key := uniqueKey(t, "invalid")
	limits := []floodgate.Limit{good}
	maxKey := strings.Repeat("k", floodgate.MaxKeyLen-len(key)) + key
	bad := []struct {
		name string
		op   floodgate.Op
	}{
		{"empty key", floodgate.Op{Key: "", Limits: limits, Cost: 1}},
		{"huge key", floodgate.Op{Key: strings.Repeat("k", floodgate.MaxKeyLen+1), Limits: limits, Cost: 1}},
		{"negative cost", floodgate.Op{Key: key, Limits: limits, Cost: -1}},
		{"huge cost", floodgate.Op{Key: key, Limits: limits, Cost: floodgate.MaxCost + 1}},
		{"instant before 1970", floodgate.Op{Key: key, Limits: limits, Cost: 1, Now: -1500}},
		{"no limits", floodgate.Op{Key: key, Cost: 1}},
		{"zero limit", floodgate.Op{Key: key, Limits: []floodgate.Limit{{}}, Cost: 1}},
		{"zero quota", floodgate.Op{Key: key, Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Window: time.Second}}, Cost: 1}},
		{"window not in ms", floodgate.Op{Key: key, Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: 1500 * time.Microsecond}}, Cost: 1}},
		{"burst on a fixed window", floodgate.Op{Key: key, Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second, Burst: 2}}, Cost: 1}},
		{"one bad limit of two", floodgate.Op{Key: key, Limits: []floodgate.Limit{good, {Algorithm: floodgate.TokenBucket, Quota: -1, Window: time.Second}}, Cost: 1}},
	}
	var ops []floodgate.Op
	ops = append(ops, floodgate.Op{Key: key, Limits: limits, Cost: 1})
	for _, b := range bad {
		ops = append(ops, b.op)
	}
	ops = append(ops,
		floodgate.Op{Key: key, Limits: limits, Cost: 1},
		floodgate.Op{Key: key, Limits: limits, Cost: 1},
		floodgate.Op{Key: maxKey, Limits: limits, Cost: 2},
	)
	for i := range ops {
		if ops[i].Now == 0 {
			ops[i].Now = weekBase
		}
	}
	err := s.Decide(context.Background(), ops)
	if !errors.Is(err, floodgate.ErrInvalid) {
		t.Errorf("Decide returned %v, want the first op error, wrapping ErrInvalid", err)
	}
	for i, b := range bad {
		op := ops[i+1]
		if !errors.Is(op.Err, floodgate.ErrInvalid) {
			t.Errorf("%s: op error %v, want one wrapping ErrInvalid", b.name, op.Err)
		} else if op.Err.Error() == floodgate.ErrInvalid.Error() {
			t.Errorf("%s: op error %q says nothing about what is wrong", b.name, op.Err)
		}
	}
	n := len(ops)
	for _, i := range []int{0, n - 3, n - 2, n - 1} {
		if ops[i].Err != nil {
			t.Fatalf("valid op %d: error %v", i, ops[i].Err)
		}
	}
	checkResult(t, "first valid op", ops[0].Result, ok(1, sec(1)), good)
	checkResult(t, "second valid op", ops[n-3].Result, ok(0, sec(1)), good)
	checkResult(t, "third valid op", ops[n-2].Result, deny(0, sec(1), sec(1)), good)
	checkResult(t, "key of MaxKeyLen bytes", ops[n-1].Result, ok(0, sec(1)), good)

	// A batch of valid ops returns nil.
	valid := []floodgate.Op{{Key: key + ":ok", Limits: limits, Cost: 1, Now: weekBase}}
	if err := s.Decide(context.Background(), valid); err != nil || valid[0].Err != nil {
		t.Errorf("valid batch: Decide %v, op error %v", err, valid[0].Err)
	}
}

// A batch of ops on several keys and algorithms is decided in order, each op
// seeing the ones before it.
func testBatchInOrder(t *testing.T, s floodgate.Store) {
	fixed := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Second}}
	bucket := []floodgate.Limit{{Algorithm: floodgate.TokenBucket, Quota: 4, Window: time.Second, Burst: 2}}
	log := []floodgate.Limit{{Algorithm: floodgate.SlidingWindowLog, Quota: 3, Window: time.Second}}
	leases := []floodgate.Limit{{Algorithm: floodgate.Concurrency, Quota: 1, Window: time.Second}}
	a, b, c, d := uniqueKey(t, "a"), uniqueKey(t, "b"), uniqueKey(t, "c"), uniqueKey(t, "d")
	now := weekBase + 500_000
	ops := []floodgate.Op{
		{Key: a, Limits: fixed, Cost: 1},
		{Key: b, Limits: bucket, Cost: 1},
		{Key: a, Limits: fixed, Cost: 1},
		{Key: c, Limits: log, Cost: 2},
		{Key: a, Limits: fixed, Cost: 1},
		{Key: b, Limits: bucket, Cost: 1},
		{Key: b, Limits: bucket, Cost: 1},
		{Key: c, Limits: log, Cost: 0},
		{Key: d, Limits: leases, Cost: 1, Lease: "x"},
		{Key: d, Limits: leases, Cost: 1, Lease: "y"},
		{Key: d, Limits: leases, Lease: "x", Release: true},
		{Key: d, Limits: leases, Cost: 1, Lease: "y"},
	}
	for i := range ops {
		ops[i].Now = now
	}
	if err := s.Decide(context.Background(), ops); err != nil {
		t.Fatalf("Decide: %v", err)
	}
	wants := []struct {
		w want
		l floodgate.Limit
	}{
		{ok(1, ms(500)), fixed[0]},
		{ok(1, ms(250)), bucket[0]}, // a token every 250ms
		{ok(0, ms(500)), fixed[0]},
		{ok(1, sec(1)), log[0]},
		{deny(0, ms(500), ms(500)), fixed[0]},
		{ok(0, ms(500)), bucket[0]},
		{deny(0, ms(500), ms(250)), bucket[0]},
		{ok(1, sec(1)), log[0]},
		{ok(0, sec(1)), leases[0]},
		{deny(0, sec(1), sec(1)), leases[0]},
		{ok(1, 0), leases[0]},
		{ok(0, sec(1)), leases[0]},
	}
	for i, w := range wants {
		if ops[i].Err != nil {
			t.Errorf("op %d: %v", i, ops[i].Err)
			continue
		}
		checkResult(t, fmt.Sprintf("op %d", i), ops[i].Result, w.w, w.l)
	}
}

// Many goroutines on one key, at one instant, admit exactly the quota.
func testConcurrentExact(t *testing.T, s floodgate.Store) {
	const (
		quota      = 60
		goroutines = 8
		perG       = 15 // 120 attempts for 60 units
	)
	for _, a := range floodgate.Algorithms {
		l := floodgate.Limit{Algorithm: a, Quota: quota, Window: time.Minute}
		key := uniqueKey(t, "concurrent:"+a.String())
		var mu sync.Mutex
		var allowed int
		var firstErr error
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perG {
					// Batches of 1 and of 2, to mix single and batched calls.
					n := 1 + (g+i)%2
					ops := make([]floodgate.Op, n)
					for j := range ops {
						ops[j] = floodgate.Op{Key: key, Limits: []floodgate.Limit{l}, Cost: 1, Now: weekBase + 1_000_000}
					}
					err := s.Decide(context.Background(), ops)
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					for _, op := range ops {
						if op.Err == nil && op.Result.Allowed {
							allowed++
						}
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			t.Fatalf("%v: Decide: %v", a, firstErr)
		}
		if allowed != quota {
			t.Errorf("%v: %d goroutines admitted %d, want exactly %d", a, goroutines, allowed, quota)
		}
	}
}

// A closed store answers ErrClosed.
func testClose(t *testing.T, s floodgate.Store) {
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ops := []floodgate.Op{{Key: uniqueKey(t, "closed"), Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second}}, Cost: 1, Now: weekBase}}
	if err := s.Decide(context.Background(), ops); !errors.Is(err, floodgate.ErrClosed) {
		t.Errorf("Decide after Close returned %v, want ErrClosed", err)
	}
}
