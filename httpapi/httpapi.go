// Package httpapi is floodgate's HTTP JSON decision API, for clients in any
// language.
//
// # Endpoints
//
//   - POST /v1/check decides one request against one or several inline
//     limits; see [CheckRequest] and [CheckResponse]. 200 when allowed, 429
//     when denied (with a Retry-After header), 400 for a bad request (with a
//     [Problem] naming the field), 413 for a body over [MaxBodyBytes], 405 for
//     another method. When the store cannot decide, the engine's failure
//     policy does (see [Handler.UseEngine]): 200 for fail_open, 429 for
//     fail_closed, the local limiter's answer for local, with "policy" set in
//     the body; 503 when no policy applies.
//   - GET /healthz answers 200 "ok" while the process serves.
//   - POST /json is Envoy's RateLimitService as protojson, when
//     [Handler.HandleEnvoy] is called: 200 when OK, 429 when OVER_LIMIT.
//   - GET /readyz answers 200 when the rules are loaded and the store
//     answers, 503 otherwise, when [Handler.HandleReady] is called.
//
// # Durations
//
// Durations are given as Go duration strings ("30s", "1m", "1.5s") and
// answered twice: as a string and as whole milliseconds rounded up
// (reset_after and reset_after_ms). A RetryAfter of [floodgate.Never] (the
// cost exceeds what the limit can ever admit) is spelled "never", with
// retry_after_ms -1, and the 429 carries no Retry-After header.
package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rules"
)

// MaxBodyBytes is the largest request body accepted; larger bodies get 413.
const MaxBodyBytes = 64 << 10

// MaxLimits is the most limits one /v1/check request may carry.
const MaxLimits = 32

