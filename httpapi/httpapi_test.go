package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/httpapi"
	"github.com/floodgate/floodgate/store/memory"
)

// fixedClock wraps a store and decides every op at one instant, so that
// results do not depend on when the test runs.
type fixedClock struct {
	floodgate.Store
	now int64
}

func (s fixedClock) Decide(ctx context.Context, ops []floodgate.Op) error {
	for i := range ops {
		ops[i].Now = s.now
	}
	return s.Store.Decide(ctx, ops)
}

// failing is a store that cannot decide.
type failing struct{}

func (failing) Decide(ctx context.Context, ops []floodgate.Op) error {
	err := errors.New("connection refused")
	for i := range ops {
		ops[i].Err = err
	}
	return err
}
func (failing) Close() error { return nil }

// t0 is 12:00:15 UTC on some day: 15 s into a minute.
var t0 = time.Date(2025, 3, 1, 12, 0, 15, 0, time.UTC).UnixMicro()

func newHandler(t *testing.T) *httpapi.Handler {
	t.Helper()
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	return httpapi.New(fixedClock{Store: st, now: t0}, nil)
}

func do(t *testing.T, h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %T: %v", v, err)
	}
	return v
}

const fixed3 = `{"algorithm":"fixed_window","quota":3,"window":"1m"}`

func TestCheckAllowedThenDenied(t *testing.T) {
	h := newHandler(t)
	body := `{"key":"user:42","limit":` + fixed3 + `}`
	for i := 1; i <= 3; i++ {
		rec := do(t, h, "POST", "/v1/check", body)
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d, want 200: %s", i, rec.Code, rec.Body)
		}
		got := decode[httpapi.CheckResponse](t, rec)
		want := httpapi.CheckResponse{Allowed: true, Limit: 3, Remaining: int64(3 - i), ResetAfter: "45s", ResetAfterMS: 45000,
			RetryAfter: "0s", RetryAfterMS: 0, Window: "1m", Algorithm: "fixed_window"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("request %d:\n got %+v\nwant %+v", i, got, want)
		}
		if ra := rec.Header().Get("Retry-After"); ra != "" {
			t.Errorf("request %d: Retry-After %q on an allowed answer", i, ra)
		}
	}
	rec := do(t, h, "POST", "/v1/check", body)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("4th request: status %d, want 429: %s", rec.Code, rec.Body)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "45" {
		t.Errorf("Retry-After = %q, want 45", ra)
	}
	got := decode[httpapi.CheckResponse](t, rec)
	want := httpapi.CheckResponse{Allowed: false, Limit: 3, Remaining: 0, ResetAfter: "45s", ResetAfterMS: 45000,
		RetryAfter: "45s", RetryAfterMS: 45000, Window: "1m", Algorithm: "fixed_window"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("4th request:\n got %+v\nwant %+v", got, want)
	}
	// Another key is counted apart.
	if rec := do(t, h, "POST", "/v1/check", `{"key":"user:43","limit":`+fixed3+`}`); rec.Code != http.StatusOK {
		t.Errorf("other key: status %d, want 200", rec.Code)
	}
}

func TestCheckRetryAfterRoundsUp(t *testing.T) {
	// Token bucket 100/1m, burst 20: one token every 600ms. After 20 requests
	// the 21st waits 600ms: Retry-After rounds up to 1 second.
	h := newHandler(t)
	body := `{"key":"k","limit":{"algorithm":"token_bucket","quota":100,"window":"1m","burst":20}}`
	for i := 0; i < 20; i++ {
		if rec := do(t, h, "POST", "/v1/check", body); rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i+1, rec.Code, rec.Body)
		}
	}
	rec := do(t, h, "POST", "/v1/check", body)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("21st: status %d, want 429: %s", rec.Code, rec.Body)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
	got := decode[httpapi.CheckResponse](t, rec)
	if got.RetryAfter != "600ms" || got.RetryAfterMS != 600 || got.Burst != 20 || got.Limit != 100 || got.Algorithm != "token_bucket" {
		t.Errorf("21st: %+v, want retry_after 600ms (600), burst 20, limit 100", got)
	}
}

