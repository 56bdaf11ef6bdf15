// Package headers formats floodgate's rate-limit response header fields from
// [floodgate.Result] values, in one place for every front: the net/http
// middleware and the gateway use [Set], a gRPC front [Append]; [Policies]
// turns an engine decision into named policies.
//
// # Fields
//
// The fields follow draft-ietf-httpapi-ratelimit-headers-10. Each limit of
// a decision is one named policy ([Policy]):
//
//	RateLimit-Policy: "10-per-1s";q=10;w=1, "1000-per-86400s";q=1000;w=86400
//	RateLimit: "10-per-1s";r=0;t=1, "1000-per-86400s";r=977;t=50400
//	Retry-After: 1
//
// Both draft fields are Structured Field Lists (RFC 8941) whose items are
// sf-strings (the policy names) with parameters:
//
//   - q, the quota (Limit.Quota; for a Concurrency limit, the most units in
//     flight, with qu="concurrent-requests");
//   - w, the window in whole seconds (Limit.Window), left out when the window
//     is not a whole number of seconds (the draft has no sub-second windows)
//     and for Concurrency limits (whose Window is a lease time to live);
//   - r, the remaining units (Result.Remaining);
//   - t, the seconds until quota is made available, rounded up: for a
//     denied policy, Result.RetryAfter (so that Retry-After is never earlier
//     than t, as the draft asks); otherwise Result.ResetAfter, the time until
//     the limit is back to its full capacity.
//
// Retry-After is sent when some policy denied: the longest RetryAfter of the
// denied policies in whole seconds, rounded up (1.2s is 2). When a denied
// policy's RetryAfter is [floodgate.Never] (the cost exceeds what the limit
// can ever admit) no Retry-After is sent: no wait would help.
//
// The legacy fields X-RateLimit-Limit, X-RateLimit-Remaining and
// X-RateLimit-Reset are optional ([Legacy]). They describe one policy, the
// decisive one ([Decisive]): the denied policy with the longest wait, or
// when none denied, the one with the fewest units remaining. Reset is in
// seconds from now (the draft's t), not a Unix time, as Envoy's rate-limit
// filter sends it.
//
// # Use
//
// [Set] writes the fields into an [http.Header]; [Append] returns them as
// name/value pairs (for a gRPC response's headers to add). [AppendPolicy] and
// [AppendRateLimit] format one field value. All are safe for concurrent use;
// Set allocates one string and one slice for all its fields.
package headers

import (
	"net/http"
	"strconv"
	"time"

	"github.com/floodgate/floodgate"
)

// Field names as the draft and common practice spell them. [Set] uses their
// canonical forms (http.CanonicalHeaderKey) as map keys.
const (
	PolicyName     = "RateLimit-Policy"
	RateLimitName  = "RateLimit"
	RetryAfterName = "Retry-After"
	LegacyLimit    = "X-RateLimit-Limit"
	LegacyRemain   = "X-RateLimit-Remaining"
	LegacyReset    = "X-RateLimit-Reset"
)

// Canonical map keys of the fields.
const (
	policyKey  = "Ratelimit-Policy"
	limitKey   = "Ratelimit"
	retryKey   = "Retry-After"
	xLimitKey  = "X-Ratelimit-Limit"
	xRemainKey = "X-Ratelimit-Remaining"
	xResetKey  = "X-Ratelimit-Reset"
)

// MaxInteger is the largest Structured Field Integer (15 digits). Larger
// values (none arise from valid limits) are written as MaxInteger.
const MaxInteger = 999_999_999_999_999

// Policy is one limit of a decision and its result, as the fields describe
// it. The zero value is a policy with an empty name and quota 0.
type Policy struct {
	// Name identifies the policy in RateLimit-Policy and RateLimit. It is
	// written as an sf-string: bytes outside printable ASCII are replaced by
	// '?'. Empty means a name derived from the limit: "<quota>-per-<window>"
	// with the window in seconds ("10-per-1s") or milliseconds when not whole
	// ("5-per-1500ms"), "<quota>-concurrent" for a Concurrency limit.
	Name string
	// Result is the limit's own result (Result.Limit is the limit).
	Result floodgate.Result
}