// Handler serves the HTTP API. Create it with [New]; the zero value is not
// usable. It is safe for concurrent use.
type Handler struct {
	store  floodgate.Store
	engine *engine.Engine
	logger *slog.Logger
	mux    *http.ServeMux
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler deciding with store and logging to logger (nil
// discards logs), with no failure policy: POST /v1/check answers 503 when
// the store cannot decide. The handler does not close the store.
func New(store floodgate.Store, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{store: store, engine: engine.New(store, nil, nil), logger: logger, mux: http.NewServeMux()}
	h.mux.HandleFunc("/v1/check", h.check)
	h.mux.HandleFunc("/healthz", h.healthz)
	h.mux.HandleFunc("/", h.notFound)
	return h
}

// UseEngine makes POST /v1/check decide through e ([engine.Engine.DecideOp]):
// with e's store, under e's default failure policy
// ([engine.Options.OnStoreError]) when the store cannot decide, and told to
// e's observer as front [engine.FrontCheck]. e should decide with the
// handler's store. Call it before serving.
func (h *Handler) UseEngine(e *engine.Engine) { h.engine = e }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// Problem is the body of every error response.
type Problem struct {
	// Error says what is wrong, with the offending value.
	Error string `json:"error"`
	// Field names the request field at fault in JSON path form
	// ("limit.window", "limits[1].quota"); empty when no single field is.
	Field string `json:"field,omitempty"`
}

// CheckRequest is the body of POST /v1/check:
//
//	{"key":"user:42","cost":1,"limit":{"algorithm":"token_bucket","quota":100,"window":"1m","burst":20}}
//
// Unknown fields are rejected.
type CheckRequest struct {
	// Key identifies the client: 1 to floodgate.MaxKeyLen bytes. Required.
	Key string `json:"key"`
	// Cost is the units to consume, 0 (peek) to floodgate.MaxCost. Absent
	// means 1.
	Cost *int64 `json:"cost,omitempty"`
	// Limit is the one limit to check. Exactly one of Limit and Limits is
	// required.
	Limit *LimitSpec `json:"limit,omitempty"`
	// Limits are several limits on Key (1 to MaxLimits): the request passes
	// only if all admit it, and a denial consumes nothing from any.
	Limits []LimitSpec `json:"limits,omitempty"`
	// Lease names the lease for concurrency limits: acquiring a held lease
	// renews it. Empty acquires an anonymous lease that only expires.
	Lease string `json:"lease,omitempty"`
	// Release, with Lease, releases the lease instead of acquiring. The
	// answer is then always 200, and allowed reports whether the lease was
	// still held.
	Release bool `json:"release,omitempty"`
	// Consistency is "strict" (the default: every decision atomic in the
	// store) or "approximate" (counted in this process and synced with the
	// store periodically; fixed_window and sliding_window limits only), as
	// a rule's consistency.
	Consistency string `json:"consistency,omitempty"`
}

// LimitSpec is a limit as JSON: {"algorithm":"token_bucket","quota":100,
// "window":"1m","burst":20}. Algorithm is one of fixed_window,
// sliding_window_log, sliding_window, token_bucket, gcra, concurrency; Window
// is a Go duration in whole milliseconds; Burst is optional (token_bucket and
// gcra only; 0 means Quota).
type LimitSpec struct {
	Algorithm string `json:"algorithm"`
	Quota     int64  `json:"quota"`
	Window    string `json:"window"`
	Burst     int64  `json:"burst,omitempty"`
}

// CheckResponse is the body of a 200 or 429 answer to POST /v1/check:
//
//	{"allowed":true,"limit":100,"remaining":19,"reset_after":"600ms","reset_after_ms":600,
//	 "retry_after":"0s","retry_after_ms":0,"window":"1m","algorithm":"token_bucket","burst":20}
//
// Limit, Window, Algorithm and Burst describe the limit that decided: of
// several limits, the one that denied with the longest wait, or when all
// admitted, the one with the fewest units remaining.
type CheckResponse struct {
	Allowed bool `json:"allowed"`
	// Limit is the deciding limit's quota.
	Limit     int64 `json:"limit"`
	Remaining int64 `json:"remaining"`
	// ResetAfter is how long until the limit is back to full capacity.
	ResetAfter   string `json:"reset_after"`
	ResetAfterMS int64  `json:"reset_after_ms"`
	// RetryAfter is "0s" when allowed, the wait before the same request could
	// pass when denied, or "never" (RetryAfterMS -1) when its cost exceeds
	// the limit's capacity.
	RetryAfter   string `json:"retry_after"`
	RetryAfterMS int64  `json:"retry_after_ms"`
	Window       string `json:"window"`
	Algorithm    string `json:"algorithm"`
	Burst        int64  `json:"burst,omitempty"`
	// Limits holds each limit's own result, in request order, when the
	// request used "limits".
	Limits []CheckResponse `json:"limits,omitempty"`
	// Policy is the failure policy that decided because the store could
	// not ("fail_open", "fail_closed" or "local"); absent when the store
	// decided.
	Policy string `json:"policy,omitempty"`
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r, "GET, HEAD")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, "ok\n")
	}
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusNotFound, Problem{Error: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)})
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeJSON(w, http.StatusMethodNotAllowed, Problem{Error: fmt.Sprintf("method %s not allowed on %s: want %s", r.Method, r.URL.Path, allow)})
}

