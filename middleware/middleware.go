// Package middleware rate-limits net/http handlers with floodgate.
//
// Two constructors return a func(http.Handler) http.Handler:
//
//   - [New] limits each request by a key computed in Go (a client address, an
//     API key, a user id) against limits given in Go, on a
//     [floodgate.Limiter]'s store.
//   - [Rules] maps each request to descriptors with the request mapping of a
//     rule file (see docs/configuration.md) and decides them with an
//     [engine.Engine]: the same rules and decision path as Envoy's gRPC front.
//
// # Responses
//
// An admitted request reaches the wrapped handler with the draft-10
// RateLimit-Policy and RateLimit header fields already set on the response
// (one policy per limit; see package headers), unless [Options.OmitHeaders].
// A denied request is answered 429 Too Many Requests with those fields,
// Retry-After in whole seconds rounded up (none when no wait can help), and a
// small RFC 9457 problem body of the draft's quota-exceeded type:
//
//	{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded",
//	 "title":"Request cannot be satisfied as assigned quota has been exceeded",
//	 "status":429,"violated-policies":["10-per-1s"]}
//
// # Errors
//
// When no decision can be made (the store is down, the key function fails)
// [Options.OnError] chooses: by default 503 Service Unavailable with a
// problem body, or 400 for a key or cost the store rejects as invalid.
// OnError may also let the request through (fail open).
//
// # Clients behind proxies
//
// [ClientIP] keys by the client address, reading X-Forwarded-For only from
// trusted proxies (the same rule as the request mapping's client_ip source):
// a client that talks to the server directly cannot pick its own address.
package middleware

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/headers"
	"github.com/floodgate/floodgate/rules"
)

// ErrKey is wrapped by the error [Options.OnError] gets when the key
// function fails.
var ErrKey = errors.New("middleware: cannot compute the rate-limit key")

// KeyFunc returns the key that identifies a request's client. An empty key
// with a nil error leaves the request unlimited (it is served without
// headers). A non-nil error is handed to [Options.OnError], wrapped with
// [ErrKey].
type KeyFunc func(r *http.Request) (string, error)

// ClientIP returns a KeyFunc keying by the client address, as
// [rules.ClientIP] finds it: the direct peer, or when that peer is within
// trusted, the first untrusted address of X-Forwarded-For from the right.
// With no trusted prefixes X-Forwarded-For is ignored. A request without a
// peer address (RemoteAddr empty or malformed) gets an error.
func ClientIP(trusted ...netip.Prefix) KeyFunc {
	trusted = append([]netip.Prefix(nil), trusted...)
	return func(r *http.Request) (string, error) {
		a, ok := rules.ClientIP(r, trusted)
		if !ok {
			return "", fmt.Errorf("no client address in RemoteAddr %q", r.RemoteAddr)
		}
		return a.String(), nil
	}
}

// Header returns a KeyFunc keying by the value of the request header name;
// a request without it is not limited.
func Header(name string) KeyFunc {
	name = http.CanonicalHeaderKey(name)
	return func(r *http.Request) (string, error) { return r.Header.Get(name), nil }
}

// Options configures the middleware. The zero value is ready to use: cost 1,
// draft headers on every response, no legacy headers, 503 on store errors.
type Options struct {
	// OmitHeaders, when true, leaves RateLimit-Policy and RateLimit off
	// admitted responses. Denials carry them regardless. Default false.
	OmitHeaders bool
	// Legacy, when true, adds X-RateLimit-Limit, X-RateLimit-Remaining and
	// X-RateLimit-Reset (seconds) to every response that gets the draft
	// fields. Default false.
	Legacy bool
	// Names names the policies of [New]'s limits in the header fields, one
	// per limit, in order. Missing or empty names are derived from the limit
	// ("10-per-1s"). [Rules] names a policy after its rule instead (see
	// [Rules]). Default none.
	Names []string
	// Cost returns the cost of a request. Nil means 1 for every request. A
	// cost of 0 peeks: the request is served without being counted or
	// denied, and its headers show the current state. A negative cost or one
	// above floodgate.MaxCost is an invalid request (see OnError).
	Cost func(r *http.Request) int64
	// OnError is called when no decision can be made: err wraps [ErrKey],
	// floodgate.ErrInvalid (a key or cost the store rejects), or the store's
	// error (for [Rules], engine.ErrStore). It either writes a response and
	// returns false, or writes nothing and returns true to serve the request
	// unlimited (fail open). Nil means [DefaultOnError]. This is where failure
	// policies plug in.
	OnError func(w http.ResponseWriter, r *http.Request, err error) (serve bool)
	// Logger receives a warning for each decision error. Nil discards.
	Logger *slog.Logger
	// Now, when set, is the clock decisions are made at instead of the
	// store's: for tests that must not depend on when they run. Default nil.
	Now func() time.Time
}

// DefaultOnError answers 400 Bad Request for errors wrapping [ErrKey] or
// floodgate.ErrInvalid and 503 Service Unavailable for the others, with a
// problem+json body; it never serves the request.
func DefaultOnError(w http.ResponseWriter, r *http.Request, err error) bool {
	if errors.Is(err, ErrKey) || errors.Is(err, floodgate.ErrInvalid) {
		WriteProblem(w, Problem{Type: "about:blank", Title: "Bad Request", Status: http.StatusBadRequest,
			Detail: "the request cannot be rate-limited: " + err.Error()})
		return false
	}
	// The store's error may name addresses; it goes to the log, not the client.
	WriteProblem(w, Problem{Type: "about:blank", Title: "Service Unavailable", Status: http.StatusServiceUnavailable,
		Detail: "the rate limiter cannot decide right now"})
	return false
}

