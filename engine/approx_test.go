package engine_test

import (
	"context"
	"testing"

	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

const approxConfig = `
domain: test
descriptors:
  - key: strict
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: loose
    consistency: approximate
    rate_limit: {unit: minute, requests_per_unit: 2}
`

// TestApproximateRouting checks that descriptors of approximate rules go to
// Options.Approximate and the others to the store, in one Decide.
func TestApproximateRouting(t *testing.T) {
	set, err := rules.Parse("approx.yaml", []byte(approxConfig))
	if err != nil {
		t.Fatal(err)
	}
	strict := &countingStore{Store: memory.New(memory.Options{})}
	loose := &countingStore{Store: memory.New(memory.Options{})}
	e := engine.NewWithOptions(strict, engine.Static(set), engine.Options{Approximate: loose})
	defer e.Close()
	desc := [][]rules.Entry{{{Key: "strict", Value: "a"}}, {{Key: "loose", Value: "b"}}}
	for i := range 3 {
		sts, code, err := e.Decide(context.Background(), "test", desc, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := engine.OK
		if i == 2 {
			want = engine.OverLimit
		}
		if code != want || sts[0].Code != want || sts[1].Code != want {
			t.Fatalf("request %d: %v (%v, %v), want %v", i, code, sts[0].Code, sts[1].Code, want)
		}
	}
	if strict.ops.Load() != 3 || loose.ops.Load() != 3 || strict.calls.Load() != 3 || loose.calls.Load() != 3 {
		t.Fatalf("store got %d ops in %d calls, approximate %d in %d; want 3 in 3 each", strict.ops.Load(), strict.calls.Load(), loose.ops.Load(), loose.calls.Load())
	}
	// Without an approximate store every rule goes to the store.
	strict.ops.Store(0)
	e2 := engine.New(strict, engine.Static(set), nil)
	if _, _, err := e2.Decide(context.Background(), "test", desc, nil); err != nil {
		t.Fatal(err)
	}
	if strict.ops.Load() != 2 {
		t.Fatalf("store got %d ops, want 2", strict.ops.Load())
	}
}
