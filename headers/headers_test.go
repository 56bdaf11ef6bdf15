package headers_test

import (
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/headers"
)

var (
	perSecond = floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Second}
	perDay    = floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: 1000, Window: 24 * time.Hour}
	bucket    = floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 100, Window: time.Minute, Burst: 20}
	odd       = floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 5, Window: 1500 * time.Millisecond}
	inFlight  = floodgate.Limit{Algorithm: floodgate.Concurrency, Quota: 4, Window: 30 * time.Second}
)

func allowed(l floodgate.Limit, remaining int64, reset time.Duration) floodgate.Result {
	return floodgate.Result{Allowed: true, Limit: l, Remaining: remaining, ResetAfter: reset}
}

func denied(l floodgate.Limit, reset, retry time.Duration) floodgate.Result {
	return floodgate.Result{Limit: l, ResetAfter: reset, RetryAfter: retry}
}

// The field values, byte for byte, against the grammar of
// draft-ietf-httpapi-ratelimit-headers-10: a List of sf-string items with
// Integer parameters, members separated by ", " as RFC 8941 serializes.
func TestValues(t *testing.T) {
	for _, tc := range []struct {
		name           string
		policies       []headers.Policy
		policy, limit  string
		retry          string // "" for none
		xl, xr, xreset string
	}{{
		name:     "one policy, allowed",
		policies: []headers.Policy{{Name: "default", Result: allowed(perSecond, 7, 300*time.Millisecond)}},
		policy:   `"default";q=10;w=1`,
		limit:    `"default";r=7;t=1`,
		xl:       "10", xr: "7", xreset: "1",
	}, {
		name:     "derived name; reset rounded up",
		policies: []headers.Policy{{Result: allowed(perDay, 999, 1200*time.Millisecond)}},
		policy:   `"1000-per-86400s";q=1000;w=86400`,
		limit:    `"1000-per-86400s";r=999;t=2`,
		xl:       "1000", xr: "999", xreset: "2",
	}, {
		name: "two policies, one denied: t is the retry, Retry-After rounded up",
		policies: []headers.Policy{
			{Name: "burst", Result: denied(perSecond, 1200*time.Millisecond, 1200*time.Millisecond)},
			{Name: "daily", Result: allowed(perDay, 500, 10*time.Hour)},
		},
		policy: `"burst";q=10;w=1, "daily";q=1000;w=86400`,
		limit:  `"burst";r=0;t=2, "daily";r=500;t=36000`,
		retry:  "2",
		xl:     "10", xr: "0", xreset: "2",
	}, {
		name: "token bucket denied: t is the retry, not the refill to full",
		policies: []headers.Policy{
			{Name: "b", Result: denied(bucket, 12*time.Second, 600*time.Millisecond)},
		},
		policy: `"b";q=100;w=60`,
		limit:  `"b";r=0;t=1`,
		retry:  "1",
		xl:     "100", xr: "0", xreset: "1",
	}, {
		name: "both denied: the longest wait decides",
		policies: []headers.Policy{
			{Name: "a", Result: denied(perSecond, time.Second, 1000*time.Millisecond)},
			{Name: "b", Result: denied(perDay, time.Hour, 3599001*time.Millisecond)},
		},
		policy: `"a";q=10;w=1, "b";q=1000;w=86400`,
		limit:  `"a";r=0;t=1, "b";r=0;t=3600`,
		retry:  "3600",
		xl:     "1000", xr: "0", xreset: "3600",
	}, {
		name: "all allowed: the fewest remaining decides",
		policies: []headers.Policy{
			{Name: "a", Result: allowed(perDay, 3, time.Hour)},
			{Name: "b", Result: allowed(perSecond, 2, 0)},
			{Name: "c", Result: allowed(bucket, 2, 5*time.Second)},
		},
		policy: `"a";q=1000;w=86400, "b";q=10;w=1, "c";q=100;w=60`,
		limit:  `"a";r=3;t=3600, "b";r=2;t=0, "c";r=2;t=5`,
		xl:     "100", xr: "2", xreset: "5",
	}, {
		name:     "sub-second window: no w",
		policies: []headers.Policy{{Result: allowed(odd, 4, 300*time.Millisecond)}},
		policy:   `"5-per-1500ms";q=5`,
		limit:    `"5-per-1500ms";r=4;t=1`,
		xl:       "5", xr: "4", xreset: "1",
	}, {
		name:     "concurrency: quota unit, no window",
		policies: []headers.Policy{{Result: allowed(inFlight, 3, 30*time.Second)}},
		policy:   `"4-concurrent";q=4;qu="concurrent-requests"`,
		limit:    `"4-concurrent";r=3;t=30`,
		xl:       "4", xr: "3", xreset: "30",
	}, {
		name:     "never: no Retry-After, t is the reset",
		policies: []headers.Policy{{Name: "n", Result: denied(perSecond, 400*time.Millisecond, floodgate.Never)}},
		policy:   `"n";q=10;w=1`,
		limit:    `"n";r=0;t=1`,
		xl:       "10", xr: "0", xreset: "1",
	}, {
		name:     "names escaped as sf-strings",
		policies: []headers.Policy{{Name: "a\"b\\c\xffd\n", Result: allowed(perSecond, 1, time.Second)}},
		policy:   `"a\"b\\c?d?";q=10;w=1`,
		limit:    `"a\"b\\c?d?";r=1;t=1`,
		xl:       "10", xr: "1", xreset: "1",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			headers.Set(h, headers.Draft|headers.RetryAfter|headers.Legacy, tc.policies...)
			want := http.Header{
				"Ratelimit-Policy":      {tc.policy},
				"Ratelimit":             {tc.limit},
				"X-Ratelimit-Limit":     {tc.xl},
				"X-Ratelimit-Remaining": {tc.xr},
				"X-Ratelimit-Reset":     {tc.xreset},
			}
			if tc.retry != "" {
				want["Retry-After"] = []string{tc.retry}
			}
			if !reflect.DeepEqual(h, want) {
				t.Errorf("Set:\n got %q\nwant %q", h, want)
			}
			if got := string(headers.AppendPolicy(nil, tc.policies...)); got != tc.policy {
				t.Errorf("AppendPolicy = %s, want %s", got, tc.policy)
			}
			if got := string(headers.AppendRateLimit(nil, tc.policies...)); got != tc.limit {
				t.Errorf("AppendRateLimit = %s, want %s", got, tc.limit)
			}
			fields := headers.Append(nil, headers.Default, tc.policies...)
			wantFields := []headers.Field{{"RateLimit-Policy", tc.policy}, {"RateLimit", tc.limit}}
			if tc.retry != "" {
				wantFields = append(wantFields, headers.Field{Name: "Retry-After", Value: tc.retry})
			}
			if !reflect.DeepEqual(fields, wantFields) {
				t.Errorf("Append:\n got %q\nwant %q", fields, wantFields)
			}
		})
	}
}

