package floodgate

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Algorithm names one of the decision algorithms. The zero value is not a
// valid algorithm; [Limit.Validate] rejects it.
type Algorithm uint8

// The algorithms. Their formulas, memory per key and behaviour at window edges
// are in docs/algorithms.md.
const (
	// FixedWindow counts cost in windows aligned to the Unix epoch: a one-minute
	// window starts on the minute, a one-day window at 00:00 UTC, as Envoy's
	// rate-limit service does.
	FixedWindow Algorithm = iota + 1
	// SlidingWindowLog keeps every admitted event of the last window and is
	// exact: in every interval of length Window, admitted cost <= Quota.
	SlidingWindowLog
	// SlidingWindow is the sliding window counter: the previous aligned window's
	// count weighted by its overlap with the sliding window, plus the current one.
	SlidingWindow
	// TokenBucket refills continuously at Quota per Window up to Burst tokens.
	TokenBucket
	// GCRA is the generic cell rate algorithm (a leaky bucket used as a meter):
	// one timestamp per key, Burst requests at once from rest, then one every
	// Window/Quota.
	GCRA
	// Concurrency holds at most Quota units in flight; a lease that is not
	// released expires Window after it was acquired.
	Concurrency
)

var algorithmNames = [...]string{
	FixedWindow:      "fixed_window",
	SlidingWindowLog: "sliding_window_log",
	SlidingWindow:    "sliding_window",
	TokenBucket:      "token_bucket",
	GCRA:             "gcra",
	Concurrency:      "concurrency",
}

// Algorithms lists every algorithm, in declaration order.
var Algorithms = []Algorithm{FixedWindow, SlidingWindowLog, SlidingWindow, TokenBucket, GCRA, Concurrency}

// String returns the algorithm's name as rule files and the HTTP API spell it:
// fixed_window, sliding_window_log, sliding_window, token_bucket, gcra,
// concurrency.
func (a Algorithm) String() string {
	if a == 0 || int(a) >= len(algorithmNames) {
		return fmt.Sprintf("algorithm(%d)", a)
	}
	return algorithmNames[a]
}

