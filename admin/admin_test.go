package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/admin"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/metrics"
	"github.com/floodgate/floodgate/overrides"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

const token = "s3cret-token"

const config = `
domain: api
tiers:
  - name: premium
    key: api_key
    values: [gold]
descriptors:
  - key: api_key
    rate_limits:
      - {requests_per_unit: 3, window: 1m, algorithm: token_bucket}
      - {requests_per_unit: 100, unit: day}
    tiers:
      premium:
        rate_limits:
          - {requests_per_unit: 30, window: 1m, algorithm: token_bucket}
  - key: user
    rate_limit: {requests_per_unit: 2, unit: minute, algorithm: sliding_window_log}
  - key: region
    consistency: approximate
    rate_limit: {requests_per_unit: 5, unit: minute}
  - key: remote_address
    value: 192.0.2.1
    rate_limit: {unlimited: true}
  - key: remote_address
    value: 192.0.2.66
    rate_limit: {requests_per_unit: 0, unit: second}
`

type fixture struct {
	eng *engine.Engine
	h   *admin.Handler
	srv *httptest.Server
}

func newFixture(t *testing.T, opts admin.Options) *fixture {
	t.Helper()
	set, err := rules.Parse("test.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	if opts.Overrides == nil {
		opts.Overrides = overrides.Open(context.Background(), overrides.NewMemory(), overrides.Options{})
		t.Cleanup(opts.Overrides.Close)
	}
	eng := engine.NewWithOptions(st, engine.Static(set), engine.Options{Overrides: opts.Overrides})
	if opts.Token == "" {
		opts.Token = token
	}
	h, err := admin.New(eng, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{eng: eng, h: h, srv: srv}
}

// do sends a request with the token (auth "" sends no Authorization
// header) and decodes a JSON answer into out when out is not nil.
func (f *fixture) do(t *testing.T, method, path, auth, body string, out any) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json; body %s", method, path, ct, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp
}

