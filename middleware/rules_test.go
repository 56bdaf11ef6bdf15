package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/middleware"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

const webRules = `
domain: web
requests:
  trusted_proxies: [10.0.0.0/8]
  descriptors:
    - entries:
        - {key: remote_address, from: client_ip}
    - path_prefix: /api/
      entries:
        - {key: route, value: api}
        - {key: api_key, from: api_key}
    - path: /shadow
      entries:
        - {key: shadow, value: "yes"}
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: remote_address
    value: 203.0.113.66
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: route
    value: api
    descriptors:
      - key: api_key
        rate_limit: {name: per_key, window: 10s, requests_per_unit: 2}
        rate_limits:
          - {unit: day, requests_per_unit: 100}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
`

func newRules(t testing.TB, opts middleware.Options) http.Handler {
	t.Helper()
	set, err := rules.Parse("web.yaml", []byte(webRules))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	mw, err := middleware.Rules(engine.New(st, engine.Static(set), nil), "web", opts)
	if err != nil {
		t.Fatal(err)
	}
	return mw(ok)
}

// serveFrom sends a GET request from peer (its RemoteAddr) through h.
func serveFrom(h http.Handler, peer, target string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", target, nil)
	r.RemoteAddr = peer
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestRulesHeadersAndDenial(t *testing.T) {
	h := newRules(t, middleware.Options{Now: clock})
	// 03:04:58.8: the minute resets in 1.2 s (t=2), the 10 s window too, the
	// day in 75301.2 s.
	for i, r := range []string{"2", "1", "0"} {
		w := serveFrom(h, "192.0.2.1:1234", "/page")
		if w.Code != 200 {
			t.Fatalf("request %d: %d, want 200", i+1, w.Code)
		}
		checkFields(t, "allowed", w.Header(), map[string]string{
			"RateLimit-Policy": `"web.remote_address";q=3;w=60`,
			"RateLimit":        `"web.remote_address";r=` + r + `;t=2`,
		})
	}
	w := serveFrom(h, "192.0.2.1:1234", "/page")
	if w.Code != 429 || w.Body.String() != strings.Replace(problem429, "%s", "web.remote_address", 1) {
		t.Fatalf("4th request: %d %s, want 429 naming web.remote_address", w.Code, w.Body)
	}
	checkFields(t, "denied", w.Header(), map[string]string{
		"RateLimit-Policy": `"web.remote_address";q=3;w=60`,
		"RateLimit":        `"web.remote_address";r=0;t=2`,
		"Retry-After":      "2",
	})

	// Two descriptors, one rule with two limits: three policies.
	w = serveFrom(h, "192.0.2.2:1234", "/api/x", "X-Api-Key", "k1")
	checkFields(t, "api", w.Header(), map[string]string{
		"RateLimit-Policy": `"web.remote_address";q=3;w=60, "per_key/2-per-10s";q=2;w=10, "per_key/100-per-86400s";q=100;w=86400`,
		"RateLimit":        `"web.remote_address";r=2;t=2, "per_key/2-per-10s";r=1;t=2, "per_key/100-per-86400s";r=99;t=75302`,
	})
	serveFrom(h, "192.0.2.3:1234", "/api/x", "X-Api-Key", "k1")
	w = serveFrom(h, "192.0.2.4:1234", "/api/x", "X-Api-Key", "k1")
	if w.Code != 429 || w.Body.String() != strings.Replace(problem429, "%s", "per_key/2-per-10s", 1) {
		t.Errorf("third request of api key k1: %d %s, want 429 naming per_key/2-per-10s", w.Code, w.Body)
	}
	// Without the api key header that descriptor is left out.
	w = serveFrom(h, "192.0.2.5:1234", "/api/x")
	checkFields(t, "api without key", w.Header(), map[string]string{
		"RateLimit-Policy": `"web.remote_address";q=3;w=60`,
		"RateLimit":        `"web.remote_address";r=2;t=2`,
	})

	// requests_per_unit 0: denied, no Retry-After.
	w = serveFrom(h, "203.0.113.66:1234", "/")
	if w.Code != 429 || w.Header().Get("Retry-After") != "" || !strings.Contains(w.Body.String(), `"violated-policies":["web.remote_address_203.0.113.66"]`) {
		t.Errorf("denied address: %d Retry-After %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}

	// Shadow mode: never denies, never advertised.
	for range 3 {
		w = serveFrom(h, "192.0.2.9:1234", "/shadow")
		if w.Code != 200 || strings.Contains(w.Header().Get("RateLimit-Policy"), "shadow") {
			t.Fatalf("shadow rule: %d %q, want 200 without its policy", w.Code, w.Header().Get("RateLimit-Policy"))
		}
	}
}

func TestRulesTrustedProxies(t *testing.T) {
	h := newRules(t, middleware.Options{Now: clock})
	// An untrusted peer spoofing X-Forwarded-For is limited as itself.
	for i, xff := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"} {
		w := serveFrom(h, "192.0.2.50:1", "/", "X-Forwarded-For", xff)
		want := 200
		if i == 3 {
			want = 429
		}
		if w.Code != want {
			t.Errorf("untrusted peer, request %d with X-Forwarded-For %s: %d, want %d", i+1, xff, w.Code, want)
		}
	}
	// A trusted proxy (10.0.0.0/8) forwards for distinct clients.
	for i := range 4 {
		w := serveFrom(h, "10.1.2.3:1", "/", "X-Forwarded-For", "198.51.100."+string(rune('1'+i)))
		if w.Code != 200 {
			t.Errorf("trusted proxy, client %d: %d, want 200", i+1, w.Code)
		}
	}
	// The denied address behind a trusted proxy is denied.
	if w := serveFrom(h, "10.1.2.3:1", "/", "X-Forwarded-For", "203.0.113.66"); w.Code != 429 {
		t.Errorf("denied address through a trusted proxy: %d, want 429", w.Code)
	}
	// ... but not when a client merely claims it.
	if w := serveFrom(h, "192.0.2.51:1", "/", "X-Forwarded-For", "203.0.113.66"); w.Code != 200 {
		t.Errorf("denied address claimed by an untrusted peer: %d, want 200", w.Code)
	}
}

func TestRulesErrors(t *testing.T) {
	if _, err := middleware.Rules(nil, "web", middleware.Options{}); err == nil {
		t.Error("nil engine: no error")
	}
	set, _ := rules.Parse("web.yaml", []byte(webRules))
	e := engine.New(failingStore{}, engine.Static(set), nil)
	if _, err := middleware.Rules(e, "", middleware.Options{}); err == nil {
		t.Error("empty domain: no error")
	}
	mw, _ := middleware.Rules(e, "web", middleware.Options{})
	if w := serveFrom(mw(ok), "192.0.2.1:1", "/"); w.Code != 503 {
		t.Errorf("store down: %d, want 503", w.Code)
	}
	// An unknown domain maps no descriptors: served unlimited.
	mw, _ = middleware.Rules(e, "other", middleware.Options{})
	if w := serveFrom(mw(ok), "192.0.2.1:1", "/"); w.Code != 200 || w.Header().Get("RateLimit") != "" {
		t.Errorf("unknown domain: %d %q, want 200 without fields", w.Code, w.Header().Get("RateLimit"))
	}
}
