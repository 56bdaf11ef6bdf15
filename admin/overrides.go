package admin

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/httpapi"
	"github.com/floodgate/floodgate/overrides"
	"github.com/floodgate/floodgate/rules"
)

// MaxOverrideLimits is the most limits one override may carry.
const MaxOverrideLimits = 8

// OverrideRequest is the body of PUT /admin/v1/overrides:
//
//	{"domain":"api","descriptor":[{"key":"api_key","value":"k1"}],
//	 "limits":[{"algorithm":"token_bucket","quota":1000,"window":"1m"}],
//	 "expires_in":"24h","reason":"launch week"}
//
// Unknown fields are rejected.
type OverrideRequest struct {
	Domain     string  `json:"domain"`
	Descriptor []Entry `json:"descriptor"`
	// Limits replace the rule's for this descriptor: 1 to
	// MaxOverrideLimits, written as in POST /v1/check.
	Limits []httpapi.LimitSpec `json:"limits"`
	// ExpiresIn, a Go duration, ends the override that long from now.
	// Empty: until it is deleted.
	ExpiresIn string `json:"expires_in,omitempty"`
	// Reason is kept with the override and in the audit log.
	Reason string `json:"reason,omitempty"`
}

// OverrideView is an override as the API answers it.
type OverrideView struct {
	Domain     string      `json:"domain"`
	Descriptor []Entry     `json:"descriptor"`
	Rule       string      `json:"rule"`
	Key        string      `json:"key"`
	Limits     []LimitView `json:"limits"`
	Expires    *time.Time  `json:"expires,omitempty"`
	Expired    bool        `json:"expired,omitempty"`
	Reason     string      `json:"reason,omitempty"`
	SetAt      time.Time   `json:"set_at"`
	SetBy      string      `json:"set_by,omitempty"`
}

// OverridesResponse is the answer to GET /admin/v1/overrides.
type OverridesResponse struct {
	Overrides []OverrideView `json:"overrides"`
}

func (h *Handler) overrideView(o overrides.Override) OverrideView {
	v := OverrideView{Domain: o.Domain, Rule: o.Rule, Key: o.Key, Reason: o.Reason, SetAt: o.SetAt, SetBy: o.SetBy, Limits: []LimitView{}, Descriptor: []Entry{}}
	for _, e := range o.Descriptor {
		v.Descriptor = append(v.Descriptor, Entry{Key: e.Key, Value: e.Value})
	}
	for _, l := range o.Limits {
		v.Limits = append(v.Limits, limitView(l))
	}
	if !o.Expires.IsZero() {
		exp := o.Expires
		v.Expires = &exp
		v.Expired = !h.now().Before(exp)
	}
	return v
}

// noOverrides answers 404 when the handler has no override table.
func (h *Handler) noOverrides(w http.ResponseWriter) bool {
	if h.overrides == nil {
		writeError(w, http.StatusNotFound, "runtime overrides are not configured here")
		return true
	}
	return false
}

func (h *Handler) listOverrides(w http.ResponseWriter, r *http.Request) {
	if h.noOverrides(w) {
		return
	}
	resp := OverridesResponse{Overrides: []OverrideView{}}
	for _, o := range h.overrides.List() {
		resp.Overrides = append(resp.Overrides, h.overrideView(o))
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) putOverride(w http.ResponseWriter, r *http.Request) {
	if h.noOverrides(w) {
		return
	}
	var req OverrideRequest
	if !decode(w, r, &req) {
		return
	}
	limits, problem := parseLimits(req.Limits)
	if problem != "" {
		writeError(w, http.StatusBadRequest, problem)
		return
	}
	var expires time.Time
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("expires_in %q: want a positive Go duration such as 24h", req.ExpiresIn))
			return
		}
		expires = h.now().Add(d).UTC()
	}
	m, ok := h.match(w, req.Domain, req.Descriptor)
	if !ok {
		return
	}
	entry := AuditEntry{Action: "override", Remote: r.RemoteAddr, Domain: req.Domain, Descriptor: req.Descriptor, Rule: m.Rule.ID, Key: m.Key}
	refuse := h.refuser(w, r, entry)
	switch {
	case stateless(m) != "":
		refuse(http.StatusConflict, stateless(m)+": an override needs a rule with limits")
		return
	case m.Rule.Consistency == rules.Approximate:
		if err := rules.CheckApproximate(limits); err != nil {
			refuse(http.StatusConflict, fmt.Sprintf("rule %s is approximate: %v", m.Rule.ID, err))
			return
		}
	}
	o := overrides.Override{
		Domain: req.Domain, Key: m.Key, Rule: m.Rule.ID, Limits: limits, Expires: expires,
		Reason: req.Reason, SetAt: h.now().UTC(), SetBy: r.RemoteAddr,
	}
	for _, e := range req.Descriptor {
		o.Descriptor = append(o.Descriptor, overrides.Entry{Key: e.Key, Value: e.Value})
	}
	if err := h.overrides.Put(r.Context(), o); err != nil {
		refuse(http.StatusServiceUnavailable, "the override cannot be stored: "+err.Error())
		return
	}
	entry.Outcome = "done: " + describeLimits(limits)
	if req.Reason != "" {
		entry.Outcome += " (" + req.Reason + ")"
	}
	h.record(r.Context(), entry)
	writeJSON(w, http.StatusOK, h.overrideView(o))
}

