package httpapi_test

import (
	"testing"

	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/httpapi"
	"github.com/floodgate/floodgate/rules"
)

// TestCheckFailurePolicy: with an engine, a store that cannot decide hands
// /v1/check to the engine's default failure policy. The real outage (a
// killed redis-server) is tested on the serve process in cmd/floodgate.
func TestCheckFailurePolicy(t *testing.T) {
	body := `{"key":"k","limit":` + fixed3 + `}`
	for _, c := range []struct {
		policy rules.FailurePolicy
		status []int
	}{
		{rules.FailOpen, []int{200, 200, 200, 200}},
		{rules.FailClosed, []int{429, 429}},
		{rules.FailLocal, []int{200, 200, 200, 429}},
		{rules.FailureDefault, []int{503}},
	} {
		t.Run(c.policy.String(), func(t *testing.T) {
			var fronts []string
			e := engine.NewWithOptions(failing{}, nil, engine.Options{
				OnStoreError: c.policy,
				Observe: func(front, _ string, _ *rules.Set, _ []engine.Status, _ error) {
					fronts = append(fronts, front)
				},
			})
			defer e.Close()
			h := httpapi.New(failing{}, nil)
			h.UseEngine(e)
			for i, want := range c.status {
				rec := do(t, h, "POST", "/v1/check", body)
				if rec.Code != want {
					t.Fatalf("check %d: status %d, want %d: %s", i, rec.Code, want, rec.Body)
				}
				if want == 503 {
					continue
				}
				resp := decode[httpapi.CheckResponse](t, rec)
				if resp.Policy != c.policy.String() || resp.Allowed != (want == 200) {
					t.Fatalf("check %d: %+v, want policy %v", i, resp, c.policy)
				}
				if c.policy == rules.FailClosed && rec.Header().Get("Retry-After") != "1" {
					t.Errorf("check %d: Retry-After %q, want 1", i, rec.Header().Get("Retry-After"))
				}
			}
			if len(fronts) != len(c.status) || fronts[0] != engine.FrontCheck {
				t.Errorf("observed fronts %q, want %d × %q", fronts, len(c.status), engine.FrontCheck)
			}
		})
	}
}
