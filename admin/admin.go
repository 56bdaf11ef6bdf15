// Package admin is floodgate's administration API: it shows the rules in
// force, inspects a client's state under its rule without consuming
// anything, resets it, overrides its limits at run time, and keeps an audit
// log of the changes made through it. Every request must carry the API's token as "Authorization: Bearer
// <token>"; `floodgate serve` listens for it on a loopback address of its
// own (see docs/admin.md).
//
// # Endpoints
//
//   - GET /admin/v1/rules lists the rules in force by domain, with their
//     limits, consistency and failure policy; see [RulesResponse].
//   - POST /admin/v1/inspect takes a [KeyRequest] (a domain and one
//     descriptor, as Envoy sends it) and answers the rule it matches, its
//     store key and each limit's state, decided with cost 0 so that nothing
//     is consumed; see [KeyResponse]. 404 when no rule matches.
//   - POST /admin/v1/reset takes a [KeyRequest] and forgets the state of
//     the descriptor's key under its limits in the store, so that the
//     client starts afresh; the answer is the state after the reset. 404
//     when no rule matches; 409 when the rule keeps no state to reset
//     (unlimited, a deny rule) or keeps it in every instance (approximate).
//     Each reset, done or refused, is written to the audit log.
//   - PUT /admin/v1/overrides takes an [OverrideRequest] and replaces the
//     limits of the descriptor it names, on every instance that shares the
//     [Options.Overrides] table's backend; GET lists the overrides
//     ([OverridesResponse]); DELETE takes a [KeyRequest] and removes one.
//     Puts and deletes are audited.
//   - GET /admin/v1/audit answers the audit log, newest first; see
//     [AuditEntry].
//   - GET /admin/v1/stats answers every floodgate_* metric series at one
//     instant ([StatsResponse]), when [Options.Gatherer] is set.
//   - GET /admin/ is the web dashboard: live charts of decisions, store
//     latency, the over-limit cache and load shedding; the rules with their
//     decision rates; overrides; the audit log; inspect and reset. The page
//     is served without the token and asks for it.
//
// Errors are answered as {"error": "..."}, with 400 for a malformed
// request, 401 without the right token, 404, 405, 409, 413 for a body over
// [MaxBodyBytes], and 503 when the store cannot answer.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/httpapi"
	"github.com/floodgate/floodgate/overrides"
	"github.com/floodgate/floodgate/rules"
)

// MaxBodyBytes is the largest request body accepted.
const MaxBodyBytes = 16 << 10

// DefaultAuditSize is how many audit entries the API keeps by default.
const DefaultAuditSize = 1000

// Options configure a [Handler].
type Options struct {
	// Token is the secret every request must present as a bearer token.
	// Required: [New] refuses an empty one.
	Token string
	// Logger receives one line per audit entry (level info, message "admin
	// audit") and, at most once a second, a refused token (level warn). Nil
	// discards them.
	Logger *slog.Logger
	// AuditSize is how many audit entries are kept in memory, the oldest
	// dropped first. 0 means [DefaultAuditSize].
	AuditSize int
	// Now returns the current time, for the audit log. Nil means time.Now.
	Now func() time.Time
	// Overrides, when set, serves /admin/v1/overrides: runtime overrides of
	// a descriptor's limits that every instance sharing the table's backend
	// applies. The engine must have been built with the same table
	// ([engine.Options.Overrides]). Nil answers 404 there.
	Overrides *overrides.Table
	// Gatherer, when set, serves GET /admin/v1/stats (and the dashboard's
	// charts) from it: a metrics.Metrics's Registry. Nil answers 404 there.
	Gatherer prometheus.Gatherer
	// SharedAudit, when set, keeps the audit log for every instance (the
	// newest AuditSize entries). This process keeps its own entries too:
	// it answers them when the shared log cannot be read, and appends
	// those the shared log could not take once it can.
	SharedAudit SharedAudit
	// Instance names this instance in audit entries (serve uses the host
	// name and the process id).
	Instance string
}

