package middleware_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/middleware"
	"github.com/floodgate/floodgate/store/memory"
)

// at is 8.8 s into a 10 s window aligned to the Unix epoch: a fixed window
// of 10 s resets 1.2 s later, which the fields round up to 2.
var at = time.Date(2030, 1, 2, 3, 4, 58, 800_000_000, time.UTC)

func clock() time.Time { return at }

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "ok\n")
})

func newLimiter(t testing.TB) *floodgate.Limiter {
	t.Helper()
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	return floodgate.New(st)
}

func mustNew(t testing.TB, l *floodgate.Limiter, key middleware.KeyFunc, opts middleware.Options, limits ...floodgate.Limit) http.Handler {
	t.Helper()
	mw, err := middleware.New(l, key, opts, limits...)
	if err != nil {
		t.Fatal(err)
	}
	return mw(ok)
}

func constKey(k string) middleware.KeyFunc {
	return func(*http.Request) (string, error) { return k, nil }
}

// serve sends one request through h and returns the recorded response.
func serve(h http.Handler, method, target string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// checkFields compares the rate-limit fields of a response, byte for byte.
func checkFields(t *testing.T, what string, h http.Header, want map[string]string) {
	t.Helper()
	for _, name := range []string{"RateLimit-Policy", "RateLimit", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} {
		got := h.Values(name)
		w, present := want[name]
		switch {
		case !present && len(got) > 0:
			t.Errorf("%s: %s: %q, want none", what, name, got)
		case present && (len(got) != 1 || got[0] != w):
			t.Errorf("%s: %s: %q, want %q", what, name, got, w)
		}
	}
}

const problem429 = `{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded",` +
	`"title":"Request cannot be satisfied as assigned quota has been exceeded","status":429,` +
	`"violated-policies":["%s"]}` + "\n"

func TestKeyedHeadersAndDenial(t *testing.T) {
	l := newLimiter(t)
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 3, Window: 10 * time.Second}
	h := mustNew(t, l, constKey("k"), middleware.Options{Now: clock}, lim)
	for i := 1; i <= 3; i++ {
		w := serve(h, "GET", "/")
		if w.Code != 200 || w.Body.String() != "ok\n" {
			t.Fatalf("request %d: %d %q, want 200 ok", i, w.Code, w.Body)
		}
		checkFields(t, "allowed", w.Header(), map[string]string{
			"RateLimit-Policy": `"3-per-10s";q=3;w=10`,
			"RateLimit":        `"3-per-10s";r=` + string(rune('0'+3-i)) + `;t=2`,
		})
	}
	w := serve(h, "GET", "/")
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("4th request: %d, want 429", w.Code)
	}
	checkFields(t, "denied", w.Header(), map[string]string{
		"RateLimit-Policy": `"3-per-10s";q=3;w=10`,
		"RateLimit":        `"3-per-10s";r=0;t=2`,
		"Retry-After":      "2", // 1.2 s rounded up
	})
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	if got, want := w.Body.String(), strings.Replace(problem429, "%s", "3-per-10s", 1); got != want {
		t.Errorf("body\n got %s\nwant %s", got, want)
	}
}

func TestSeveralLimits(t *testing.T) {
	l := newLimiter(t)
	burst := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 2, Window: 10 * time.Second}
	daily := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 100, Window: 24 * time.Hour}
	h := mustNew(t, l, constKey("k"), middleware.Options{Now: clock, Names: []string{"burst"}, Legacy: true}, burst, daily)
	// 03:04:58.8 is 11098.8 s into the UTC day: the day resets in 75301.2 s.
	for i, want := range []struct{ r1, r2, code string }{{"1", "99", "200"}, {"0", "98", "200"}, {"0", "98", "429"}} {
		w := serve(h, "GET", "/")
		if got := http.StatusText(w.Code); w.Code != map[string]int{"200": 200, "429": 429}[want.code] {
			t.Fatalf("request %d: %d %s, want %s", i+1, w.Code, got, want.code)
		}
		fields := map[string]string{
			"RateLimit-Policy":      `"burst";q=2;w=10, "100-per-86400s";q=100;w=86400`,
			"RateLimit":             `"burst";r=` + want.r1 + `;t=2, "100-per-86400s";r=` + want.r2 + `;t=75302`,
			"X-RateLimit-Limit":     "2",
			"X-RateLimit-Remaining": want.r1,
			"X-RateLimit-Reset":     "2",
		}
		if want.code == "429" {
			fields["Retry-After"] = "2"
			if got, want := w.Body.String(), strings.Replace(problem429, "%s", "burst", 1); got != want {
				t.Errorf("body\n got %s\nwant %s", got, want)
			}
		}
		checkFields(t, "request "+want.code, w.Header(), fields)
	}
}

