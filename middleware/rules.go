package middleware

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/headers"
)

// Rules returns a middleware that decides each request with e under the
// rules e has in force at that moment (so a reloaded file applies to the
// next request):
//
//  1. The request is mapped to descriptors of domain by the domain's
//     requests block ([rules.Set.Descriptors]: client_ip with trusted
//     proxies, header, api_key, path, method, constant). A request that maps
//     to no descriptor (no requests block, or no condition holds) is served
//     unlimited, without headers.
//  2. Every descriptor is decided by e in one store call, with the request's
//     cost ([Options.Cost]) as each descriptor's hits.
//  3. The request is denied when any descriptor is over its limit; a denial
//     consumes nothing from the descriptors it was denied by (each
//     descriptor is atomic on its own, as in Envoy's service: the others
//     admitted count).
//
// Each limit of a decided descriptor is one policy in the header fields,
// named after its rule: rate_limit.name when given, else the rule's id
// ("edge.remote_address"); a rule with several limits adds each limit's
// derived name ("edge.api/10-per-1s"). Rules in shadow_mode are decided and
// counted but never deny and are not advertised; unlimited, replaced and
// unmatched descriptors are not advertised either. A requests_per_unit 0 rule
// denies with no Retry-After (no wait helps) and is named in the problem's
// violated-policies.
//
// A rule with a concurrency limit counts requests in flight: each admitted
// request holds a lease ([engine.Status.Lease]) until the wrapped handler
// returns, or until the request is denied by another descriptor, and a
// lease its instance never gave back (the process died) expires after the
// limit's window.
//
// Rules returns an error when e is nil or domain is empty. The middleware is
// safe for concurrent use.
func Rules(e *engine.Engine, domain string, opts Options) (func(http.Handler) http.Handler, error) {
	if e == nil {
		return nil, errors.New("middleware: Rules: nil engine")
	}
	if domain == "" {
		return nil, errors.New("middleware: Rules: empty domain")
	}
	m := &ruled{common: newCommon(opts), engine: e, domain: domain}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.serve(w, r, next) })
	}, nil
}

// ruled is the middleware of Rules.
type ruled struct {
	common
	engine *engine.Engine
	domain string
}

func (m *ruled) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	descs := m.engine.Rules().Descriptors(m.domain, r)
	if len(descs) == 0 {
		next.ServeHTTP(w, r)
		return
	}
	cost := m.cost(r)
	var hits []int64
	if cost != 1 {
		hits = make([]int64, len(descs))
		for i := range hits {
			hits[i] = cost
		}
	}
	var sts []engine.Status
	var code engine.Code
	var err error
	var now time.Time
	if m.opts.Now != nil {
		now = m.opts.Now()
	}
	sts, code, err = m.engine.DecideWithLeases(r.Context(), now, m.domain, descs, hits)
	if err != nil {
		if m.fail(w, r, fmt.Errorf("middleware: domain %q: %w", m.domain, err)) {
			next.ServeHTTP(w, r)
		}
		return
	}
	if held(sts) {
		defer m.release(r, sts)
	}
	deny := cost > 0 && code == engine.OverLimit
	var stack [8]headers.Policy
	policies := headers.Policies(stack[:0], sts)
	var violated []string
	if deny {
		for i := range sts {
			if st := &sts[i]; st.Code == engine.OverLimit && st.Match.Deny {
				violated = append(violated, headers.RuleName(st))
			}
		}
		for _, p := range policies {
			if !p.Result.Allowed {
				violated = append(violated, p.Name)
			}
		}
	}
	headers.Set(w.Header(), m.fields(deny), policies...)
	if deny {
		denied(w, violated)
		return
	}
	next.ServeHTTP(w, r)
}

// held reports whether a status holds a concurrency lease.
func held(sts []engine.Status) bool {
	for i := range sts {
		if sts[i].Lease != "" {
			return true
		}
	}
	return false
}

// releaseTimeout bounds the release of a request's leases.
const releaseTimeout = 5 * time.Second

// release gives back the concurrency leases of a request that is done
// (served, denied by another descriptor, or cut off by its client): the
// release does not end with the request's context. A lease that cannot be
// released expires after its limit's window.
func (m *ruled) release(r *http.Request, sts []engine.Status) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), releaseTimeout)
	defer cancel()
	if err := m.engine.Release(ctx, sts); err != nil {
		m.logger.Warn("rate limit: concurrency leases not released; they expire after their window", "method", r.Method, "path", r.URL.Path, "err", err)
	}
}