func TestSetReplacesAndSelects(t *testing.T) {
	h := http.Header{"Ratelimit": {"stale"}, "Retry-After": {"99"}, "X-Other": {"kept"}}
	p := headers.Policy{Name: "p", Result: allowed(perSecond, 9, time.Second)}
	headers.Set(h, headers.Default, p)
	want := http.Header{
		"Ratelimit-Policy": {`"p";q=10;w=1`},
		"Ratelimit":        {`"p";r=9;t=1`},
		"Retry-After":      {"99"}, // an allowed decision writes no Retry-After
		"X-Other":          {"kept"},
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got %q\nwant %q", h, want)
	}

	h = http.Header{}
	headers.Set(h, headers.RetryAfter, headers.Policy{Result: denied(perSecond, time.Second, time.Nanosecond)})
	if !reflect.DeepEqual(h, http.Header{"Retry-After": {"1"}}) {
		t.Errorf("RetryAfter only: got %q", h)
	}
	h = http.Header{}
	headers.Set(h, headers.Default)
	headers.Set(h, 0, p)
	if len(h) != 0 {
		t.Errorf("no policies or no fields: got %q, want nothing", h)
	}
}

func TestSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{-time.Second, 0}, {0, 0}, {time.Nanosecond, 1}, {time.Second, 1}, {1200 * time.Millisecond, 2},
		{1999 * time.Millisecond, 2}, {2 * time.Second, 2}, {floodgate.MaxWindow, 31622400}, {floodgate.Never, 9223372037},
	} {
		if got := headers.Seconds(tc.d); got != tc.want {
			t.Errorf("Seconds(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
	if got := string(headers.AppendRateLimit(nil, headers.Policy{Name: "x", Result: floodgate.Result{Allowed: true, Remaining: 1 << 62}})); got != `"x";r=999999999999999;t=0` {
		t.Errorf("huge remaining: %s, want it clamped to the largest sf-integer", got)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	if _, ok := headers.RetryAfterSeconds(); ok {
		t.Error("no policies: ok")
	}
	if _, ok := headers.RetryAfterSeconds(headers.Policy{Result: allowed(perSecond, 1, time.Second)}); ok {
		t.Error("allowed: ok")
	}
	s, ok := headers.RetryAfterSeconds(
		headers.Policy{Result: denied(perSecond, time.Second, 200*time.Millisecond)},
		headers.Policy{Result: denied(perDay, time.Second, 2001*time.Millisecond)},
		headers.Policy{Result: allowed(bucket, 3, time.Second)})
	if !ok || s != 3 {
		t.Errorf("RetryAfterSeconds = %d, %v; want 3, true", s, ok)
	}
	if _, ok := headers.RetryAfterSeconds(
		headers.Policy{Result: denied(perSecond, time.Second, time.Second)},
		headers.Policy{Result: denied(perDay, time.Second, floodgate.Never)}); ok {
		t.Error("a Never denial: ok, want no Retry-After")
	}
}

func TestSetAllocations(t *testing.T) {
	ps := []headers.Policy{
		{Name: "burst", Result: denied(perSecond, 1200*time.Millisecond, 1200*time.Millisecond)},
		{Name: "daily", Result: allowed(perDay, 500, 10*time.Hour)},
	}
	h := make(http.Header, 8)
	allocs := testing.AllocsPerRun(100, func() { headers.Set(h, headers.Default|headers.Legacy, ps...) })
	// One string for every value and one slice for every field's []string.
	if allocs > 2 {
		t.Errorf("Set: %v allocations, want at most 2", allocs)
	}
}

func BenchmarkSet(b *testing.B) {
	ps := []headers.Policy{
		{Name: "burst", Result: allowed(perSecond, 7, 300*time.Millisecond)},
		{Name: "daily", Result: allowed(perDay, 500, 10*time.Hour)},
	}
	h := make(http.Header, 8)
	b.ReportAllocs()
	for b.Loop() {
		headers.Set(h, headers.Default, ps...)
	}
}
