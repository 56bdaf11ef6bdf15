package middleware

import (
	"errors"
	"fmt"
	"net/http"

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
	if m.opts.Now != nil {
		sts, code, err = m.engine.DecideAt(r.Context(), m.opts.Now(), m.domain, descs, hits)
	} else {
		sts, code, err = m.engine.Decide(r.Context(), m.domain, descs, hits)
	}
	if err != nil {
		if m.fail(w, r, fmt.Errorf("middleware: domain %q: %w", m.domain, err)) {
			next.ServeHTTP(w, r)
		}
		return
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
