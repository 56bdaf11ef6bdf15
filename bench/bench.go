// Package bench is floodgate's load generator, the library behind
// "floodgate bench": it sends decisions to a [Target] (the library in
// process, the HTTP API, the Envoy gRPC API, or a yardstick) from concurrent
// workers and reports decisions per second, latency percentiles, allowed and
// denied counts, errors, store round trips per decision when they can be
// counted, and, for a single key, an exactness check.
//
// Every run is bounded in time and, when [Config.Requests] is set, in count.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/floodgate/floodgate"
)

// Defaults of [Config].
const (
	DefaultDuration    = 10 * time.Second
	DefaultMaxDuration = 5 * time.Minute
	DefaultConcurrency = 16
	DefaultKeys        = 1
	DefaultZipfS       = 1.1
)

// Config says what a run sends. The zero value is valid: every field has a
// default.
type Config struct {
	// Duration bounds the run in time. Default [DefaultDuration] (10s) when
	// Requests is 0, else [DefaultMaxDuration] (5m) as a safety bound.
	Duration time.Duration
	// Requests, when above 0, stops the run after that many decisions.
	Requests int64
	// Concurrency is the number of workers, each with one decision in
	// flight. Default [DefaultConcurrency] (16).
	Concurrency int
	// Keys is the number of distinct keys. Default 1.
	Keys int
	// Zipf, when true, picks keys with a Zipf distribution of exponent ZipfS
	// (key 0 the hottest) instead of uniformly.
	Zipf bool
	// ZipfS is the Zipf exponent, above 1. Default [DefaultZipfS] (1.1).
	ZipfS float64
	// Hits is the cost of each decision. Default 1.
	Hits int64
	// Rate, when above 0, paces the whole run to that many decisions per
	// second: decision i is due at start + i/Rate, and its latency is
	// measured from that instant, so that a decision sent late because the
	// workers were all busy counts its wait (no coordinated omission). 0
	// sends as fast as the workers can (closed loop), and latency is
	// measured from the send.
	Rate float64
	// KeyPrefix starts every key. Default: "bench:" and a random run id, so
	// that a run starts from fresh keys.
	KeyPrefix string
	// Limit is the limit the keys are decided under, used by the exactness
	// check. Leave it zero when the target decides under limits of its own
	// (gRPC rules): the check is then skipped.
	Limit floodgate.Limit
	// Progress, when non-nil, receives a progress line every
	// ProgressInterval, rewritten in place with a carriage return.
	Progress io.Writer
	// ProgressInterval defaults to one second.
	ProgressInterval time.Duration
	// StoreCalls, when non-nil, returns the store round trips made so far
	// (a [CountingStore]'s Calls); the report then gives round trips per
	// decision.
	StoreCalls func() int64
	// RedisStats, when non-nil, returns Redis's INFO commandstats counts
	// (see [RedisCommandStats]); the report gives their change per decision.
	RedisStats func(ctx context.Context) (map[string]int64, error)
}

// Latency holds latency percentiles.
type Latency struct {
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	Max  time.Duration `json:"max_ns"`
	Mean time.Duration `json:"mean_ns"`
}

// Exactness compares the cost admitted for a single key with the most its
// limit allows in the run's elapsed time.
type Exactness struct {
	// Admitted is the cost admitted.
	Admitted int64 `json:"admitted"`
	// Allows is the most cost the limit admits in the elapsed time, from a
	// fresh key.
	Allows int64 `json:"limit_allows"`
	// OK is Admitted <= Allows.
	OK bool `json:"ok"`
}

// Report is the outcome of a run.
type Report struct {
	Elapsed     time.Duration `json:"elapsed_ns"`
	Decisions   int64         `json:"decisions"`
	PerSecond   float64       `json:"decisions_per_second"`
	Allowed     int64         `json:"allowed"`
	Denied      int64         `json:"denied"`
	Errors      int64         `json:"errors"`
	FirstError  string        `json:"first_error,omitempty"`
	Latency     Latency       `json:"latency"`
	Concurrency int           `json:"concurrency"`
	Keys        int           `json:"keys"`
	// StoreCalls is the store round trips counted, -1 when not measured.
	StoreCalls int64 `json:"store_calls"`
	// RoundTripsPerDecision is StoreCalls / Decisions, -1 when not measured.
	RoundTripsPerDecision float64 `json:"round_trips_per_decision"`
	// RedisCommands is the change of each Redis command's calls during the
	// run, when measured.
	RedisCommands map[string]int64 `json:"redis_commands,omitempty"`
	// RedisCommandsPerDecision is the sum of RedisCommands per decision, -1
	// when not measured.
	RedisCommandsPerDecision float64    `json:"redis_commands_per_decision"`
	Exactness                *Exactness `json:"exactness,omitempty"`
}