func (h *Handler) check(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, http.MethodPost)
		return
	}
	op, consistency, multi, p, status := decodeCheck(w, r)
	if p != nil {
		writeJSON(w, status, p)
		return
	}
	if multi {
		op.Each = make([]floodgate.Result, len(op.Limits))
	}
	st, err := h.engine.DecideOpAs(engine.WithFront(r.Context(), engine.FrontCheck), &op, consistency)
	if err != nil {
		if errors.Is(err, floodgate.ErrInvalid) {
			writeJSON(w, http.StatusBadRequest, Problem{Error: err.Error()})
			return
		}
		if r.Context().Err() != nil {
			// The client is gone; nobody reads the answer.
			h.logger.Debug("check abandoned by client", "key", op.Key, "err", err)
		} else {
			h.logger.Warn("store cannot decide", "key", op.Key, "err", err)
		}
		writeJSON(w, http.StatusServiceUnavailable, Problem{Error: "store: " + err.Error()})
		return
	}
	res := op.Result
	body := response(res)
	if multi {
		body.Limits = make([]CheckResponse, len(op.Each))
		for i, e := range op.Each {
			body.Limits[i] = response(e)
		}
	}
	if p := st.Policy.String(); p != "" {
		body.Policy = p
		h.logger.Debug("check decided by failure policy", "key", op.Key, "policy", body.Policy, "err", st.StoreErr)
	}
	status = http.StatusOK
	if !res.Allowed && !op.Release {
		status = http.StatusTooManyRequests
		if res.RetryAfter != floodgate.Never {
			w.Header().Set("Retry-After", strconv.FormatInt(ceilDiv(res.RetryAfter, time.Second), 10))
		}
	}
	h.logger.Debug("check", "key", op.Key, "cost", op.Cost, "allowed", res.Allowed, "remaining", res.Remaining)
	writeJSON(w, status, body)
}

// response formats one result.
func response(r floodgate.Result) CheckResponse {
	c := CheckResponse{
		Allowed:      r.Allowed,
		Limit:        r.Limit.Quota,
		Remaining:    r.Remaining,
		ResetAfter:   FormatDuration(r.ResetAfter),
		ResetAfterMS: ceilDiv(r.ResetAfter, time.Millisecond),
		RetryAfter:   FormatDuration(r.RetryAfter),
		RetryAfterMS: ceilDiv(r.RetryAfter, time.Millisecond),
		Window:       FormatDuration(r.Limit.Window),
		Burst:        r.Limit.Burst,
	}
	if r.Limit.Algorithm != 0 {
		c.Algorithm = r.Limit.Algorithm.String()
	}
	if r.RetryAfter == floodgate.Never {
		c.RetryAfter, c.RetryAfterMS = "never", -1
	}
	return c
}

// ceilDiv returns d/unit rounded up, for d >= 0.
func ceilDiv(d, unit time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d-1)/unit) + 1
}

// FormatDuration formats d as time.Duration.String does, without zero
// trailing units: "1m" rather than "1m0s", "2h" rather than "2h0m0s", "1.5s",
// "600ms".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// decodeCheck reads and validates a /v1/check body into an op and its
// consistency. multi reports whether the request used "limits". On failure
// it returns the problem and its status.
func decodeCheck(w http.ResponseWriter, r *http.Request) (op floodgate.Op, c rules.Consistency, multi bool, p *Problem, status int) {
	req, p, status := readCheck(w, r)
	if p != nil {
		return op, c, false, p, status
	}
	bad := func(field, format string, args ...any) (floodgate.Op, rules.Consistency, bool, *Problem, int) {
		return floodgate.Op{}, c, false, &Problem{Error: field + ": " + fmt.Sprintf(format, args...), Field: field}, http.StatusBadRequest
	}
	if err := floodgate.ValidateKey(req.Key); err != nil {
		if req.Key == "" {
			return bad("key", "required, 1 to %d bytes", floodgate.MaxKeyLen)
		}
		return bad("key", "%d bytes: want 1 to %d", len(req.Key), floodgate.MaxKeyLen)
	}
	op.Key = req.Key
	op.Cost = 1
	if req.Cost != nil {
		op.Cost = *req.Cost
		if err := floodgate.ValidateCost(op.Cost); err != nil {
			return bad("cost", "%d: want 0 to %d", op.Cost, int64(floodgate.MaxCost))
		}
	}
	switch {
	case req.Limit != nil && req.Limits != nil:
		return bad("limits", "give limit or limits, not both")
	case req.Limit != nil:
		l, p := parseLimit(*req.Limit, "limit")
		if p != nil {
			return op, c, false, p, http.StatusBadRequest
		}
		op.Limits = []floodgate.Limit{l}
	case req.Limits != nil:
		if len(req.Limits) == 0 || len(req.Limits) > MaxLimits {
			return bad("limits", "%d limits: want 1 to %d", len(req.Limits), MaxLimits)
		}
		multi = true
		op.Limits = make([]floodgate.Limit, len(req.Limits))
		for i, s := range req.Limits {
			l, p := parseLimit(s, fmt.Sprintf("limits[%d]", i))
			if p != nil {
				return op, c, false, p, http.StatusBadRequest
			}
			op.Limits[i] = l
		}
	default:
		return bad("limit", "required (or limits)")
	}
	if req.Release && req.Lease == "" {
		return bad("lease", "release needs the lease to release")
	}
	if len(req.Lease) > floodgate.MaxKeyLen {
		return bad("lease", "%d bytes: want at most %d", len(req.Lease), floodgate.MaxKeyLen)
	}
	op.Lease, op.Release = req.Lease, req.Release
	if req.Consistency != "" {
		var err error
		if c, err = rules.ParseConsistency(req.Consistency); err != nil {
			return bad("consistency", "%v", err)
		}
	}
	if c == rules.Approximate {
		if err := rules.CheckApproximate(op.Limits); err != nil {
			return bad("consistency", "%v", err)
		}
		if op.Release {
			return bad("consistency", "approximate has no leases to release")
		}
	}
	return op, c, multi, nil, 0
}