// ParseAlgorithm returns the algorithm named s (see [Algorithm.String]).
func ParseAlgorithm(s string) (Algorithm, error) {
	for a, name := range algorithmNames {
		if name != "" && name == s {
			return Algorithm(a), nil
		}
	}
	return 0, fmt.Errorf("floodgate: unknown algorithm %q (want fixed_window, sliding_window_log, sliding_window, token_bucket, gcra or concurrency)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (a Algorithm) MarshalText() ([]byte, error) {
	if a == 0 || int(a) >= len(algorithmNames) {
		return nil, fmt.Errorf("floodgate: cannot marshal %v", a)
	}
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *Algorithm) UnmarshalText(b []byte) error {
	v, err := ParseAlgorithm(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Limits on the numbers in a Limit. They keep every intermediate value of
// every algorithm below 2^53, so that the Redis scripts (whose Lua numbers are
// doubles) compute exactly what the in-memory store computes.
const (
	// MaxQuota is the largest Quota and Burst.
	MaxQuota = 1 << 40
	// MaxWindow is the longest Window: 366 days.
	MaxWindow = 366 * 24 * time.Hour
	// MinWindow is the shortest Window.
	MinWindow = time.Millisecond
	// MaxCost is the largest cost of one request. Larger costs are rejected
	// with [ErrInvalid]; a cost above a limit's capacity but within MaxCost is
	// a denial whose RetryAfter is [Never].
	MaxCost = MaxQuota
)

// exactLimit is the bound every intermediate value stays under (2^53).
const exactLimit = 1 << 53

// ErrInvalid is wrapped by every error about a bad limit, key or cost.
var ErrInvalid = errors.New("invalid")

// Limit is one rate limit: at most Quota units of cost per Window, decided by
// Algorithm.
//
// Worked example: Limit{Algorithm: TokenBucket, Quota: 100, Window: time.Minute,
// Burst: 20} refills one token every 600ms (100 per minute) into a bucket that
// holds at most 20, so a client at rest may send 20 requests at once and then
// one every 600ms. Limit{Algorithm: FixedWindow, Quota: 10, Window: time.Second}
// admits 10 per clock second: 10 at 12:00:00.999 and 10 more at 12:00:01.000.
//
// The zero value is not a valid limit; [Limit.Validate] says what is wrong.
type Limit struct {
	// Algorithm decides how cost is counted. Required.
	Algorithm Algorithm
	// Quota is the cost admitted per Window (for Concurrency: the most units
	// held at once). Required, 1 to MaxQuota.
	Quota int64
	// Window is the period Quota applies to, any length from MinWindow to
	// MaxWindow in whole milliseconds ("30s", "5m", "36h"). For Concurrency it is
	// the lease time to live: a lease not released within Window expires.
	Window time.Duration
	// Burst is the most cost admitted at once from rest by TokenBucket (the
	// bucket's capacity) and GCRA (the number of back-to-back requests). Zero
	// means Quota. The other algorithms ignore it and must leave it zero.
	Burst int64
}

// Capacity is the most cost a single request can ever be admitted with:
// Burst for TokenBucket and GCRA (Quota when Burst is zero), Quota otherwise.
func (l Limit) Capacity() int64 {
	if (l.Algorithm == TokenBucket || l.Algorithm == GCRA) && l.Burst > 0 {
		return l.Burst
	}
	return l.Quota
}

// String formats the limit as "token_bucket 100/1m0s burst 20".
func (l Limit) String() string {
	s := fmt.Sprintf("%v %d/%v", l.Algorithm, l.Quota, l.Window)
	if l.Burst != 0 {
		s += fmt.Sprintf(" burst %d", l.Burst)
	}
	return s
}

// Validate reports whether the limit can be decided, with an error that names
// the field and the value when it cannot. The error wraps [ErrInvalid].
func (l Limit) Validate() error {
	switch {
	case l.Algorithm == 0 || int(l.Algorithm) >= len(algorithmNames):
		return fmt.Errorf("floodgate: limit algorithm %d: %w: want one of fixed_window, sliding_window_log, sliding_window, token_bucket, gcra, concurrency", l.Algorithm, ErrInvalid)
	case l.Quota < 1 || l.Quota > MaxQuota:
		return fmt.Errorf("floodgate: limit quota %d: %w: want 1 to %d", l.Quota, ErrInvalid, int64(MaxQuota))
	case l.Window < MinWindow || l.Window > MaxWindow:
		return fmt.Errorf("floodgate: limit window %v: %w: want %v to %v", l.Window, ErrInvalid, MinWindow, MaxWindow)
	case l.Window%time.Millisecond != 0:
		return fmt.Errorf("floodgate: limit window %v: %w: want whole milliseconds", l.Window, ErrInvalid)
	case l.Burst < 0 || l.Burst > MaxQuota:
		return fmt.Errorf("floodgate: limit burst %d: %w: want 0 (same as quota) to %d", l.Burst, ErrInvalid, int64(MaxQuota))
	case l.Burst != 0 && l.Algorithm != TokenBucket && l.Algorithm != GCRA:
		return fmt.Errorf("floodgate: limit burst %d: %w: only token_bucket and gcra take a burst, not %v", l.Burst, ErrInvalid, l.Algorithm)
	}
	w := micros(l.Window)
	switch l.Algorithm {
	case SlidingWindow:
		// The previous window's count is weighted in milliseconds.
		if l.Quota > exactLimit/(w/1000) {
			return fmt.Errorf("floodgate: limit %v: %w: quota × window in ms must stay under 2^53", l, ErrInvalid)
		}
	case TokenBucket:
		_, wr := reduced(l.Quota, w)
		if l.Capacity() > (exactLimit-1)/wr/2 {
			return fmt.Errorf("floodgate: limit %v: %w: burst × window/gcd(quota, window in µs) must stay under 2^52; use a rounder quota or window", l, ErrInvalid)
		}
	case GCRA:
		// Divide rather than multiply: the product can overflow int64.
		if l.Capacity() > exactLimit/4/interval(l) {
			return fmt.Errorf("floodgate: limit %v: %w: burst × emission interval must stay under 2^51", l, ErrInvalid)
		}
	}
	return nil
}

// ValidateCost reports whether cost can be asked of a limit: 0 (a peek) to
// [MaxCost]. The error wraps [ErrInvalid].
func ValidateCost(cost int64) error {
	if cost < 0 || cost > MaxCost {
		return fmt.Errorf("floodgate: cost %d: %w: want 0 to %d", cost, ErrInvalid, int64(MaxCost))
	}
	return nil
}

// MaxKeyLen is the longest key, in bytes.
const MaxKeyLen = 1024

// ValidateKey reports whether key can be limited: 1 to [MaxKeyLen] bytes.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("floodgate: empty key: %w", ErrInvalid)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("floodgate: key of %d bytes: %w: want at most %d", len(key), ErrInvalid, MaxKeyLen)
	}
	return nil
}

// micros converts a duration to whole microseconds.
func micros(d time.Duration) int64 { return int64(d / time.Microsecond) }

// gcd returns the greatest common divisor of two positive integers.
func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// reduced returns quota and window (µs) divided by their greatest common
// divisor: the token bucket refills qr units every wr microseconds, and keeps
// its level in units of 1/wr token.
func reduced(quota, windowMicros int64) (qr, wr int64) {
	g := gcd(quota, windowMicros)
	return quota / g, windowMicros / g
}

// interval returns GCRA's emission interval in microseconds: Window/Quota,
// rounded up to a whole microsecond (so the admitted rate never exceeds
// Quota per Window).
func interval(l Limit) int64 {
	w := micros(l.Window)
	return (w + l.Quota - 1) / l.Quota
}

// Never is the RetryAfter of a request that can never be admitted, because
// its cost exceeds the limit's [Limit.Capacity]. It is the largest Duration
// (about 292 years); the HTTP API spells it "never".
const Never = time.Duration(math.MaxInt64)