// worker is one worker's tally.
type worker struct {
	hist                  Histogram
	allowed, denied, errs int64
	admittedCost          int64
	firstErr              error
	_                     [64]byte
}

// Run sends decisions to t as cfg says until the duration passes, the
// request count is reached, or ctx ends, and returns the report.
func Run(ctx context.Context, t Target, cfg Config) (Report, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Keys <= 0 {
		cfg.Keys = DefaultKeys
	}
	if cfg.Hits <= 0 {
		cfg.Hits = 1
	}
	if cfg.ZipfS <= 1 {
		cfg.ZipfS = DefaultZipfS
	}
	if cfg.Duration <= 0 {
		cfg.Duration = DefaultDuration
		if cfg.Requests > 0 {
			cfg.Duration = DefaultMaxDuration
		}
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = time.Second
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "bench:" + strconv.FormatUint(rand.Uint64()&0xffffffffff, 36) + ":"
	}
	if cfg.Keys > 10_000_000 {
		return Report{}, fmt.Errorf("bench: %d keys: want at most 10000000", cfg.Keys)
	}
	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = cfg.KeyPrefix + strconv.Itoa(i)
	}

	var before map[string]int64
	if cfg.RedisStats != nil {
		var err error
		if before, err = cfg.RedisStats(ctx); err != nil {
			return Report{}, err
		}
	}
	var calls0 int64
	if cfg.StoreCalls != nil {
		calls0 = cfg.StoreCalls()
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var issued, done atomic.Int64
	var allowedN, deniedN, errN atomic.Int64
	start := time.Now()
	// pace waits for the next decision's turn and returns the instant it
	// was due (zero without a rate); ok is false when the run must stop
	// before it.
	var interval time.Duration
	var slot atomic.Int64
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.Rate)
	}
	pace := func() (due time.Time, ok bool) {
		if cfg.Requests > 0 && issued.Add(1) > cfg.Requests {
			return due, false
		}
		if ctx.Err() != nil {
			return due, false
		}
		if interval > 0 {
			due = start.Add(time.Duration(slot.Add(1)-1) * interval)
			if d := time.Until(due); d > 0 {
				tm := time.NewTimer(d)
				select {
				case <-tm.C:
				case <-ctx.Done():
					tm.Stop()
					return due, false
				}
			}
		}
		return due, true
	}

	workers := make([]worker, cfg.Concurrency)
	var wg sync.WaitGroup
	for w := range workers {
		wk := &workers[w]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(rand.Uint64(), uint64(w)))
			var zipf *rand.Zipf
			if cfg.Zipf && cfg.Keys > 1 {
				zipf = rand.NewZipf(rng, cfg.ZipfS, 1, uint64(cfg.Keys-1))
			}
			for {
				due, ok := pace()
				if !ok {
					break
				}
				k := 0
				switch {
				case zipf != nil:
					k = int(zipf.Uint64())
				case cfg.Keys > 1:
					k = rng.IntN(cfg.Keys)
				}
				t0 := time.Now()
				if !due.IsZero() && due.Before(t0) {
					t0 = due
				}
				allowed, err := t.Decide(ctx, keys[k], cfg.Hits)
				t1 := time.Now()
				if err != nil && cutByEnd(ctx, deadline, t1, err) {
					// The run ended during this decision: not counted,
					// neither as an error nor as a decision, nor timed.
					return
				}
				wk.hist.Record(t1.Sub(t0))
				switch {
				case err != nil:
					wk.errs++
					errN.Add(1)
					if wk.firstErr == nil {
						wk.firstErr = err
					}
				case allowed:
					wk.allowed++
					wk.admittedCost += cfg.Hits
					allowedN.Add(1)
				default:
					wk.denied++
					deniedN.Add(1)
				}
				done.Add(1)
			}
		})
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if cfg.Progress == nil {
			return
		}
		tk := time.NewTicker(cfg.ProgressInterval)
		defer tk.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-stopProgress:
				fmt.Fprint(cfg.Progress, "\r\033[K")
				return
			case now := <-tk.C:
				n := done.Load()
				rate := float64(n-last) / now.Sub(lastAt).Seconds()
				last, lastAt = n, now
				fmt.Fprintf(cfg.Progress, "\r\033[K%6.1fs  %d decisions  %.0f/s  allowed %d  denied %d  errors %d",
					now.Sub(start).Seconds(), n, rate, allowedN.Load(), deniedN.Load(), errN.Load())
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	<-progressDone

	var rep Report
	var hist Histogram
	var admitted int64
	var firstErr error
	for i := range workers {
		wk := &workers[i]
		hist.Merge(&wk.hist)
		rep.Allowed += wk.allowed
		rep.Denied += wk.denied
		rep.Errors += wk.errs
		admitted += wk.admittedCost
		if firstErr == nil {
			firstErr = wk.firstErr
		}
	}
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
	}
	rep.Elapsed = elapsed
	rep.Decisions = rep.Allowed + rep.Denied + rep.Errors
	rep.PerSecond = float64(rep.Decisions) / elapsed.Seconds()
	rep.Concurrency, rep.Keys = cfg.Concurrency, cfg.Keys
	rep.Latency = Latency{
		P50: hist.Quantile(0.50), P90: hist.Quantile(0.90), P99: hist.Quantile(0.99),
		Max: hist.Max(), Mean: hist.Mean(),
	}
	rep.StoreCalls, rep.RoundTripsPerDecision = -1, -1
	if cfg.StoreCalls != nil {
		rep.StoreCalls = cfg.StoreCalls() - calls0
		if rep.Decisions > 0 {
			rep.RoundTripsPerDecision = float64(rep.StoreCalls) / float64(rep.Decisions)
		}
	}
	rep.RedisCommandsPerDecision = -1
	if cfg.RedisStats != nil {
		after, err := cfg.RedisStats(context.WithoutCancel(ctx))
		if err != nil {
			return rep, err
		}
		rep.RedisCommands = map[string]int64{}
		var sum int64
		for k, v := range after {
			if d := v - before[k]; d > 0 && k != "info" {
				rep.RedisCommands[k] = d
				sum += d
			}
		}
		if rep.Decisions > 0 {
			rep.RedisCommandsPerDecision = float64(sum) / float64(rep.Decisions)
		}
	}
	if cfg.Keys == 1 && cfg.Limit.Validate() == nil && cfg.Limit.Algorithm != floodgate.Concurrency {
		allows := Allows(cfg.Limit, start, start.Add(elapsed))
		rep.Exactness = &Exactness{Admitted: admitted, Allows: allows, OK: admitted <= allows}
	}
	return rep, nil
}

