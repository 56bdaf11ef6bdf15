package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/floodgate/floodgate/bench"
)

// slowTarget allows every decision after a pause.
type slowTarget struct{ pause time.Duration }

func (s slowTarget) Decide(ctx context.Context, key string, cost int64) (bool, error) {
	time.Sleep(s.pause)
	return true, nil
}
func (slowTarget) Close() error { return nil }

// TestRateLatencyFromDue paces one worker at 1,000 decisions/s against a
// target that takes 5 ms each: decision i is sent about 5i ms after the
// start but was due at i ms, and its latency counts from then. Measured from
// the send, every latency would be about 5 ms.
func TestRateLatencyFromDue(t *testing.T) {
	rep, err := bench.Run(context.Background(), slowTarget{5 * time.Millisecond},
		bench.Config{Concurrency: 1, Requests: 50, Rate: 1000, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Decisions != 50 {
		t.Fatalf("%d decisions, want 50", rep.Decisions)
	}
	// The last decision was due at 49 ms and ended at 250 ms at the earliest.
	if max := rep.Latency.Max; max < 150*time.Millisecond {
		t.Errorf("max latency %v, want at least 150ms (from the due instant)", max)
	}
}

// TestRatePaces checks that a rate spreads decisions over time: 20 decisions
// at 200/s cannot end before the last one is due, 95 ms after the start.
func TestRatePaces(t *testing.T) {
	start := time.Now()
	rep, err := bench.Run(context.Background(), slowTarget{0},
		bench.Config{Concurrency: 4, Requests: 20, Rate: 200, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Decisions != 20 {
		t.Fatalf("%d decisions, want 20", rep.Decisions)
	}
	if el := time.Since(start); el < 95*time.Millisecond {
		t.Errorf("20 decisions at 200/s took %v, want at least 95ms", el)
	}
}