// decide spends one unit of the descriptor, as a front would.
func (f *fixture) decide(t *testing.T, entries ...rules.Entry) engine.Code {
	t.Helper()
	_, code, err := f.eng.Decide(context.Background(), "api", [][]rules.Entry{entries}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

const bearer = "Bearer " + token

// serveOnce serves one request with the token straight to h.
func serveOnce(h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Authorization", bearer)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestToken(t *testing.T) {
	f := newFixture(t, admin.Options{})
	for _, auth := range []string{"", "Bearer", "Bearer wrong", "Basic " + token, "Bearer " + token + "x", token} {
		var p struct{ Error string }
		resp := f.do(t, "GET", "/admin/v1/rules", auth, "", &p)
		if resp.StatusCode != http.StatusUnauthorized || p.Error == "" {
			t.Errorf("Authorization %q: %d %q, want 401 with an error", auth, resp.StatusCode, p.Error)
		}
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("Authorization %q: WWW-Authenticate %q", auth, got)
		}
	}
	// A reset without the token changes nothing and is not audited.
	for range 3 {
		f.decide(t, rules.Entry{Key: "user", Value: "ann"})
	}
	if resp := f.do(t, "POST", "/admin/v1/reset", "Bearer nope", `{"domain":"api","descriptor":[{"key":"user","value":"ann"}]}`, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("reset with a wrong token: %d", resp.StatusCode)
	}
	if code := f.decide(t, rules.Entry{Key: "user", Value: "ann"}); code != engine.OverLimit {
		t.Errorf("after a refused reset: %v, want OVER_LIMIT", code)
	}
	if a := f.h.Audit(); len(a) != 0 {
		t.Errorf("audit after a refused token: %+v", a)
	}
	// The token is checked before anything else: an unknown path or a wrong
	// method without it is 401 too.
	for _, c := range [][2]string{{"GET", "/admin/v1/nothing"}, {"DELETE", "/admin/v1/rules"}, {"GET", "/"}} {
		if resp := f.do(t, c[0], c[1], "", "", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s without the token: %d, want 401", c[0], c[1], resp.StatusCode)
		}
	}
	if resp := f.do(t, "GET", "/admin/v1/rules", "bearer "+token, "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("scheme in lower case: %d", resp.StatusCode)
	}
	if _, err := admin.New(f.eng, admin.Options{}); err == nil {
		t.Error("New with no token: no error")
	}
}

func TestInspectConsumesNothing(t *testing.T) {
	f := newFixture(t, admin.Options{})
	f.decide(t, rules.Entry{Key: "api_key", Value: "k1"})
	body := `{"domain":"api","descriptor":[{"key":"api_key","value":"k1"}]}`
	for range 3 {
		var got admin.KeyResponse
		if resp := f.do(t, "POST", "/admin/v1/inspect", bearer, body, &got); resp.StatusCode != http.StatusOK {
			t.Fatalf("inspect: %d %+v", resp.StatusCode, got)
		}
		if got.Rule != "api.api_key" || got.Key == "" || got.Consistency != "strict" || len(got.Limits) != 2 {
			t.Fatalf("inspect: %+v", got)
		}
		bucket, day := got.Limits[0], got.Limits[1]
		if bucket.Algorithm != "token_bucket" || bucket.Quota != 3 || bucket.Window != "1m" || *bucket.Remaining != 2 ||
			*bucket.ResetAfterMS > 20_000 || *bucket.ResetAfterMS < 19_000 {
			t.Errorf("token bucket after one decision: %+v (remaining %d, reset %d ms), want 2 left, full in 20s", bucket, *bucket.Remaining, *bucket.ResetAfterMS)
		}
		if day.Algorithm != "fixed_window" || day.Quota != 100 || *day.Remaining != 99 {
			t.Errorf("day limit after one decision: %+v (remaining %d)", day, *day.Remaining)
		}
	}
	// A tier's limits are the ones shown.
	var gold admin.KeyResponse
	f.do(t, "POST", "/admin/v1/inspect", bearer, `{"domain":"api","descriptor":[{"key":"api_key","value":"gold"}]}`, &gold)
	if gold.Tier != "premium" || len(gold.Limits) != 1 || gold.Limits[0].Quota != 30 || *gold.Limits[0].Remaining != 30 {
		t.Errorf("premium key: %+v", gold)
	}
	// Unlimited and deny rules have no state: their limits are shown bare.
	var free admin.KeyResponse
	if resp := f.do(t, "POST", "/admin/v1/inspect", bearer, `{"domain":"api","descriptor":[{"key":"remote_address","value":"192.0.2.66"}]}`, &free); resp.StatusCode != http.StatusOK || free.Limits == nil {
		t.Errorf("deny rule: %d %+v", resp.StatusCode, free)
	}
	var nf struct{ Error string }
	if resp := f.do(t, "POST", "/admin/v1/inspect", bearer, `{"domain":"api","descriptor":[{"key":"nothing","value":"x"}]}`, &nf); resp.StatusCode != http.StatusNotFound || !strings.Contains(nf.Error, "nothing=x") {
		t.Errorf("no rule: %d %q, want 404 naming the descriptor", resp.StatusCode, nf.Error)
	}
}

func TestReset(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	f := newFixture(t, admin.Options{Now: func() time.Time { return now }})
	ann := rules.Entry{Key: "user", Value: "ann"}
	bob := rules.Entry{Key: "user", Value: "bob"}
	for range 2 {
		f.decide(t, ann)
		f.decide(t, bob)
	}
	if f.decide(t, ann) != engine.OverLimit || f.decide(t, bob) != engine.OverLimit {
		t.Fatal("a third request of 2 per minute admitted")
	}
	var got admin.KeyResponse
	resp := f.do(t, "POST", "/admin/v1/reset", bearer, `{"domain":"api","descriptor":[{"key":"user","value":"ann"}]}`, &got)
	if resp.StatusCode != http.StatusOK || !got.Reset || *got.Limits[0].Remaining != 2 {
		t.Fatalf("reset: %d %+v", resp.StatusCode, got)
	}
	if f.decide(t, ann) != engine.OK || f.decide(t, ann) != engine.OK || f.decide(t, ann) != engine.OverLimit {
		t.Error("after the reset ann did not get exactly a fresh quota of 2")
	}
	if f.decide(t, bob) != engine.OverLimit {
		t.Error("bob's state was reset with ann's")
	}

	// Refused resets are audited too; a descriptor with no rule is not.
	// On the memory store, with no approximate store, an approximate rule
	// is counted in the engine's store and resets like any other.
	if resp := f.do(t, "POST", "/admin/v1/reset", bearer, `{"domain":"api","descriptor":[{"key":"region","value":"eu"}]}`, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("reset of an approximate rule on the memory store: %d, want 200", resp.StatusCode)
	}
	for _, c := range []struct{ desc, msg string }{
		{`[{"key":"remote_address","value":"192.0.2.1"}]`, "unlimited"},
		{`[{"key":"remote_address","value":"192.0.2.66"}]`, "denies every request"},
	} {
		var p struct{ Error string }
		resp := f.do(t, "POST", "/admin/v1/reset", bearer, `{"domain":"api","descriptor":`+c.desc+`}`, &p)
		if resp.StatusCode != http.StatusConflict || !strings.Contains(p.Error, c.msg) {
			t.Errorf("reset %s: %d %q, want 409 saying %q", c.desc, resp.StatusCode, p.Error, c.msg)
		}
	}
	if resp := f.do(t, "POST", "/admin/v1/reset", bearer, `{"domain":"api","descriptor":[{"key":"nothing","value":"x"}]}`, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("reset with no rule: %d, want 404", resp.StatusCode)
	}

	var audit admin.AuditResponse
	f.do(t, "GET", "/admin/v1/audit", bearer, "", &audit)
	if len(audit.Entries) != 4 {
		t.Fatalf("audit: %d entries, want 4: %+v", len(audit.Entries), audit.Entries)
	}
	first := audit.Entries[3]
	if first.Seq != 1 || first.Action != "reset" || first.Outcome != "done" || first.Rule != "api.user" || first.Key != got.Key ||
		!first.Time.Equal(now) || first.Remote == "" || len(first.Descriptor) != 1 || first.Descriptor[0].Value != "ann" {
		t.Errorf("first audit entry: %+v", first)
	}
	if region := audit.Entries[2]; region.Seq != 2 || region.Rule != "api.region" || region.Outcome != "done" {
		t.Errorf("second audit entry: %+v", region)
	}
	if newest := audit.Entries[0]; newest.Seq != 4 || !strings.Contains(newest.Outcome, "denies every request") {
		t.Errorf("newest audit entry: %+v", newest)
	}
}

func TestAuditKeepsTheNewest(t *testing.T) {
	f := newFixture(t, admin.Options{AuditSize: 2})
	for _, v := range []string{"a", "b", "c"} {
		if resp := f.do(t, "POST", "/admin/v1/reset", bearer, `{"domain":"api","descriptor":[{"key":"user","value":"`+v+`"}]}`, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("reset %s: %d", v, resp.StatusCode)
		}
	}
	a := f.h.Audit()
	if len(a) != 2 || a[0].Seq != 3 || a[0].Descriptor[0].Value != "c" || a[1].Seq != 2 {
		t.Errorf("audit of size 2 after 3 resets: %+v", a)
	}
	if _, err := admin.New(f.eng, admin.Options{Token: token, AuditSize: -1}); err == nil {
		t.Error("a negative audit size: no error")
	}
}

func TestRules(t *testing.T) {
	f := newFixture(t, admin.Options{})
	var got admin.RulesResponse
	if resp := f.do(t, "GET", "/admin/v1/rules", bearer, "", &got); resp.StatusCode != http.StatusOK {
		t.Fatalf("rules: %d", resp.StatusCode)
	}
	if got.Version == "" || len(got.Domains) != 1 || got.Domains[0].Domain != "api" {
		t.Fatalf("rules: %+v", got)
	}
	byID := map[string]admin.RuleView{}
	for _, r := range got.Domains[0].Rules {
		byID[r.ID] = r
	}
	if r := byID["api.region"]; r.Consistency != "approximate" || len(r.Limits) != 1 || r.Limits[0].Quota != 5 {
		t.Errorf("api.region: %+v", r)
	}
	if r := byID["api.api_key"]; len(r.Limits) != 2 || r.Limits[0].Algorithm != "token_bucket" || r.Limits[0].Burst != 3 {
		t.Errorf("api.api_key: %+v", r)
	}
	if len(byID) != 5 {
		t.Errorf("%d rules, want 5: %+v", len(byID), got.Domains[0].Rules)
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, admin.Options{})
	for _, c := range []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"POST", "/admin/v1/inspect", `{"domain":"api"`, 400, "malformed"},
		{"POST", "/admin/v1/inspect", `{"domain":"api","descriptor":[{"key":"user","value":"a"}],"extra":1}`, 400, "extra"},
		{"POST", "/admin/v1/inspect", `{"domain":"api","descriptor":[{"key":"user","value":"a"}]} {}`, 400, "more than one"},
		{"POST", "/admin/v1/inspect", `{"descriptor":[{"key":"user","value":"a"}]}`, 400, "domain"},
		{"POST", "/admin/v1/reset", `{"domain":"api","descriptor":[]}`, 400, "descriptor"},
		{"POST", "/admin/v1/reset", `{"domain":"api","descriptor":[{"value":"a"}]}`, 400, "descriptor[0].key"},
		{"POST", "/admin/v1/reset", `{"domain":"api","descriptor":[{"key":"user","value":"` + strings.Repeat("x", admin.MaxBodyBytes) + `"}]}`, 413, "body over"},
		{"GET", "/admin/v1/reset", "", 405, "want POST"},
		{"DELETE", "/admin/v1/rules", "", 405, "want GET"},
		{"GET", "/admin/v1/nothing", "", 404, "no endpoint"},
	} {
		var p struct{ Error string }
		resp := f.do(t, c.method, c.path, bearer, c.body, &p)
		if resp.StatusCode != c.status || !strings.Contains(p.Error, c.msg) {
			t.Errorf("%s %s %.60s: %d %q, want %d saying %q", c.method, c.path, c.body, resp.StatusCode, p.Error, c.status, c.msg)
		}
	}
	if a := f.h.Audit(); len(a) != 0 {
		t.Errorf("bad requests were audited: %+v", a)
	}
}