// QuotaExceeded is the problem type of a denial, from
// draft-ietf-httpapi-ratelimit-headers-10.
const QuotaExceeded = "https://iana.org/assignments/http-problem-types#quota-exceeded"

// Problem is an RFC 9457 problem details body, with the draft's
// violated-policies extension member.
type Problem struct {
	Type             string   `json:"type"`
	Title            string   `json:"title"`
	Status           int      `json:"status"`
	Detail           string   `json:"detail,omitempty"`
	ViolatedPolicies []string `json:"violated-policies,omitempty"`
}

// WriteProblem writes p as an application/problem+json response with status
// p.Status.
func WriteProblem(w http.ResponseWriter, p Problem) {
	b, err := json.Marshal(p)
	if err != nil { // cannot happen for this type
		b = []byte(`{"type":"about:blank"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(b, '\n'))
}

// denied writes the 429 answer for policies (headers already set).
func denied(w http.ResponseWriter, violated []string) {
	WriteProblem(w, Problem{
		Type:             QuotaExceeded,
		Title:            "Request cannot be satisfied as assigned quota has been exceeded",
		Status:           http.StatusTooManyRequests,
		ViolatedPolicies: violated,
	})
}

// common holds what both middlewares share.
type common struct {
	opts    Options
	onError func(http.ResponseWriter, *http.Request, error) bool
	logger  *slog.Logger
}

func newCommon(opts Options) common {
	c := common{opts: opts, onError: opts.OnError, logger: opts.Logger}
	if c.onError == nil {
		c.onError = DefaultOnError
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *common) cost(r *http.Request) int64 {
	if c.opts.Cost == nil {
		return 1
	}
	return c.opts.Cost(r)
}

// fields returns the header fields for a response.
func (c *common) fields(deny bool) headers.Fields {
	var f headers.Fields
	if deny || !c.opts.OmitHeaders {
		f = headers.Draft
		if c.opts.Legacy {
			f |= headers.Legacy
		}
	}
	if deny {
		f |= headers.RetryAfter
	}
	return f
}

// fail handles a decision error and reports whether to serve the request.
func (c *common) fail(w http.ResponseWriter, r *http.Request, err error) bool {
	c.logger.Warn("rate limit: no decision", "method", r.Method, "path", r.URL.Path, "err", err)
	return c.onError(w, r, err)
}

// New returns a middleware limiting each request, keyed by key, against
// limits (all must admit it; a denial consumes nothing) on l's store. It
// returns an error when a limit is invalid or there are none, or when l or
// key is nil. The middleware is safe for concurrent use.
func New(l *floodgate.Limiter, key KeyFunc, opts Options, limits ...floodgate.Limit) (func(http.Handler) http.Handler, error) {
	if l == nil || l.Store() == nil {
		return nil, errors.New("middleware: New: nil limiter or limiter without a store")
	}
	if key == nil {
		return nil, errors.New("middleware: New: nil key function")
	}
	if len(limits) == 0 {
		return nil, fmt.Errorf("middleware: New: no limits: %w", floodgate.ErrInvalid)
	}
	for i, lim := range limits {
		if err := lim.Validate(); err != nil {
			return nil, fmt.Errorf("middleware: New: limits[%d]: %w", i, err)
		}
	}
	k := &keyed{
		common: newCommon(opts),
		store:  l.Store(),
		key:    key,
		limits: append([]floodgate.Limit(nil), limits...),
		names:  make([]string, len(limits)),
	}
	copy(k.names, opts.Names)
	n := len(limits)
	k.pool.New = func() any {
		return &scratch{each: make([]floodgate.Result, n), policies: make([]headers.Policy, n)}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { k.serve(w, r, next) })
	}, nil
}

// keyed is the middleware of New.
type keyed struct {
	common
	store  floodgate.Store
	key    KeyFunc
	limits []floodgate.Limit
	names  []string
	pool   sync.Pool // of *scratch
}

// scratch is the per-request memory of a keyed middleware, reused.
type scratch struct {
	ops      [1]floodgate.Op
	each     []floodgate.Result
	policies []headers.Policy
}

func (k *keyed) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	key, err := k.key(r)
	if err != nil {
		if k.fail(w, r, fmt.Errorf("%w: %w", ErrKey, err)) {
			next.ServeHTTP(w, r)
		}
		return
	}
	if key == "" {
		next.ServeHTTP(w, r)
		return
	}
	cost := k.cost(r)
	s := k.pool.Get().(*scratch)
	op := &s.ops[0]
	*op = floodgate.Op{Key: key, Limits: k.limits, Cost: cost, Each: s.each}
	if k.opts.Now != nil {
		op.Now = floodgate.UnixMicro(k.opts.Now())
	}
	if err := k.store.Decide(r.Context(), s.ops[:]); err != nil || op.Err != nil {
		if err == nil {
			err = op.Err
		}
		k.pool.Put(s)
		if k.fail(w, r, fmt.Errorf("middleware: key %q: %w", key, err)) {
			next.ServeHTTP(w, r)
		}
		return
	}
	deny := cost > 0 && !op.Result.Allowed
	for i := range s.policies {
		s.policies[i] = headers.Policy{Name: k.names[i], Result: s.each[i]}
	}
	headers.Set(w.Header(), k.fields(deny), s.policies...)
	var violated []string
	if deny {
		for _, p := range s.policies {
			if !p.Result.Allowed {
				violated = append(violated, p.String())
			}
		}
	}
	*op = floodgate.Op{}
	k.pool.Put(s)
	if deny {
		denied(w, violated)
		return
	}
	next.ServeHTTP(w, r)
}