// String returns the policy's name: Name, or when empty the name derived
// from the limit. It is the name the fields carry, before sf-string escaping.
func (p Policy) String() string {
	if p.Name != "" {
		return p.Name
	}
	var buf [48]byte
	return string(appendDerivedName(buf[:0], p.Result.Limit))
}

// Fields selects the header fields to write. The zero value writes none.
type Fields uint8

// The field groups.
const (
	// Draft writes RateLimit-Policy and RateLimit.
	Draft Fields = 1 << iota
	// RetryAfter writes Retry-After when a policy denied.
	RetryAfter
	// Legacy writes X-RateLimit-Limit, X-RateLimit-Remaining and
	// X-RateLimit-Reset.
	Legacy

	// Default is what the middleware and the gateway send unless told
	// otherwise: the draft fields and Retry-After.
	Default = Draft | RetryAfter
)

// Field is one header field as a name/value pair.
type Field struct {
	Name  string
	Value string
}

// Set writes the selected fields for policies into h, replacing any values
// they had. With no policies it writes nothing.
func Set(h http.Header, f Fields, policies ...Policy) {
	var keys [6]string
	var ends [6]int
	var stack [256]byte
	b, n := appendValues(stack[:0], &keys, &ends, f, policies)
	if n == 0 {
		return
	}
	s := string(b)
	vals := make([]string, n)
	start := 0
	for i := 0; i < n; i++ {
		vals[i] = s[start:ends[i]]
		start = ends[i]
		h[keys[i]] = vals[i : i+1 : i+1]
	}
}

// Append appends the selected fields for policies to dst as name/value pairs,
// with the names spelled as in [PolicyName] and the other constants.
func Append(dst []Field, f Fields, policies ...Policy) []Field {
	var keys [6]string
	var ends [6]int
	var stack [256]byte
	b, n := appendValues(stack[:0], &keys, &ends, f, policies)
	if n == 0 {
		return dst
	}
	s := string(b)
	start := 0
	for i := 0; i < n; i++ {
		dst = append(dst, Field{Name: displayName(keys[i]), Value: s[start:ends[i]]})
		start = ends[i]
	}
	return dst
}

func displayName(key string) string {
	switch key {
	case policyKey:
		return PolicyName
	case limitKey:
		return RateLimitName
	case retryKey:
		return RetryAfterName
	case xLimitKey:
		return LegacyLimit
	case xRemainKey:
		return LegacyRemain
	case xResetKey:
		return LegacyReset
	}
	return key
}

// appendValues appends every selected field value to b, back to back; keys[i]
// is field i's canonical name and ends[i] the end of its value in b.
func appendValues(b []byte, keys *[6]string, ends *[6]int, f Fields, policies []Policy) ([]byte, int) {
	if len(policies) == 0 {
		return b, 0
	}
	n := 0
	add := func(key string) {
		keys[n], ends[n] = key, len(b)
		n++
	}
	if f&Draft != 0 {
		b = AppendPolicy(b, policies...)
		add(policyKey)
		b = AppendRateLimit(b, policies...)
		add(limitKey)
	}
	if f&RetryAfter != 0 {
		if secs, ok := RetryAfterSeconds(policies...); ok {
			b = strconv.AppendInt(b, secs, 10)
			add(retryKey)
		}
	}
	if f&Legacy != 0 {
		p, _ := Decisive(policies...)
		b = strconv.AppendInt(b, clamp(p.Result.Limit.Quota), 10)
		add(xLimitKey)
		b = strconv.AppendInt(b, clamp(p.Result.Remaining), 10)
		add(xRemainKey)
		b = strconv.AppendInt(b, Reset(p.Result), 10)
		add(xResetKey)
	}
	return b, n
}

