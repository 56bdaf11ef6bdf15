package bench_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/floodgate/floodgate/bench"
)

// errTarget fails every decision with err at once, as a gRPC client fails
// a call with DeadlineExceeded once the deadline has passed, before the
// context's timer has cancelled the context.
type errTarget struct{ err error }

func (e errTarget) Decide(context.Context, string, int64) (bool, error) { return false, e.err }
func (errTarget) Close() error                                          { return nil }

// fixedDeadline is a context with a deadline that is never cancelled: the
// instant after the deadline and before the context's timer fires, held
// for the whole run.
type fixedDeadline struct {
	context.Context
	dl time.Time
}

func (f fixedDeadline) Deadline() (time.Time, bool) { return f.dl, true }

// Decisions cut by the run's own deadline are neither errors nor decisions;
// a deadline error before the run's deadline is the target's failure and
// counts.
func TestRunDeadlineCut(t *testing.T) {
	const n = 40
	for _, tc := range []struct {
		name     string
		err      error
		dl       time.Time
		wantErrs int64
	}{
		{"grpc status past the deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), time.Now(), 0},
		{"wrapped context error past the deadline", fmt.Errorf("post: %w", context.DeadlineExceeded), time.Now(), 0},
		{"socket deadline past the deadline", fmt.Errorf("redis: decide key %q: read tcp: %w", "k", os.ErrDeadlineExceeded), time.Now(), 0},
		{"socket deadline before the deadline", fmt.Errorf("redis: read tcp: %w", os.ErrDeadlineExceeded), time.Now().Add(time.Hour), n},
		{"grpc status before the deadline", status.Error(codes.DeadlineExceeded, "server timeout"), time.Now().Add(time.Hour), n},
		{"other error past the deadline", status.Error(codes.Unavailable, "connection refused"), time.Now(), n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The run's context keeps the deadline and is never cancelled:
			// the run is bounded by the request count.
			ctx := fixedDeadline{Context: context.Background(), dl: tc.dl}
			rep, err := bench.Run(ctx, errTarget{tc.err}, bench.Config{Requests: n, Concurrency: 4})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Errors != tc.wantErrs || rep.Decisions != tc.wantErrs || rep.Allowed != 0 || rep.Denied != 0 {
				t.Errorf("errors %d, decisions %d (allowed %d, denied %d); want %d errors and as many decisions",
					rep.Errors, rep.Decisions, rep.Allowed, rep.Denied, tc.wantErrs)
			}
		})
	}
}