// cutByEnd reports whether err, returned at now by a decision of a run
// whose context is ctx with the given deadline, is the run's own end
// cutting the decision short rather than a failure of the target: ctx is
// done, or err is a deadline (the context's, or a gRPC DeadlineExceeded
// status) at or past the run's deadline. A target may see the deadline
// pass before the context's timer has cancelled ctx: the gRPC client, for
// one, fails a call with DeadlineExceeded from the deadline itself. A
// deadline error before the run's deadline is the target's own failure.
func cutByEnd(ctx context.Context, deadline, now time.Time, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	// A Redis client (go-redis) turns the context's deadline into the
	// socket's, and fails with the socket's timeout (os.ErrDeadlineExceeded).
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) &&
		status.Code(err) != codes.DeadlineExceeded {
		return false
	}
	return !deadline.IsZero() && !now.Before(deadline)
}

// Allows returns the most cost l admits to one fresh key between from and
// to (inclusive): whole aligned windows for the fixed window and the
// sliding window counter, Quota per started window for the sliding log,
// the burst plus the refill for the token bucket and GCRA. It is
// math.MaxInt64 for a Concurrency limit, which bounds what is held, not
// what passes.
func Allows(l floodgate.Limit, from, to time.Time) int64 {
	w := l.Window.Microseconds()
	a, b := from.UnixMicro(), to.UnixMicro()
	e := b - a
	switch l.Algorithm {
	case floodgate.FixedWindow, floodgate.SlidingWindow:
		return (b/w - a/w + 1) * l.Quota
	case floodgate.SlidingWindowLog:
		return (e/w + 1) * l.Quota
	case floodgate.TokenBucket:
		// Quota per Window, rounded down, on top of the full bucket.
		return l.Capacity() + int64(float64(e)*float64(l.Quota)/float64(w))
	case floodgate.GCRA:
		t := (w + l.Quota - 1) / l.Quota
		return l.Capacity() + e/t
	}
	return math.MaxInt64
}