func TestCheckNever(t *testing.T) {
	h := newHandler(t)
	rec := do(t, h, "POST", "/v1/check", `{"key":"k","cost":4,"limit":`+fixed3+`}`)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429: %s", rec.Code, rec.Body)
	}
	if ra, ok := rec.Header()["Retry-After"]; ok {
		t.Errorf("Retry-After %q on a request that can never pass", ra)
	}
	got := decode[httpapi.CheckResponse](t, rec)
	if got.Allowed || got.RetryAfter != "never" || got.RetryAfterMS != -1 {
		t.Errorf("got %+v, want retry_after never, retry_after_ms -1", got)
	}
	// Nothing was consumed.
	if rec := do(t, h, "POST", "/v1/check", `{"key":"k","cost":3,"limit":`+fixed3+`}`); rec.Code != http.StatusOK {
		t.Errorf("cost 3 after the denied cost 4: status %d, want 200: %s", rec.Code, rec.Body)
	}
}

func TestCheckCostDefaultsAndPeek(t *testing.T) {
	h := newHandler(t)
	peek := decode[httpapi.CheckResponse](t, do(t, h, "POST", "/v1/check", `{"key":"k","cost":0,"limit":`+fixed3+`}`))
	if !peek.Allowed || peek.Remaining != 3 {
		t.Errorf("peek: %+v, want allowed with 3 remaining", peek)
	}
	one := decode[httpapi.CheckResponse](t, do(t, h, "POST", "/v1/check", `{"key":"k","limit":`+fixed3+`}`))
	if one.Remaining != 2 {
		t.Errorf("absent cost: remaining %d, want 2 (cost 1)", one.Remaining)
	}
	two := decode[httpapi.CheckResponse](t, do(t, h, "POST", "/v1/check", `{"key":"k","cost":2,"limit":`+fixed3+`}`))
	if two.Remaining != 0 || !two.Allowed {
		t.Errorf("cost 2: %+v, want allowed with 0 remaining", two)
	}
}

func TestCheckSeveralLimits(t *testing.T) {
	h := newHandler(t)
	body := `{"key":"k","limits":[{"algorithm":"fixed_window","quota":2,"window":"1s"},{"algorithm":"fixed_window","quota":10,"window":"24h"}]}`
	for i := 0; i < 2; i++ {
		rec := do(t, h, "POST", "/v1/check", body)
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i+1, rec.Code, rec.Body)
		}
		got := decode[httpapi.CheckResponse](t, rec)
		if len(got.Limits) != 2 || got.Limits[0].Window != "1s" || got.Limits[1].Window != "24h" {
			t.Fatalf("request %d: limits %+v, want one result per limit in order", i+1, got.Limits)
		}
	}
	rec := do(t, h, "POST", "/v1/check", body)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("3rd: status %d, want 429", rec.Code)
	}
	got := decode[httpapi.CheckResponse](t, rec)
	if got.Window != "1s" || got.Limit != 2 {
		t.Errorf("3rd: deciding limit %d/%s, want 2/1s", got.Limit, got.Window)
	}
	// The denial consumed nothing from the daily limit: 8 of 10 remain.
	if got.Limits[1].Remaining != 8 {
		t.Errorf("3rd: daily remaining %d, want 8", got.Limits[1].Remaining)
	}
}