// Handler serves the admin API. Create it with [New]. It is safe for
// concurrent use.
type Handler struct {
	engine    *engine.Engine
	overrides *overrides.Table
	gatherer  prometheus.Gatherer
	shared    SharedAudit
	instance  string
	token     [sha256.Size]byte
	logger    *slog.Logger
	now       func() time.Time
	mux       *http.ServeMux

	lastRefused   atomic.Int64 // the second a refused token was last logged
	lastAuditWarn atomic.Int64 // the second a shared audit failure was last logged
	flushMu       sync.Mutex   // one flush of pending entries at a time

	mu      sync.Mutex
	audit   []AuditEntry // a ring: next is the slot of the next entry
	pending []AuditEntry // entries the shared log has not taken, oldest first
	next    int
	full    bool
	seq     int64
}

var _ http.Handler = (*Handler)(nil)

// New returns the admin API over e: its rules, its store (inspect and
// reset go to e's store, with no failure policy).
func New(e *engine.Engine, opts Options) (*Handler, error) {
	if opts.Token == "" {
		return nil, errors.New("admin: an empty token: the API needs one")
	}
	if opts.AuditSize < 0 {
		return nil, fmt.Errorf("admin: audit size %d: want 0 (the default) or more", opts.AuditSize)
	}
	if opts.AuditSize == 0 {
		opts.AuditSize = DefaultAuditSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{
		engine:    e,
		overrides: opts.Overrides,
		gatherer:  opts.Gatherer,
		shared:    opts.SharedAudit,
		instance:  opts.Instance,
		token:     sha256.Sum256([]byte(opts.Token)),
		logger:    opts.Logger,
		now:       opts.Now,
		mux:       http.NewServeMux(),
		audit:     make([]AuditEntry, opts.AuditSize),
	}
	h.mux.HandleFunc("GET /admin/v1/rules", h.rules)
	h.mux.HandleFunc("POST /admin/v1/inspect", h.inspect)
	h.mux.HandleFunc("POST /admin/v1/reset", h.reset)
	h.mux.HandleFunc("GET /admin/v1/audit", h.auditLog)
	h.mux.HandleFunc("GET /admin/v1/overrides", h.listOverrides)
	h.mux.HandleFunc("PUT /admin/v1/overrides", h.putOverride)
	h.mux.HandleFunc("DELETE /admin/v1/overrides", h.deleteOverride)
	h.mux.HandleFunc("GET /admin/v1/stats", h.stats)
	h.mux.HandleFunc("GET /admin/{$}", h.dashboard)
	return h, nil
}

// Overrides returns the override table the handler serves, nil when none.
func (h *Handler) Overrides() *overrides.Table { return h.overrides }

// ServeHTTP checks the token, then serves the request. The dashboard's
// page (GET /admin/) is the one path served without it: it holds no data,
// and asks for the token to read the API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/admin/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		h.dashboard(w, r)
		return
	}
	if !h.authorized(r) {
		if now := time.Now().Unix(); h.lastRefused.Load() != now && h.lastRefused.Swap(now) != now {
			h.logger.Warn("admin: request without the right token (logged at most once a second)", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="floodgate admin"`)
		writeError(w, http.StatusUnauthorized, "a bearer token is required: Authorization: Bearer <token>")
		return
	}
	// The mux answers 404 and 405 in plain text; the API answers JSON.
	if _, pattern := h.mux.Handler(r); pattern == "" {
		allow := allowed(r.URL.Path)
		if allow == "" {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s", r.URL.Path))
			return
		}
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: want %s", r.Method, r.URL.Path, allow))
		return
	}
	h.mux.ServeHTTP(w, r)
}

// allowed returns the method path takes, "" for an unknown path.
func allowed(path string) string {
	switch path {
	case "/admin/v1/rules", "/admin/v1/audit", "/admin/v1/stats", "/admin/":
		return http.MethodGet
	case "/admin/v1/inspect", "/admin/v1/reset":
		return http.MethodPost
	case "/admin/v1/overrides":
		return "GET, PUT, DELETE"
	}
	return ""
}

// authorized reports whether r carries the token, compared in constant time.
func (h *Handler) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], h.token[:]) == 1
}

// RulesResponse is the answer to GET /admin/v1/rules.
type RulesResponse struct {
	// Version identifies the rule files' contents; "" when no rules are
	// loaded.
	Version string `json:"version"`
	// Files are the rule files loaded, in load order.
	Files   []string      `json:"files"`
	Domains []DomainRules `json:"domains"`
}

// DomainRules are one domain's rules, in the order they were written.
type DomainRules struct {
	Domain string     `json:"domain"`
	Rules  []RuleView `json:"rules"`
}

// RuleView is one rule as the admin API shows it.
type RuleView struct {
	ID           string      `json:"id"`
	Name         string      `json:"name,omitempty"`
	Limits       []LimitView `json:"limits"`
	Unlimited    bool        `json:"unlimited,omitempty"`
	Deny         bool        `json:"deny,omitempty"`
	ShadowMode   bool        `json:"shadow_mode,omitempty"`
	Consistency  string      `json:"consistency"`
	OnStoreError string      `json:"on_store_error,omitempty"`
	Replaces     []string    `json:"replaces,omitempty"`
}

// LimitView is a limit, and in an inspect or reset answer its state: the
// units left and how long until it is back to full capacity.
type LimitView struct {
	Algorithm string `json:"algorithm"`
	Quota     int64  `json:"quota"`
	Window    string `json:"window"`
	Burst     int64  `json:"burst,omitempty"`

	Remaining    *int64 `json:"remaining,omitempty"`
	ResetAfter   string `json:"reset_after,omitempty"`
	ResetAfterMS *int64 `json:"reset_after_ms,omitempty"`
}

func limitView(l floodgate.Limit) LimitView {
	v := LimitView{Algorithm: l.Algorithm.String(), Quota: l.Quota, Window: httpapi.FormatDuration(l.Window)}
	if l.Algorithm == floodgate.TokenBucket || l.Algorithm == floodgate.GCRA {
		v.Burst = l.Capacity()
	}
	return v
}

func (h *Handler) rules(w http.ResponseWriter, r *http.Request) {
	set := h.engine.Rules()
	resp := RulesResponse{Version: set.Version(), Files: set.Files(), Domains: []DomainRules{}}
	if resp.Files == nil {
		resp.Files = []string{}
	}
	for _, d := range set.Domains() {
		dr := DomainRules{Domain: d, Rules: []RuleView{}}
		for _, rule := range set.Rules(d) {
			v := RuleView{
				ID:           rule.ID,
				Name:         rule.Name,
				Limits:       []LimitView{},
				Unlimited:    rule.Unlimited,
				Deny:         rule.Deny,
				ShadowMode:   rule.ShadowMode,
				Consistency:  rule.Consistency.String(),
				OnStoreError: rule.OnStoreError.String(),
				Replaces:     rule.Replaces,
			}
			for _, l := range rule.Limits {
				v.Limits = append(v.Limits, limitView(l))
			}
			dr.Rules = append(dr.Rules, v)
		}
		resp.Domains = append(resp.Domains, dr)
	}
	writeJSON(w, http.StatusOK, resp)
}

// KeyRequest is the body of POST /admin/v1/inspect and /admin/v1/reset:
//
//	{"domain":"api","descriptor":[{"key":"user","value":"42"}]}
//
// Unknown fields are rejected.
type KeyRequest struct {
	Domain     string  `json:"domain"`
	Descriptor []Entry `json:"descriptor"`
}

// Entry is one entry of a descriptor.
type Entry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// KeyResponse is the answer to POST /admin/v1/inspect and /admin/v1/reset.
type KeyResponse struct {
	Domain     string  `json:"domain"`
	Descriptor []Entry `json:"descriptor"`
	// Rule is the ID of the rule the descriptor matches.
	Rule string `json:"rule"`
	// Tier is the tier whose limits apply, when one does.
	Tier string `json:"tier,omitempty"`
	// Key is the store key of the descriptor's state.
	Key         string `json:"key"`
	Consistency string `json:"consistency"`
	// Limits are the limits in force and their state.
	Limits []LimitView `json:"limits"`
	// Override is set when a runtime override gives the limits.
	Override bool `json:"override,omitempty"`
	// Reset is set by /admin/v1/reset.
	Reset bool `json:"reset,omitempty"`
}

// readKey decodes a KeyRequest and matches its descriptor. It answers the
// error itself and returns ok false when it cannot go on.
func (h *Handler) readKey(w http.ResponseWriter, r *http.Request) (req KeyRequest, m rules.Match, ok bool) {
	if !decode(w, r, &req) {
		return req, m, false
	}
	m, ok = h.match(w, req.Domain, req.Descriptor)
	return req, m, ok
}

// decode reads r's body as one JSON value into v, rejecting unknown fields.
// It answers the error itself and returns false when it cannot.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", MaxBodyBytes))
			return false
		}
		writeError(w, http.StatusBadRequest, "malformed request: "+err.Error())
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "malformed request: more than one JSON value")
		return false
	}
	return true
}

// match matches domain's descriptor under the rules and overrides in
// force. It answers the error itself and returns ok false when it cannot.
func (h *Handler) match(w http.ResponseWriter, domain string, descriptor []Entry) (m rules.Match, ok bool) {
	if domain == "" {
		writeError(w, http.StatusBadRequest, "domain: required")
		return m, false
	}
	if len(descriptor) == 0 {
		writeError(w, http.StatusBadRequest, "descriptor: want at least one entry")
		return m, false
	}
	entries := make([]rules.Entry, len(descriptor))
	for i, e := range descriptor {
		if e.Key == "" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("descriptor[%d].key: required", i))
			return m, false
		}
		entries[i] = rules.Entry{Key: e.Key, Value: e.Value}
	}
	m, matched := h.engine.Match(domain, entries)
	if !matched {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no rule of domain %q matches %s", domain, describe(descriptor)))
		return m, false
	}
	return m, true
}

func describe(d []Entry) string {
	parts := make([]string, len(d))
	for i, e := range d {
		parts[i] = e.Key + "=" + e.Value
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (h *Handler) inspect(w http.ResponseWriter, r *http.Request) {
	req, m, ok := h.readKey(w, r)
	if !ok {
		return
	}
	resp, status, msg := h.state(r, req, m)
	if status != http.StatusOK {
		writeError(w, status, msg)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// state reads the descriptor's state (cost 0) from the store, with no
// failure policy: when the store cannot answer, neither does the API.
func (h *Handler) state(r *http.Request, req KeyRequest, m rules.Match) (KeyResponse, int, string) {
	resp := KeyResponse{
		Domain:      req.Domain,
		Descriptor:  req.Descriptor,
		Rule:        m.Rule.ID,
		Tier:        m.Tier,
		Key:         m.Key,
		Consistency: m.Rule.Consistency.String(),
		Limits:      []LimitView{},
		Override:    m.Override,
	}
	for _, l := range m.Limits {
		resp.Limits = append(resp.Limits, limitView(l))
	}
	if m.Unlimited || m.Deny {
		return resp, http.StatusOK, ""
	}
	each, err := h.engine.Peek(r.Context(), m)
	if err != nil {
		return resp, http.StatusServiceUnavailable, "the store cannot answer: " + err.Error()
	}
	for i, res := range each {
		rem, ms := res.Remaining, ceilMS(res.ResetAfter)
		resp.Limits[i].Remaining = &rem
		resp.Limits[i].ResetAfter = httpapi.FormatDuration(res.ResetAfter)
		resp.Limits[i].ResetAfterMS = &ms
	}
	return resp, http.StatusOK, ""
}

func ceilMS(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func (h *Handler) reset(w http.ResponseWriter, r *http.Request) {
	req, m, ok := h.readKey(w, r)
	if !ok {
		return
	}
	entry := AuditEntry{Action: "reset", Remote: r.RemoteAddr, Domain: req.Domain, Descriptor: req.Descriptor, Rule: m.Rule.ID, Key: m.Key}
	refuse := h.refuser(w, r, entry)
	switch {
	case stateless(m) != "":
		refuse(http.StatusConflict, stateless(m)+": it keeps no state to reset")
		return
	case m.Rule.Consistency == rules.Approximate && h.engine.Approximate() != nil:
		refuse(http.StatusConflict, fmt.Sprintf("rule %s is approximate: its counts are kept in every instance and cannot be reset from one", m.Rule.ID))
		return
	}
	if err := floodgate.Reset(r.Context(), h.engine.Store(), m.Key, m.Limits); err != nil {
		if errors.Is(err, floodgate.ErrNoReset) {
			refuse(http.StatusConflict, "the store cannot reset keys")
			return
		}
		refuse(http.StatusServiceUnavailable, "the store cannot reset the key: "+err.Error())
		return
	}
	entry.Outcome = "done"
	h.record(r.Context(), entry)
	resp, status, msg := h.state(r, req, m)
	resp.Reset = true
	if status != http.StatusOK {
		// The reset is done; only the state after it is missing.
		h.logger.Warn("admin: reset done, but its state cannot be read", "key", m.Key, "err", msg)
	}
	writeJSON(w, http.StatusOK, resp)
}

// refuser returns a function that audits entry with a refusal or failure
// as its outcome, and answers it with status.
func (h *Handler) refuser(w http.ResponseWriter, r *http.Request, entry AuditEntry) func(status int, msg string) {
	return func(status int, msg string) {
		entry.Outcome = msg
		h.record(r.Context(), entry)
		writeError(w, status, msg)
	}
}

// stateless says why m's rule has no limits (unlimited, deny), "" when it
// has some.
func stateless(m rules.Match) string {
	switch {
	case m.Unlimited:
		return fmt.Sprintf("rule %s is unlimited", m.Rule.ID)
	case m.Deny:
		return fmt.Sprintf("rule %s denies every request", m.Rule.ID)
	}
	return ""
}

// AuditEntry is one change made through the admin API, or refused.
type AuditEntry struct {
	// Seq numbers the entries from 1, in the order they were made: across
	// every instance in the shared log's answer, in this process in its
	// own log's.
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// Instance names the instance that made the change ([Options.Instance]).
	Instance   string  `json:"instance,omitempty"`
	Action     string  `json:"action"`
	Remote     string  `json:"remote"`
	Domain     string  `json:"domain"`
	Descriptor []Entry `json:"descriptor"`
	Rule       string  `json:"rule"`
	Key        string  `json:"key"`
	// Outcome is "done", or why the change was refused or failed.
	Outcome string `json:"outcome"`
	// Pending marks, in the shared log's answer, an entry of this instance
	// that the shared log has not taken yet.
	Pending bool `json:"pending,omitempty"`
}

// SharedAudit keeps an audit log that every instance appends to and reads:
// the Redis store implements it with a list, so that the log shows the
// changes made through any instance.
type SharedAudit interface {
	// AppendAudit adds entry (encoded) with the next sequence number, keeps
	// the newest keep entries, and returns the number.
	AppendAudit(ctx context.Context, entry string, keep int) (int64, error)
	// Audit returns the newest n entries, newest first, with their
	// sequence numbers.
	Audit(ctx context.Context, n int) (seqs []int64, entries []string, err error)
}

// auditTimeout bounds a read or write of the shared audit log.
const auditTimeout = 2 * time.Second

// record appends e to this process's audit log (numbering it there) and
// to the shared one when set, and logs it. An entry the shared log cannot
// take waits, with any before it, for the next write or read that reaches
// it.
func (h *Handler) record(ctx context.Context, e AuditEntry) {
	h.mu.Lock()
	h.seq++
	e.Seq, e.Time, e.Instance = h.seq, h.now().UTC(), h.instance
	h.audit[h.next] = e
	h.next++
	if h.next == len(h.audit) {
		h.next, h.full = 0, true
	}
	if h.shared != nil {
		if len(h.pending) == len(h.audit) {
			h.pending = h.pending[1:] // past the log's size, the oldest goes
		}
		h.pending = append(h.pending, e)
	}
	h.mu.Unlock()
	h.logger.Info("admin audit", "seq", e.Seq, "action", e.Action, "remote", e.Remote, "domain", e.Domain,
		"descriptor", describe(e.Descriptor), "rule", e.Rule, "key", e.Key, "outcome", e.Outcome)
	h.flush(ctx)
}

// flush appends the entries waiting for the shared log, oldest first,
// until one fails. One flush runs at a time, so entries keep their order.
func (h *Handler) flush(ctx context.Context) {
	if h.shared == nil {
		return
	}
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	for {
		h.mu.Lock()
		if len(h.pending) == 0 {
			h.mu.Unlock()
			return
		}
		e := h.pending[0]
		h.mu.Unlock()
		local := e.Seq
		e.Seq = 0 // the shared log numbers it
		b, err := json.Marshal(e)
		if err == nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
			_, err = h.shared.AppendAudit(actx, string(b), len(h.audit))
			cancel()
		}
		if err != nil {
			if now := time.Now().Unix(); h.lastAuditWarn.Load() != now && h.lastAuditWarn.Swap(now) != now {
				h.logger.Warn("admin audit: the shared log cannot be written; entries wait in this instance", "err", err)
			}
			return
		}
		h.mu.Lock()
		if len(h.pending) > 0 && h.pending[0].Seq == local {
			h.pending = h.pending[1:]
		}
		h.mu.Unlock()
	}
}

// Audit returns the audit entries this process keeps, newest first: the
// changes made through it, numbered in this process.
func (h *Handler) Audit() []AuditEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.next
	if h.full {
		n = len(h.audit)
	}
	out := make([]AuditEntry, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, h.audit[(h.next-i+len(h.audit))%len(h.audit)])
	}
	return out
}

// AuditResponse is the answer to GET /admin/v1/audit.
type AuditResponse struct {
	// Shared is set when the entries are the shared log's (every
	// instance's changes), numbered there; otherwise they are this
	// instance's, numbered here.
	Shared  bool         `json:"shared"`
	Entries []AuditEntry `json:"entries"`
	// Error says why the shared log could not be read, when it is set but
	// this instance's entries are answered.
	Error string `json:"error,omitempty"`
}

func (h *Handler) auditLog(w http.ResponseWriter, r *http.Request) {
	if h.shared == nil {
		writeJSON(w, http.StatusOK, AuditResponse{Entries: h.Audit()})
		return
	}
	h.flush(r.Context())
	ctx, cancel := context.WithTimeout(r.Context(), auditTimeout)
	seqs, got, err := h.shared.Audit(ctx, len(h.audit))
	cancel()
	if err != nil {
		writeJSON(w, http.StatusOK, AuditResponse{Entries: h.Audit(), Error: "the shared log cannot be read: " + err.Error()})
		return
	}
	resp := AuditResponse{Shared: true, Entries: []AuditEntry{}}
	// Entries still waiting for the shared log (it took the read but not
	// the write) come first, as the newest, unnumbered.
	h.mu.Lock()
	for i := len(h.pending) - 1; i >= 0; i-- {
		e := h.pending[i]
		e.Seq, e.Pending = 0, true
		resp.Entries = append(resp.Entries, e)
	}
	h.mu.Unlock()
	for i, g := range got {
		var e AuditEntry
		if err := json.Unmarshal([]byte(g), &e); err != nil {
			continue
		}
		e.Seq = seqs[i]
		resp.Entries = append(resp.Entries, e)
	}
	writeJSON(w, http.StatusOK, resp)
}

type problem struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, problem{Error: msg})
}

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