// parseLimit converts a limit spec, naming fields under path.
func parseLimit(s LimitSpec, path string) (floodgate.Limit, *Problem) {
	bad := func(field, format string, args ...any) (floodgate.Limit, *Problem) {
		f := path + "." + field
		return floodgate.Limit{}, &Problem{Error: f + ": " + fmt.Sprintf(format, args...), Field: f}
	}
	var l floodgate.Limit
	if s.Algorithm == "" {
		return bad("algorithm", "required: want fixed_window, sliding_window_log, sliding_window, token_bucket, gcra or concurrency")
	}
	a, err := floodgate.ParseAlgorithm(s.Algorithm)
	if err != nil {
		return bad("algorithm", "unknown %q: want fixed_window, sliding_window_log, sliding_window, token_bucket, gcra or concurrency", s.Algorithm)
	}
	l.Algorithm = a
	if s.Quota < 1 || s.Quota > floodgate.MaxQuota {
		return bad("quota", "%d: want 1 to %d", s.Quota, int64(floodgate.MaxQuota))
	}
	l.Quota = s.Quota
	if s.Window == "" {
		return bad("window", `required: a Go duration such as "30s", "1m" or "24h"`)
	}
	win, err := time.ParseDuration(s.Window)
	switch {
	case err != nil:
		return bad("window", `%q is not a Go duration such as "30s", "1m" or "24h"`, s.Window)
	case win < floodgate.MinWindow || win > floodgate.MaxWindow:
		return bad("window", "%q: want %v to %v", s.Window, floodgate.MinWindow, floodgate.MaxWindow)
	case win%time.Millisecond != 0:
		return bad("window", "%q: want whole milliseconds", s.Window)
	}
	l.Window = win
	if s.Burst < 0 || s.Burst > floodgate.MaxQuota {
		return bad("burst", "%d: want 0 (same as quota) to %d", s.Burst, int64(floodgate.MaxQuota))
	}
	if s.Burst != 0 && a != floodgate.TokenBucket && a != floodgate.GCRA {
		return bad("burst", "%d: only token_bucket and gcra take a burst, not %v", s.Burst, a)
	}
	l.Burst = s.Burst
	if err := l.Validate(); err != nil {
		// A combination of fields out of range (e.g. quota × window too
		// large for exact arithmetic).
		return floodgate.Limit{}, &Problem{Error: path + ": " + strings.TrimPrefix(err.Error(), "floodgate: "), Field: path}
	}
	return l, nil
}

// writeJSON writes v as the JSON body of a response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"cannot encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