func TestCheckConcurrencyLease(t *testing.T) {
	h := newHandler(t)
	lim := `{"algorithm":"concurrency","quota":1,"window":"30s"}`
	if rec := do(t, h, "POST", "/v1/check", `{"key":"k","lease":"a","limit":`+lim+`}`); rec.Code != http.StatusOK {
		t.Fatalf("acquire a: status %d: %s", rec.Code, rec.Body)
	}
	if rec := do(t, h, "POST", "/v1/check", `{"key":"k","lease":"b","limit":`+lim+`}`); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("acquire b while a is held: status %d, want 429: %s", rec.Code, rec.Body)
	}
	if rec := do(t, h, "POST", "/v1/check", `{"key":"k","lease":"a","release":true,"limit":`+lim+`}`); rec.Code != http.StatusOK {
		t.Fatalf("release a: status %d: %s", rec.Code, rec.Body)
	}
	if rec := do(t, h, "POST", "/v1/check", `{"key":"k","lease":"b","limit":`+lim+`}`); rec.Code != http.StatusOK {
		t.Fatalf("acquire b after release: status %d, want 200: %s", rec.Code, rec.Body)
	}
	// Releasing a lease that is not held is answered 200, allowed false.
	rec := do(t, h, "POST", "/v1/check", `{"key":"k","lease":"a","release":true,"limit":`+lim+`}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("release a again: status %d, want 200: %s", rec.Code, rec.Body)
	}
	if got := decode[httpapi.CheckResponse](t, rec); got.Allowed {
		t.Errorf("release a again: allowed, want false (not held)")
	}
}

func TestCheckBadRequests(t *testing.T) {
	h := newHandler(t)
	long := strings.Repeat("x", floodgate.MaxKeyLen+1)
	tests := []struct {
		name, body, field string
	}{
		{"empty body", ``, ""},
		{"malformed JSON", `{"key":`, ""},
		{"syntax error", `{"key" "k"}`, ""},
		{"not an object", `[1,2]`, ""},
		{"trailing data", `{"key":"k","limit":` + fixed3 + `} {}`, ""},
		{"unknown field", `{"key":"k","limit":` + fixed3 + `,"tenant":"x"}`, "tenant"},
		{"unknown limit field", `{"key":"k","limit":{"algorithm":"gcra","quota":1,"window":"1s","rate":2}}`, "limit.rate"},
		{"missing key", `{"limit":` + fixed3 + `}`, "key"},
		{"empty key", `{"key":"","limit":` + fixed3 + `}`, "key"},
		{"long key", `{"key":"` + long + `","limit":` + fixed3 + `}`, "key"},
		{"key not a string", `{"key":42,"limit":` + fixed3 + `}`, "key"},
		{"negative cost", `{"key":"k","cost":-1,"limit":` + fixed3 + `}`, "cost"},
		{"huge cost", `{"key":"k","cost":1099511627777,"limit":` + fixed3 + `}`, "cost"},
		{"fractional cost", `{"key":"k","cost":1.5,"limit":` + fixed3 + `}`, "cost"},
		{"cost as string", `{"key":"k","cost":"1","limit":` + fixed3 + `}`, "cost"},
		{"no limit", `{"key":"k"}`, "limit"},
		{"limit not an object", `{"key":"k","limit":"100/m"}`, "limit"},
		{"limit and limits", `{"key":"k","limit":` + fixed3 + `,"limits":[` + fixed3 + `]}`, "limits"},
		{"empty limits", `{"key":"k","limits":[]}`, "limits"},
		{"missing algorithm", `{"key":"k","limit":{"quota":3,"window":"1m"}}`, "limit.algorithm"},
		{"unknown algorithm", `{"key":"k","limit":{"algorithm":"leaky","quota":3,"window":"1m"}}`, "limit.algorithm"},
		{"zero quota", `{"key":"k","limit":{"algorithm":"gcra","quota":0,"window":"1m"}}`, "limit.quota"},
		{"negative quota", `{"key":"k","limit":{"algorithm":"gcra","quota":-5,"window":"1m"}}`, "limit.quota"},
		{"huge quota", `{"key":"k","limit":{"algorithm":"gcra","quota":1e300,"window":"1m"}}`, "limit.quota"},
		{"missing window", `{"key":"k","limit":{"algorithm":"gcra","quota":3}}`, "limit.window"},
		{"bad window", `{"key":"k","limit":{"algorithm":"gcra","quota":3,"window":"1 minute"}}`, "limit.window"},
		{"window as number", `{"key":"k","limit":{"algorithm":"gcra","quota":3,"window":60}}`, "limit.window"},
		{"negative window", `{"key":"k","limit":{"algorithm":"gcra","quota":3,"window":"-1s"}}`, "limit.window"},
		{"sub-millisecond window", `{"key":"k","limit":{"algorithm":"gcra","quota":3,"window":"1500us"}}`, "limit.window"},
		{"window over a year", `{"key":"k","limit":{"algorithm":"gcra","quota":3,"window":"9000h"}}`, "limit.window"},
		{"negative burst", `{"key":"k","limit":{"algorithm":"token_bucket","quota":3,"window":"1s","burst":-1}}`, "limit.burst"},
		{"burst on fixed window", `{"key":"k","limit":{"algorithm":"fixed_window","quota":3,"window":"1s","burst":5}}`, "limit.burst"},
		{"bad second limit", `{"key":"k","limits":[` + fixed3 + `,{"algorithm":"gcra","quota":3,"window":"soon"}]}`, "limits[1].window"},
		{"unknown field in second limit", `{"key":"k","limits":[` + fixed3 + `,{"algo":"gcra"}]}`, "limits[1].algo"},
		{"quota times window too large", `{"key":"k","limit":{"algorithm":"sliding_window","quota":1099511627776,"window":"8760h"}}`, "limit"},
		{"release without lease", `{"key":"k","release":true,"limit":{"algorithm":"concurrency","quota":3,"window":"1s"}}`, "lease"},
		{"release not a bool", `{"key":"k","release":"yes","lease":"a","limit":{"algorithm":"concurrency","quota":3,"window":"1s"}}`, "release"},
		{"unknown consistency", `{"key":"k","consistency":"eventual","limit":` + fixed3 + `}`, "consistency"},
		{"approximate token bucket", `{"key":"k","consistency":"approximate","limits":[` + fixed3 + `,{"algorithm":"token_bucket","quota":3,"window":"1s"}]}`, "consistency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, h, "POST", "/v1/check", tt.body)
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", rec.Code, rec.Body)
			}
			p := decode[httpapi.Problem](t, rec)
			if p.Field != tt.field {
				t.Errorf("field %q, want %q (error %q)", p.Field, tt.field, p.Error)
			}
			if p.Error == "" || (tt.field != "" && !strings.Contains(p.Error, tt.field)) {
				t.Errorf("error %q should name field %q", p.Error, tt.field)
			}
		})
	}
}

func TestCheckBodyTooLarge(t *testing.T) {
	h := newHandler(t)
	body := `{"key":"k","limit":` + fixed3 + `,"pad":"` + strings.Repeat("x", httpapi.MaxBodyBytes) + `"}`
	rec := do(t, h, "POST", "/v1/check", body)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413: %.200s", rec.Code, rec.Body)
	}
	p := decode[httpapi.Problem](t, rec)
	if !strings.Contains(p.Error, "65536") {
		t.Errorf("error %q should give the limit", p.Error)
	}
	// Just under the limit is fine (padding with spaces).
	ok := `{"key":"k","limit":` + fixed3 + `}`
	ok += strings.Repeat(" ", httpapi.MaxBodyBytes-len(ok))
	if rec := do(t, h, "POST", "/v1/check", ok); rec.Code != http.StatusOK {
		t.Errorf("body of exactly %d bytes: status %d, want 200: %s", len(ok), rec.Code, rec.Body)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := newHandler(t)
	tests := []struct{ method, path, allow string }{
		{"GET", "/v1/check", "POST"},
		{"PUT", "/v1/check", "POST"},
		{"DELETE", "/v1/check", "POST"},
		{"POST", "/healthz", "GET, HEAD"},
	}
	for _, tt := range tests {
		rec := do(t, h, tt.method, tt.path, "")
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: status %d, want 405", tt.method, tt.path, rec.Code)
			continue
		}
		if got := rec.Header().Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
		if p := decode[httpapi.Problem](t, rec); p.Error == "" {
			t.Errorf("%s %s: empty error", tt.method, tt.path)
		}
	}
}

func TestHealthzAndNotFound(t *testing.T) {
	h := newHandler(t)
	rec := do(t, h, "GET", "/healthz", "")
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "ok" {
		t.Errorf("GET /healthz: %d %q, want 200 ok", rec.Code, rec.Body)
	}
	rec = do(t, h, "HEAD", "/healthz", "")
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Errorf("HEAD /healthz: %d %q, want 200 with no body", rec.Code, rec.Body)
	}
	rec = do(t, h, "GET", "/v2/nothing", "")
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /v2/nothing: %d, want 404", rec.Code)
	}
}

func TestStoreError(t *testing.T) {
	h := httpapi.New(failing{}, nil)
	rec := do(t, h, "POST", "/v1/check", `{"key":"k","limit":`+fixed3+`}`)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	if p := decode[httpapi.Problem](t, rec); !strings.Contains(p.Error, "connection refused") {
		t.Errorf("error %q should carry the store's error", p.Error)
	}
}

func TestFormatDuration(t *testing.T) {
	tests := map[time.Duration]string{
		0:                                     "0s",
		600 * time.Millisecond:                "600ms",
		1500 * time.Millisecond:               "1.5s",
		time.Minute:                           "1m",
		90 * time.Second:                      "1m30s",
		time.Hour:                             "1h",
		time.Hour + time.Minute:               "1h1m",
		time.Hour + time.Second:               "1h0m1s",
		24 * time.Hour:                        "24h",
		1500 * time.Microsecond:               "1.5ms",
		30*time.Minute + 500*time.Millisecond: "30m0.5s",
	}
	for d, want := range tests {
		if got := httpapi.FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