// DeleteOverrideRequest is the body of DELETE /admin/v1/overrides: a
// domain and either the descriptor or the store key the list shows. The
// key serves to delete an override whose rule is gone.
type DeleteOverrideRequest struct {
	Domain     string  `json:"domain"`
	Descriptor []Entry `json:"descriptor,omitempty"`
	Key        string  `json:"key,omitempty"`
}

func (h *Handler) deleteOverride(w http.ResponseWriter, r *http.Request) {
	if h.noOverrides(w) {
		return
	}
	var req DeleteOverrideRequest
	if !decode(w, r, &req) {
		return
	}
	entry := AuditEntry{Action: "delete override", Remote: r.RemoteAddr, Domain: req.Domain, Descriptor: req.Descriptor, Key: req.Key}
	switch {
	case req.Key != "" && len(req.Descriptor) > 0:
		writeError(w, http.StatusBadRequest, "descriptor and key: want one of them")
		return
	case req.Key != "":
		if req.Domain == "" {
			writeError(w, http.StatusBadRequest, "domain: required")
			return
		}
	default:
		m, ok := h.match(w, req.Domain, req.Descriptor)
		if !ok {
			return
		}
		entry.Rule, entry.Key = m.Rule.ID, m.Key
	}
	found, err := h.overrides.Delete(r.Context(), req.Domain, entry.Key)
	switch {
	case err != nil:
		entry.Outcome = "the override cannot be deleted: " + err.Error()
		h.record(r.Context(), entry)
		writeError(w, http.StatusServiceUnavailable, entry.Outcome)
	case !found:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no override of key %q in domain %q", entry.Key, req.Domain))
	default:
		entry.Outcome = "done"
		h.record(r.Context(), entry)
		writeJSON(w, http.StatusOK, map[string]bool{"deleted": true})
	}
}

// parseLimits parses an override's limits; problem names the field at
// fault.
func parseLimits(specs []httpapi.LimitSpec) (limits []floodgate.Limit, problem string) {
	if len(specs) == 0 || len(specs) > MaxOverrideLimits {
		return nil, fmt.Sprintf("limits: want 1 to %d, got %d", MaxOverrideLimits, len(specs))
	}
	for i, sp := range specs {
		path := fmt.Sprintf("limits[%d]", i)
		alg, err := floodgate.ParseAlgorithm(sp.Algorithm)
		if err != nil {
			return nil, fmt.Sprintf("%s.algorithm %q: want fixed_window, sliding_window_log, sliding_window, token_bucket, gcra or concurrency", path, sp.Algorithm)
		}
		d, err := time.ParseDuration(sp.Window)
		if err != nil {
			return nil, fmt.Sprintf("%s.window %q: want a Go duration such as 1m", path, sp.Window)
		}
		l := floodgate.Limit{Algorithm: alg, Quota: sp.Quota, Window: d, Burst: sp.Burst}
		if err := l.Validate(); err != nil {
			return nil, path + ": " + strings.TrimPrefix(err.Error(), "floodgate: ")
		}
		limits = append(limits, l)
	}
	return limits, ""
}

func describeLimits(limits []floodgate.Limit) string {
	parts := make([]string, len(limits))
	for i, l := range limits {
		parts[i] = l.String()
	}
	return strings.Join(parts, ", ")
}