func TestPeekNotConsumed(t *testing.T) {
	l := newLimiter(t)
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 2, Window: 10 * time.Second}
	cost := func(r *http.Request) int64 {
		if r.URL.Path == "/quota" {
			return 0
		}
		return 1
	}
	h := mustNew(t, l, constKey("k"), middleware.Options{Now: clock, Cost: cost}, lim)
	for range 5 {
		w := serve(h, "GET", "/quota")
		if w.Code != 200 || w.Header().Get("RateLimit") != `"2-per-10s";r=2;t=0` {
			t.Fatalf("peek on a fresh key: %d %q, want 200 with r=2", w.Code, w.Header().Get("RateLimit"))
		}
	}
	for i := range 2 {
		if w := serve(h, "GET", "/"); w.Code != 200 {
			t.Fatalf("request %d after peeks: %d, want 200 (peeks consume nothing)", i+1, w.Code)
		}
	}
	w := serve(h, "GET", "/quota")
	if w.Code != 200 || w.Header().Get("RateLimit") != `"2-per-10s";r=0;t=2` || w.Header().Get("Retry-After") != "" {
		t.Errorf("peek on a spent key: %d %q %q, want 200, r=0 t=2, no Retry-After", w.Code, w.Header().Get("RateLimit"), w.Header().Get("Retry-After"))
	}
	if w := serve(h, "GET", "/"); w.Code != 429 {
		t.Errorf("request after the quota: %d, want 429", w.Code)
	}
}

func TestOptions(t *testing.T) {
	l := newLimiter(t)
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: 10 * time.Second}
	h := mustNew(t, l, constKey("omit"), middleware.Options{Now: clock, OmitHeaders: true, Legacy: true}, lim)
	w := serve(h, "GET", "/")
	checkFields(t, "admitted, OmitHeaders", w.Header(), nil)
	w = serve(h, "GET", "/")
	checkFields(t, "denied, OmitHeaders", w.Header(), map[string]string{
		"RateLimit-Policy": `"1-per-10s";q=1;w=10`, "RateLimit": `"1-per-10s";r=0;t=2`, "Retry-After": "2",
		"X-RateLimit-Limit": "1", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2",
	})

	// A cost above the capacity: denied with no Retry-After, no wait helps.
	big := mustNew(t, l, constKey("big"), middleware.Options{Now: clock, Cost: func(*http.Request) int64 { return 5 }}, lim)
	w = serve(big, "GET", "/")
	if w.Code != 429 || w.Header().Get("Retry-After") != "" {
		t.Errorf("cost above capacity: %d Retry-After %q, want 429 without Retry-After", w.Code, w.Header().Get("Retry-After"))
	}

	// An empty key is not limited.
	none := mustNew(t, l, constKey(""), middleware.Options{Now: clock}, lim)
	for range 3 {
		if w := serve(none, "GET", "/"); w.Code != 200 || w.Header().Get("RateLimit") != "" {
			t.Fatalf("empty key: %d %q, want 200 without fields", w.Code, w.Header().Get("RateLimit"))
		}
	}
	// Header keys.
	hk := mustNew(t, l, middleware.Header("x-api-key"), middleware.Options{Now: clock}, lim)
	if w := serve(hk, "GET", "/", "X-Api-Key", "a"); w.Code != 200 {
		t.Errorf("key a: %d", w.Code)
	}
	if w := serve(hk, "GET", "/", "X-Api-Key", "b"); w.Code != 200 {
		t.Errorf("key b: %d", w.Code)
	}
	if w := serve(hk, "GET", "/", "X-Api-Key", "a"); w.Code != 429 {
		t.Errorf("key a again: %d, want 429", w.Code)
	}

	for _, tc := range []struct {
		name   string
		l      *floodgate.Limiter
		key    middleware.KeyFunc
		limits []floodgate.Limit
	}{
		{"nil limiter", nil, constKey("k"), []floodgate.Limit{lim}},
		{"nil key", l, nil, []floodgate.Limit{lim}},
		{"no limits", l, constKey("k"), nil},
		{"bad limit", l, constKey("k"), []floodgate.Limit{{Algorithm: floodgate.FixedWindow}}},
	} {
		if _, err := middleware.New(tc.l, tc.key, middleware.Options{}, tc.limits...); err == nil {
			t.Errorf("New with %s: no error", tc.name)
		}
	}
}

// failingStore cannot decide.
type failingStore struct{}

var errDown = errors.New("connection refused")

func (failingStore) Decide(ctx context.Context, ops []floodgate.Op) error {
	for i := range ops {
		ops[i].Err = errDown
	}
	return errDown
}
func (failingStore) Close() error { return nil }

