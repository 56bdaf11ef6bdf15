package httpapi_test

import (
	"context"
	"testing"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/httpapi"
	"github.com/floodgate/floodgate/store/memory"
)

// TestCheckConsistency sends "consistency":"approximate" checks to the
// engine's approximate store and the others to its strict store: each
// store sees only its own requests.
func TestCheckConsistency(t *testing.T) {
	strict := memory.New(memory.Options{})
	defer strict.Close()
	approximate := memory.New(memory.Options{})
	defer approximate.Close()
	e := engine.NewWithOptions(strict, nil, engine.Options{Approximate: approximate})
	defer e.Close()
	h := httpapi.New(strict, nil)
	h.UseEngine(e)

	for i, body := range []string{
		`{"key":"k","consistency":"approximate","limit":` + fixed3 + `}`,
		`{"key":"k","consistency":"approximate","limit":` + fixed3 + `}`,
		`{"key":"k","consistency":"strict","limit":` + fixed3 + `}`,
	} {
		if rec := do(t, h, "POST", "/v1/check", body); rec.Code != 200 {
			t.Fatalf("check %d: status %d: %s", i, rec.Code, rec.Body)
		}
	}
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 3, Window: 60e9}
	for _, c := range []struct {
		name  string
		store floodgate.Store
		want  int64
	}{{"approximate", approximate, 1}, {"strict", strict, 2}} {
		r, err := floodgate.New(c.store).Peek(context.Background(), "k", l)
		if err != nil {
			t.Fatal(err)
		}
		if r.Remaining != c.want {
			t.Errorf("%s store: %d remaining, want %d", c.name, r.Remaining, c.want)
		}
	}
}