// A store that cannot answer: 503, and a failed reset is audited as such.
func TestStoreDown(t *testing.T) {
	f := newFixture(t, admin.Options{})
	f.eng.Store().Close()
	body := `{"domain":"api","descriptor":[{"key":"user","value":"a"}]}`
	for _, path := range []string{"/admin/v1/inspect", "/admin/v1/reset"} {
		var p struct{ Error string }
		if resp := f.do(t, "POST", path, bearer, body, &p); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(p.Error, "closed") {
			t.Errorf("%s on a closed store: %d %q, want 503", path, resp.StatusCode, p.Error)
		}
	}
	if a := f.h.Audit(); len(a) != 1 || !strings.Contains(a[0].Outcome, "cannot reset") {
		t.Errorf("audit of a failed reset: %+v", a)
	}
}

// An override replaces a descriptor's limits at once, shows in inspect and
// in the list, is audited, and goes away with DELETE.
func TestOverrides(t *testing.T) {
	f := newFixture(t, admin.Options{})
	ann := rules.Entry{Key: "user", Value: "ann"}
	body := `{"domain":"api","descriptor":[{"key":"user","value":"ann"}],"limits":[{"algorithm":"fixed_window","quota":4,"window":"1h"}],"expires_in":"24h","reason":"support ticket 7"}`
	var got admin.OverrideView
	if resp := f.do(t, "PUT", "/admin/v1/overrides", bearer, body, &got); resp.StatusCode != http.StatusOK {
		t.Fatalf("put: %d %+v", resp.StatusCode, got)
	}
	if got.Rule != "api.user" || got.Key != "api|user=ann" || len(got.Limits) != 1 || got.Limits[0].Quota != 4 || got.Expires == nil || got.Reason != "support ticket 7" {
		t.Errorf("put answered %+v", got)
	}
	admitted := 0
	for range 6 {
		if f.decide(t, ann) == engine.OK {
			admitted++
		}
	}
	if admitted != 4 {
		t.Errorf("ann under an override of 4 an hour: %d of 6 admitted", admitted)
	}
	bob := 0
	for range 6 {
		if f.decide(t, rules.Entry{Key: "user", Value: "bob"}) == engine.OK {
			bob++
		}
	}
	if bob != 2 {
		t.Errorf("bob under the rule's 2 a minute: %d of 6 admitted", bob)
	}
	var in admin.KeyResponse
	f.do(t, "POST", "/admin/v1/inspect", bearer, `{"domain":"api","descriptor":[{"key":"user","value":"ann"}]}`, &in)
	if !in.Override || in.Limits[0].Quota != 4 || *in.Limits[0].Remaining != 0 {
		t.Errorf("inspect under the override: %+v", in)
	}
	var list admin.OverridesResponse
	f.do(t, "GET", "/admin/v1/overrides", bearer, "", &list)
	if len(list.Overrides) != 1 || list.Overrides[0].Descriptor[0].Value != "ann" || list.Overrides[0].Expired {
		t.Errorf("list: %+v", list)
	}
	del := `{"domain":"api","descriptor":[{"key":"user","value":"ann"}]}`
	if resp := f.do(t, "DELETE", "/admin/v1/overrides", bearer, del, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if resp := f.do(t, "DELETE", "/admin/v1/overrides", bearer, del, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a second delete: %d, want 404", resp.StatusCode)
	}
	if f.decide(t, ann) != engine.OK {
		t.Error("after the delete, ann is not back under the rule's own count")
	}
	// By store key, as for an override whose rule is gone.
	if err := f.h.Overrides().Put(context.Background(), overrides.Override{Domain: "api", Key: "api|gone=1", Limits: []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1, Window: time.Second}}}); err != nil {
		t.Fatal(err)
	}
	if resp := f.do(t, "DELETE", "/admin/v1/overrides", bearer, `{"domain":"api","key":"api|gone=1","descriptor":[{"key":"a","value":"b"}]}`, nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("delete by key and descriptor: %d, want 400", resp.StatusCode)
	}
	if resp := f.do(t, "DELETE", "/admin/v1/overrides", bearer, `{"domain":"api","key":"api|gone=1"}`, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("delete by key: %d", resp.StatusCode)
	}
	a := f.h.Audit()
	if len(a) != 3 || a[2].Action != "override" || !strings.Contains(a[2].Outcome, "support ticket 7") || a[1].Action != "delete override" || a[1].Outcome != "done" ||
		a[0].Key != "api|gone=1" || a[0].Outcome != "done" {
		t.Errorf("audit: %+v", a)
	}

	for _, c := range []struct {
		body   string
		status int
		msg    string
	}{
		{`{"domain":"api","descriptor":[{"key":"user","value":"a"}],"limits":[]}`, 400, "limits: want 1 to"},
		{`{"domain":"api","descriptor":[{"key":"user","value":"a"}],"limits":[{"algorithm":"leaky","quota":1,"window":"1s"}]}`, 400, "limits[0].algorithm"},
		{`{"domain":"api","descriptor":[{"key":"user","value":"a"}],"limits":[{"algorithm":"gcra","quota":0,"window":"1s"}]}`, 400, "limits[0]"},
		{`{"domain":"api","descriptor":[{"key":"user","value":"a"}],"limits":[{"algorithm":"gcra","quota":1,"window":"soon"}]}`, 400, "limits[0].window"},
		{`{"domain":"api","descriptor":[{"key":"user","value":"a"}],"limits":[{"algorithm":"gcra","quota":1,"window":"1s"}],"expires_in":"-1h"}`, 400, "expires_in"},
		{`{"domain":"api","descriptor":[{"key":"nothing","value":"a"}],"limits":[{"algorithm":"gcra","quota":1,"window":"1s"}]}`, 404, "no rule"},
		{`{"domain":"api","descriptor":[{"key":"region","value":"eu"}],"limits":[{"algorithm":"gcra","quota":1,"window":"1s"}]}`, 409, "approximate"},
		{`{"domain":"api","descriptor":[{"key":"remote_address","value":"192.0.2.1"}],"limits":[{"algorithm":"gcra","quota":1,"window":"1s"}]}`, 409, "unlimited"},
	} {
		var p struct{ Error string }
		resp := f.do(t, "PUT", "/admin/v1/overrides", bearer, c.body, &p)
		if resp.StatusCode != c.status || !strings.Contains(p.Error, c.msg) {
			t.Errorf("put %s: %d %q, want %d saying %q", c.body, resp.StatusCode, p.Error, c.status, c.msg)
		}
	}
	// An approximate rule takes an override an approximate store can count.
	if resp := f.do(t, "PUT", "/admin/v1/overrides", bearer, `{"domain":"api","descriptor":[{"key":"region","value":"eu"}],"limits":[{"algorithm":"sliding_window","quota":50,"window":"1m"}]}`, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("a sliding window override of an approximate rule: %d", resp.StatusCode)
	}
	// A handler without a table has no overrides to show.
	bare, err := admin.New(f.eng, admin.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	w := serveOnce(bare, "GET", "/admin/v1/overrides", "")
	if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "not configured") {
		t.Errorf("overrides without a table: %d %s", w.Code, w.Body)
	}
}