func TestErrors(t *testing.T) {
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: 10 * time.Second}
	down := floodgate.New(failingStore{})
	w := serve(mustNew(t, down, constKey("k"), middleware.Options{}, lim), "GET", "/")
	want := `{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"the rate limiter cannot decide right now"}` + "\n"
	if w.Code != 503 || w.Body.String() != want || w.Header().Get("Content-Type") != "application/problem+json" {
		t.Errorf("store down: %d %q %s, want 503 %s", w.Code, w.Header().Get("Content-Type"), w.Body, want)
	}

	var got error
	open := middleware.Options{OnError: func(w http.ResponseWriter, r *http.Request, err error) bool { got = err; return true }}
	w = serve(mustNew(t, down, constKey("k"), open, lim), "GET", "/")
	if w.Code != 200 || w.Body.String() != "ok\n" || !errors.Is(got, errDown) {
		t.Errorf("fail open: %d %q, err %v; want 200 ok and the store's error", w.Code, w.Body, got)
	}

	keyErr := func(*http.Request) (string, error) { return "", errors.New("no session") }
	w = serve(mustNew(t, newLimiter(t), keyErr, middleware.Options{}, lim), "GET", "/")
	if w.Code != 400 || !strings.Contains(w.Body.String(), "no session") {
		t.Errorf("key error: %d %s, want 400 naming the error", w.Code, w.Body)
	}
	neg := middleware.Options{Cost: func(*http.Request) int64 { return -1 }}
	w = serve(mustNew(t, newLimiter(t), constKey("k"), neg, lim), "GET", "/")
	if w.Code != 400 {
		t.Errorf("negative cost: %d %s, want 400", w.Code, w.Body)
	}
}

// Through a real server the peer is 127.0.0.1. A client that is not a
// trusted proxy cannot choose its key with X-Forwarded-For; a trusted proxy
// can tell the client apart.
func TestTrustedProxies(t *testing.T) {
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: 10 * time.Second}
	get := func(url, xff string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("RateLimit")
	}
	var keys sync.Map
	record := func(kf middleware.KeyFunc) middleware.KeyFunc {
		return func(r *http.Request) (string, error) {
			k, err := kf(r)
			keys.Store(r.Header.Get("X-Forwarded-For"), k)
			return k, err
		}
	}

	untrusted := httptest.NewServer(mustNew(t, newLimiter(t), record(middleware.ClientIP()), middleware.Options{Now: clock}, lim))
	defer untrusted.Close()
	if code, _ := get(untrusted.URL, "198.51.100.1"); code != 200 {
		t.Fatalf("first request: %d", code)
	}
	if code, _ := get(untrusted.URL, "198.51.100.2"); code != 429 {
		t.Errorf("spoofed X-Forwarded-For from an untrusted peer: %d, want 429 (the peer's own key)", code)
	}
	if k, _ := keys.Load("198.51.100.2"); k != "127.0.0.1" {
		t.Errorf("untrusted peer keyed as %v, want 127.0.0.1", k)
	}

	trusted := httptest.NewServer(mustNew(t, newLimiter(t), record(middleware.ClientIP(netip.MustParsePrefix("127.0.0.0/8"))), middleware.Options{Now: clock}, lim))
	defer trusted.Close()
	for _, tc := range []struct {
		xff  string
		code int
		key  string
	}{
		{"198.51.100.1", 200, "198.51.100.1"},
		{"198.51.100.2", 200, "198.51.100.2"},
		{"203.0.113.9, 198.51.100.1", 429, "198.51.100.1"}, // the rightmost untrusted hop is the client
		{"", 200, "127.0.0.1"},
	} {
		code, _ := get(trusted.URL, tc.xff)
		k, _ := keys.Load(tc.xff)
		if code != tc.code || k != tc.key {
			t.Errorf("trusted peer, X-Forwarded-For %q: %d keyed %v, want %d keyed %s", tc.xff, code, k, tc.code, tc.key)
		}
	}
}

// Many goroutines on one key admit exactly the quota.
func TestConcurrent(t *testing.T) {
	const quota, workers, each = 50, 8, 25
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: quota, Window: 10 * time.Second}
	h := mustNew(t, newLimiter(t), constKey("hot"), middleware.Options{Now: clock}, lim)
	var admitted, denied atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				switch serve(h, "GET", "/").Code {
				case 200:
					admitted.Add(1)
				case 429:
					denied.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if admitted.Load() != quota || denied.Load() != workers*each-quota {
		t.Errorf("admitted %d, denied %d; want %d and %d", admitted.Load(), denied.Load(), quota, workers*each-quota)
	}
}

func TestProblemShape(t *testing.T) {
	w := httptest.NewRecorder()
	w.Header().Set("Content-Length", "3")
	middleware.WriteProblem(w, middleware.Problem{Type: "about:blank", Title: "T", Status: 418})
	if w.Code != 418 || w.Header().Get("Content-Length") != "" || !reflect.DeepEqual(w.Header()["Cache-Control"], []string{"no-store"}) {
		t.Errorf("WriteProblem: %d %q", w.Code, w.Header())
	}
}