// AppendPolicy appends the RateLimit-Policy field value for policies to b:
// one item per policy, `"name";q=Q` then `;qu="concurrent-requests"` for a
// Concurrency limit or `;w=W` when the window is whole seconds, items
// separated by ", ".
func AppendPolicy(b []byte, policies ...Policy) []byte {
	for i, p := range policies {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendName(b, p)
		l := p.Result.Limit
		b = append(b, ";q="...)
		b = strconv.AppendInt(b, clamp(l.Quota), 10)
		if l.Algorithm == floodgate.Concurrency {
			b = append(b, `;qu="concurrent-requests"`...)
		} else if l.Window >= time.Second && l.Window%time.Second == 0 {
			b = append(b, ";w="...)
			b = strconv.AppendInt(b, clamp(int64(l.Window/time.Second)), 10)
		}
	}
	return b
}

// AppendRateLimit appends the RateLimit field value for policies to b: one
// item `"name";r=R;t=T` per policy, separated by ", ". T is [Reset].
func AppendRateLimit(b []byte, policies ...Policy) []byte {
	for i, p := range policies {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendName(b, p)
		b = append(b, ";r="...)
		b = strconv.AppendInt(b, clamp(p.Result.Remaining), 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, Reset(p.Result), 10)
	}
	return b
}

// Reset returns the t parameter of a result: the seconds, rounded up, until
// quota is made available. For a denial it is RetryAfter (ResetAfter when
// RetryAfter is [floodgate.Never]), otherwise ResetAfter.
func Reset(r floodgate.Result) int64 {
	if !r.Allowed && r.RetryAfter != floodgate.Never {
		return Seconds(r.RetryAfter)
	}
	return Seconds(r.ResetAfter)
}

// RetryAfterSeconds returns the Retry-After value for policies: the longest
// RetryAfter of the denied policies in whole seconds, rounded up. ok is false
// when no policy denied, or when a denied policy's RetryAfter is
// [floodgate.Never].
func RetryAfterSeconds(policies ...Policy) (secs int64, ok bool) {
	var longest time.Duration
	for _, p := range policies {
		if p.Result.Allowed {
			continue
		}
		if p.Result.RetryAfter == floodgate.Never {
			return 0, false
		}
		longest = max(longest, p.Result.RetryAfter)
		ok = true
	}
	if !ok {
		return 0, false
	}
	return Seconds(longest), true
}

// Decisive returns the policy that decided the request, by the rule of
// [floodgate.Result].Limit: of the denied policies the one with the longest
// RetryAfter, or when all allowed, the one with the fewest units remaining
// (ties: the longer ResetAfter, then the first). ok is false for no policies.
func Decisive(policies ...Policy) (p Policy, ok bool) {
	for i, q := range policies {
		if i == 0 {
			p = q
			continue
		}
		a, r := p.Result, q.Result
		switch {
		case a.Allowed && !r.Allowed:
			p = q
		case !a.Allowed && r.Allowed:
		case !a.Allowed:
			if r.RetryAfter > a.RetryAfter {
				p = q
			}
		default:
			if r.Remaining < a.Remaining || (r.Remaining == a.Remaining && r.ResetAfter > a.ResetAfter) {
				p = q
			}
		}
	}
	return p, len(policies) > 0
}

// Seconds returns d in whole seconds rounded up (1.2s is 2, 1s is 1, 0 and
// negative durations are 0), at most [MaxInteger].
func Seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return clamp(s)
}

func clamp(v int64) int64 {
	if v < 0 {
		return 0
	}
	return min(v, MaxInteger)
}

// appendName appends the policy's name as an sf-string.
func appendName(b []byte, p Policy) []byte {
	b = append(b, '"')
	if p.Name == "" {
		b = appendDerivedName(b, p.Result.Limit)
	} else {
		for i := 0; i < len(p.Name); i++ {
			c := p.Name[i]
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c > 0x7e:
				b = append(b, '?')
			default:
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}

// appendDerivedName appends the default name of a limit (see [Policy.Name]).
func appendDerivedName(b []byte, l floodgate.Limit) []byte {
	b = strconv.AppendInt(b, l.Quota, 10)
	if l.Algorithm == floodgate.Concurrency {
		return append(b, "-concurrent"...)
	}
	b = append(b, "-per-"...)
	if l.Window%time.Second == 0 {
		b = strconv.AppendInt(b, int64(l.Window/time.Second), 10)
		return append(b, 's')
	}
	b = strconv.AppendInt(b, int64(l.Window/time.Millisecond), 10)
	return append(b, "ms"...)
}