// With an approximate store (a shared store's instances each counting), an
// approximate rule cannot be reset from one instance.
func TestResetApproximateRefused(t *testing.T) {
	set, err := rules.Parse("test.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	st, apx := memory.New(memory.Options{}), memory.New(memory.Options{})
	t.Cleanup(func() { st.Close(); apx.Close() })
	eng := engine.NewWithOptions(st, engine.Static(set), engine.Options{Approximate: apx})
	h, err := admin.New(eng, admin.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	w := serveOnce(h, "POST", "/admin/v1/reset", `{"domain":"api","descriptor":[{"key":"region","value":"eu"}]}`)
	if w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "approximate") {
		t.Errorf("reset of an approximate rule with an approximate store: %d %s, want 409", w.Code, w.Body)
	}
}

// The dashboard's page is served without the token and holds no data; the
// stats it charts come from the metrics registry, with the token.
func TestDashboardAndStats(t *testing.T) {
	set, err := rules.Parse("test.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	mx := metrics.New()
	eng := engine.NewWithOptions(st, engine.Static(set), engine.Options{Observe: mx.Observe, Front: engine.FrontGRPC})
	h, err := admin.New(eng, admin.Options{Token: token, Gatherer: mx.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	f := &fixture{eng: eng, h: h, srv: srv}

	resp, err := srv.Client().Get(srv.URL + "/admin/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
		!strings.Contains(string(page), "/admin/v1/stats") || strings.Contains(string(page), token) {
		t.Errorf("dashboard: %d %q %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"), len(page))
	}
	if resp := f.do(t, "POST", "/admin/", "", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /admin/ without the token: %d, want 401", resp.StatusCode)
	}
	if resp := f.do(t, "GET", "/admin/v1/stats", "", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("stats without the token: %d, want 401", resp.StatusCode)
	}

	for range 3 {
		f.decide(t, rules.Entry{Key: "user", Value: "ann"})
	}
	var stats admin.StatsResponse
	if resp := f.do(t, "GET", "/admin/v1/stats", bearer, "", &stats); resp.StatusCode != http.StatusOK {
		t.Fatalf("stats: %d", resp.StatusCode)
	}
	got := map[string]float64{}
	for _, s := range stats.Series {
		if !strings.HasPrefix(s.Name, "floodgate_") {
			t.Errorf("series %q is not floodgate's", s.Name)
		}
		if s.Name == "floodgate_decisions_total" && s.Labels["rule"] == "api.user" {
			got[s.Labels["outcome"]] += s.Value
		}
	}
	if got["ok"] != 2 || got["over_limit"] != 1 || stats.Time == 0 {
		t.Errorf("decisions of api.user by outcome %v at %d, want 2 ok and 1 over_limit", got, stats.Time)
	}
}

// brokenAudit is a shared audit log that cannot be reached.
type brokenAudit struct{}

func (brokenAudit) AppendAudit(context.Context, string, int) (int64, error) {
	return 0, errors.New("connection refused")
}
func (brokenAudit) Audit(context.Context, int) ([]int64, []string, error) {
	return nil, nil, errors.New("connection refused")
}

// A shared audit log that cannot be reached loses nothing: the entries
// are kept, numbered and answered by this instance, saying why.
func TestSharedAuditDown(t *testing.T) {
	f := newFixture(t, admin.Options{SharedAudit: brokenAudit{}, Instance: "test-1"})
	if resp := f.do(t, "POST", "/admin/v1/reset", bearer, `{"domain":"api","descriptor":[{"key":"user","value":"a"}]}`, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("reset: %d", resp.StatusCode)
	}
	var audit admin.AuditResponse
	f.do(t, "GET", "/admin/v1/audit", bearer, "", &audit)
	if audit.Shared || !strings.Contains(audit.Error, "connection refused") || len(audit.Entries) != 1 ||
		audit.Entries[0].Seq != 1 || audit.Entries[0].Instance != "test-1" || audit.Entries[0].Outcome != "done" {
		t.Errorf("audit with the shared log down: %+v", audit)
	}
}

// memAudit is a shared audit log in memory that can be switched off.
type memAudit struct {
	mu      sync.Mutex
	down    bool
	seqs    []int64
	entries []string
}

func (m *memAudit) AppendAudit(_ context.Context, e string, keep int) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return 0, errors.New("connection refused")
	}
	n := int64(len(m.seqs) + 1)
	m.seqs, m.entries = append([]int64{n}, m.seqs...), append([]string{e}, m.entries...)
	return n, nil
}

func (m *memAudit) Audit(_ context.Context, n int) ([]int64, []string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, nil, errors.New("connection refused")
	}
	return m.seqs[:min(n, len(m.seqs))], m.entries[:min(n, len(m.entries))], nil
}

// An entry made while the shared log was down reaches it once it is back,
// in order: nothing is lost, and each log numbers its own entries.
func TestSharedAuditRecovers(t *testing.T) {
	sa := &memAudit{}
	f := newFixture(t, admin.Options{SharedAudit: sa, Instance: "i1"})
	reset := func(v string) {
		t.Helper()
		if resp := f.do(t, "POST", "/admin/v1/reset", bearer, `{"domain":"api","descriptor":[{"key":"user","value":"`+v+`"}]}`, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("reset %s: %d", v, resp.StatusCode)
		}
	}
	reset("a")
	sa.mu.Lock()
	sa.down = true
	sa.mu.Unlock()
	reset("b")
	var audit admin.AuditResponse
	f.do(t, "GET", "/admin/v1/audit", bearer, "", &audit)
	if audit.Shared || len(audit.Entries) != 2 || audit.Entries[0].Seq != 2 || audit.Entries[1].Seq != 1 {
		t.Errorf("with the shared log down: %+v, want this instance's 2 entries numbered 2 and 1", audit)
	}
	sa.mu.Lock()
	sa.down = false
	sa.mu.Unlock()
	reset("c")
	f.do(t, "GET", "/admin/v1/audit", bearer, "", &audit)
	var got []string
	for _, e := range audit.Entries {
		got = append(got, fmt.Sprintf("%d:%s", e.Seq, e.Descriptor[0].Value))
	}
	if !audit.Shared || strings.Join(got, " ") != "3:c 2:b 1:a" {
		t.Errorf("after the shared log is back: shared %v, entries %v; want 3:c 2:b 1:a", audit.Shared, got)
	}
}
