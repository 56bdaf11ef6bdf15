package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
)

// Bounds on what Parse accepts, so that a hostile or broken file costs
// bounded time and memory.
const (
	// MaxFileSize is the largest configuration file, in bytes.
	MaxFileSize = 4 << 20
	// MaxDepth is the deepest nesting of descriptors.
	MaxDepth = 64
	// maxNodes bounds the YAML nodes visited in one file, aliases included
	// (an alias is visited again each time it is used).
	maxNodes = 1 << 20
)

// domain is one compiled domain.
type domain struct {
	name    string
	pos     Position
	root    *level
	rules   []*Rule
	tiers   []*tier
	mapping *Mapper
}

// level is one list of descriptors: the top-level list of a domain, or a
// node's nested list.
type level struct {
	exact   map[Entry]*node
	wild    []*node // in the order written; the first whose prefix fits wins
	keyOnly map[string]*node
}

func newLevel() *level {
	return &level{exact: map[Entry]*node{}, keyOnly: map[string]*node{}}
}

func (l *level) empty() bool {
	return l == nil || len(l.exact)+len(l.wild)+len(l.keyOnly) == 0
}

// node is one descriptor of a configuration.
type node struct {
	key, value string
	kind       MatchKind
	prefix     string // for Wildcard: value without its final *
	rule       *Rule  // nil when the node has no rate_limit
	children   *level // nil when it has no nested descriptors
	pos        Position
	lbl        string // "key" or "key=value", as explanations show it
}

func (n *node) label() string { return n.lbl }

// tier is a named set of values of one key.
type tier struct {
	name     string
	key      string
	exact    map[string]bool
	prefixes []string
	pos      Position
}

func (t *tier) has(value string) bool {
	if t.exact[value] {
		return true
	}
	for _, p := range t.prefixes {
		if strings.HasPrefix(value, p) {
			return true
		}
	}
	return false
}

// Parse compiles one configuration file's content. name is used in error
// positions and in the version hash. On any problem it returns nil and an
// [Errors] listing every problem found.
func Parse(name string, data []byte) (*Set, error) {
	return build([]source{{name: name, data: data}})
}

// source is one file to compile.
type source struct {
	name string // as shown in errors
	key  string // as hashed into the version
	data []byte
}

// build compiles several files into one set.
func build(srcs []source) (*Set, error) {
	s := &Set{domains: map[string]*domain{}}
	var errs Errors
	h := sha256.New()
	for _, src := range srcs {
		key := src.key
		if key == "" {
			key = src.name
		}
		fmt.Fprintf(h, "%d:%s%d:", len(key), key, len(src.data))
		h.Write(src.data)
		s.files = append(s.files, src.name)
		d, fileErrs := parseFile(src.name, src.data)
		errs = append(errs, fileErrs...)
		if d == nil {
			continue
		}
		if prev, dup := s.domains[d.name]; dup {
			errs = append(errs, &Error{Pos: d.pos, Field: "domain", Msg: fmt.Sprintf("duplicate domain %q, already defined at %v", d.name, prev.pos)})
			continue
		}
		s.domains[d.name] = d
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if len(srcs) > 0 {
		s.version = hex.EncodeToString(h.Sum(nil))[:16]
	}
	return s, nil
}

// decoder walks one file's YAML tree and collects errors.
type decoder struct {
	file  string
	errs  Errors
	nodes int
}

func (d *decoder) pos(n *yaml.Node) Position {
	if n == nil {
		return Position{File: d.file}
	}
	return Position{File: d.file, Line: n.Line, Column: n.Column}
}

func (d *decoder) errf(n *yaml.Node, field, format string, args ...any) {
	d.errs = append(d.errs, &Error{Pos: d.pos(n), Field: field, Msg: fmt.Sprintf(format, args...)})
}

// resolve follows aliases and counts visited nodes. It returns nil when the
// file is too large to walk (the error is recorded once).
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n == nil || n.Kind == yaml.AliasNode {
		return nil
	}
	d.nodes++
	if d.nodes == maxNodes {
		d.errf(n, "", "too many YAML nodes (more than %d, aliases counted each time they are used)", maxNodes)
	}
	if d.nodes >= maxNodes {
		return nil
	}
	return n
}

// fields iterates over a mapping's fields, rejecting non-mappings, unknown
// and repeated fields. fn is called with each known field's name, field path
// and value node.
func (d *decoder) fields(n *yaml.Node, field string, known []string, fn func(name, path string, key, val *yaml.Node)) bool {
	if n = d.resolve(n); n == nil {
		return false
	}
	if n.Kind != yaml.MappingNode {
		if isNull(n) {
			d.errf(n, field, "is empty; want a mapping of fields")
		} else {
			d.errf(n, field, "want a mapping of fields, got %s", kindName(n))
		}
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := d.resolve(n.Content[i]), n.Content[i+1]
		if k == nil {
			return false
		}
		if k.Kind != yaml.ScalarNode {
			d.errf(k, field, "field names must be plain strings, got %s", kindName(k))
			continue
		}
		path := k.Value
		if field != "" {
			path = field + "." + k.Value
		}
		if !contains(known, k.Value) {
			d.errf(k, path, "unknown field %q (want one of %s)", k.Value, strings.Join(known, ", "))
			continue
		}
		if seen[k.Value] {
			d.errf(k, path, "field %q given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		fn(k.Value, path, k, v)
	}
	return true
}

// list iterates over a sequence. A null value is an empty list.
func (d *decoder) list(n *yaml.Node, field string, fn func(i int, path string, item *yaml.Node)) {
	if n = d.resolve(n); n == nil || isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, field, "want a list, got %s", kindName(n))
		return
	}
	for i, item := range n.Content {
		fn(i, fmt.Sprintf("%s[%d]", field, i), item)
	}
}

// str reads a scalar as a string, as Envoy's YAML decoding does for string
// fields (numbers and booleans are taken as written). Null is "".
func (d *decoder) str(n *yaml.Node, field string) (string, bool) {
	if n = d.resolve(n); n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		d.errf(n, field, "want a string, got %s", kindName(n))
		return "", false
	}
	if isNull(n) {
		return "", true
	}
	return n.Value, true
}

func (d *decoder) boolean(n *yaml.Node, field string) (bool, bool) {
	if n = d.resolve(n); n == nil {
		return false, false
	}
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		d.errf(n, field, "want true or false, got %s", valueName(n))
		return false, false
	}
	return b, true
}

func (d *decoder) integer(n *yaml.Node, field string, lo, hi int64) (int64, bool) {
	if n = d.resolve(n); n == nil {
		return 0, false
	}
	var v int64
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		d.errf(n, field, "want a whole number, got %s", valueName(n))
		return 0, false
	}
	if v < lo || v > hi {
		d.errf(n, field, "%d is out of range: want %d to %d", v, lo, hi)
		return 0, false
	}
	return v, true
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "a document"
}

func valueName(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		return strconv.Quote(n.Value)
	}
	return kindName(n)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Field names, by node.
var (
	rootFields       = []string{"domain", "descriptors", "tiers", "requests", "consistency", "on_store_error"}
	descriptorFields = []string{"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric", "share_threshold", "value_to_metric", "rate_limits", "consistency", "on_store_error", "tiers"}
	rateLimitFields  = []string{"unit", "requests_per_unit", "unlimited", "name", "replaces", "algorithm", "window", "burst", "consistency", "on_store_error"}
	limitFields      = []string{"unit", "requests_per_unit", "algorithm", "window", "burst"}
	tierFields       = []string{"name", "key", "values"}
	tierLimitFields  = []string{"rate_limit", "rate_limits"}
)

// policy is the consistency and failure policy in force at a node:
// inherited from the file and enclosing descriptors.
type policy struct {
	consistency Consistency
	onError     FailurePolicy
}

// parseFile compiles one file into a domain.
func parseFile(name string, data []byte) (*domain, Errors) {
	d := &decoder{file: name}
	if len(data) > MaxFileSize {
		d.errf(nil, "", "file of %d bytes is too large (at most %d)", len(data), MaxFileSize)
		return nil, d.errs
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		e := &Error{Pos: Position{File: name}, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			e.Pos.Line, _ = strconv.Atoi(m[1])
			e.Msg = "not valid YAML: " + m[2]
		}
		return nil, Errors{e}
	}
	if len(doc.Content) == 0 {
		d.errf(nil, "domain", "the file is empty; want at least a domain")
		return nil, d.errs
	}
	root := doc.Content[0]
	dom := &domain{root: newLevel(), pos: d.pos(root)}
	var descriptors, tiers, requests *yaml.Node
	var pol policy
	d.fields(root, "", rootFields, func(field, path string, k, v *yaml.Node) {
		switch field {
		case "domain":
			dom.name, _ = d.str(v, path)
			dom.pos = d.pos(v)
		case "descriptors":
			descriptors = v
		case "tiers":
			tiers = v
		case "requests":
			requests = v
		case "consistency":
			pol.consistency, _ = d.consistency(v, path)
		case "on_store_error":
			pol.onError, _ = d.failurePolicy(v, path)
		}
	})
	if dom.name == "" && len(d.errs) == 0 {
		d.errf(root, "domain", "missing or empty: every file needs a domain")
	}
	byName := map[string]*tier{}
	d.list(tiers, "tiers", func(i int, path string, item *yaml.Node) {
		if t := d.tier(item, path); t != nil {
			if prev := byName[t.name]; prev != nil {
				d.errf(item, path+".name", "tier %q defined twice (first at %v)", t.name, prev.pos)
				return
			}
			byName[t.name] = t
			dom.tiers = append(dom.tiers, t)
		}
	})
	c := &compiler{decoder: d, dom: dom, tiers: byName}
	c.descriptors(descriptors, "descriptors", dom.root, dom.name, pol, 1)
	if requests != nil {
		dom.mapping = d.mapper(requests, "requests")
		dom.mapping.domain = dom.name
	}
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return dom, nil
}

func (d *decoder) consistency(n *yaml.Node, field string) (Consistency, bool) {
	s, ok := d.str(n, field)
	if !ok {
		return 0, false
	}
	c, err := ParseConsistency(s)
	if err != nil {
		d.errf(n, field, "%v", err)
		return 0, false
	}
	return c, true
}

// ParseConsistency returns the consistency named s: strict or approximate.
func ParseConsistency(s string) (Consistency, error) {
	switch s {
	case "strict":
		return Strict, nil
	case "approximate":
		return Approximate, nil
	}
	return 0, fmt.Errorf("unknown consistency %q (want strict or approximate)", s)
}

func (d *decoder) failurePolicy(n *yaml.Node, field string) (FailurePolicy, bool) {
	s, ok := d.str(n, field)
	if !ok {
		return 0, false
	}
	switch s {
	case "fail_open":
		return FailOpen, true
	case "fail_closed":
		return FailClosed, true
	case "local":
		return FailLocal, true
	}
	d.errf(n, field, "unknown failure policy %q (want fail_open, fail_closed or local)", s)
	return 0, false
}

func (d *decoder) tier(n *yaml.Node, field string) *tier {
	t := &tier{exact: map[string]bool{}, pos: d.pos(n)}
	var values *yaml.Node
	ok := d.fields(n, field, tierFields, func(name, path string, k, v *yaml.Node) {
		switch name {
		case "name":
			t.name, _ = d.str(v, path)
		case "key":
			t.key, _ = d.str(v, path)
		case "values":
			values = v
			d.list(v, path, func(i int, ipath string, item *yaml.Node) {
				s, ok := d.str(item, ipath)
				switch {
				case !ok:
				case s == "":
					d.errf(item, ipath, "empty value")
				case strings.HasSuffix(s, "*"):
					t.prefixes = append(t.prefixes, strings.TrimSuffix(s, "*"))
				default:
					t.exact[s] = true
				}
			})
		}
	})
	if !ok {
		return nil
	}
	switch {
	case t.name == "":
		d.errf(n, field+".name", "missing: every tier needs a name")
	case t.key == "":
		d.errf(n, field+".key", "missing: the descriptor key whose values select the tier")
	case values == nil || len(t.exact)+len(t.prefixes) == 0:
		d.errf(n, field+".values", "missing: the values (or prefix* patterns) that belong to the tier")
	default:
		return t
	}
	return nil
}

// compiler builds one domain's descriptor tree.
type compiler struct {
	*decoder
	dom   *domain
	tiers map[string]*tier
}

// descriptors compiles a list of descriptors into lvl. id is the Envoy-style
// id of the enclosing node.
func (c *compiler) descriptors(n *yaml.Node, field string, lvl *level, id string, pol policy, depth int) {
	if n == nil {
		return
	}
	if depth > MaxDepth {
		c.errf(n, field, "descriptors nested deeper than %d levels", MaxDepth)
		return
	}
	c.list(n, field, func(i int, path string, item *yaml.Node) {
		c.descriptor(item, path, lvl, id, pol, depth)
	})
}

// descriptor compiles one descriptor node.
func (c *compiler) descriptor(n *yaml.Node, field string, lvl *level, parentID string, pol policy, depth int) {
	nd := &node{pos: c.pos(n)}
	var rateLimit, rateLimits, children, tierOverrides *yaml.Node
	var shadow, detailed, share bool
	hasKey := false
	before := len(c.errs)
	ok := c.fields(n, field, descriptorFields, func(name, path string, k, v *yaml.Node) {
		switch name {
		case "key":
			nd.key, _ = c.str(v, path)
			hasKey = true
		case "value":
			nd.value, _ = c.str(v, path)
		case "rate_limit":
			rateLimit = v
		case "rate_limits":
			rateLimits = v
		case "descriptors":
			children = v
		case "shadow_mode":
			shadow, _ = c.boolean(v, path)
		case "detailed_metric":
			detailed, _ = c.boolean(v, path)
		case "share_threshold":
			share, _ = c.boolean(v, path)
		case "value_to_metric":
			c.boolean(v, path)
		case "consistency":
			pol.consistency, _ = c.consistency(v, path)
		case "on_store_error":
			pol.onError, _ = c.failurePolicy(v, path)
		case "tiers":
			tierOverrides = v
		}
	})
	if !ok {
		return
	}
	if nd.key == "" {
		if !hasKey || len(c.errs) == before {
			c.errf(n, field+".key", "descriptor has an empty key")
		}
		return
	}
	switch {
	case nd.value == "":
		nd.kind = KeyOnly
	case strings.HasSuffix(nd.value, "*"):
		nd.kind = Wildcard
		nd.prefix = strings.TrimSuffix(nd.value, "*")
	default:
		nd.kind = Exact
	}
	nd.lbl = nd.key
	if nd.kind != KeyOnly {
		nd.lbl = nd.key + "=" + nd.value
	}
	id := parentID + "." + nd.key
	if nd.value != "" {
		id += "_" + nd.value
	}
	var prev *node
	switch nd.kind {
	case KeyOnly:
		prev = lvl.keyOnly[nd.key]
	case Exact:
		prev = lvl.exact[Entry{nd.key, nd.value}]
	case Wildcard:
		for _, w := range lvl.wild {
			if w.key == nd.key && w.value == nd.value {
				prev = w
			}
		}
	}
	if prev != nil {
		c.errf(n, field, "duplicate descriptor %q (same key and value as the one at %v)", strings.TrimPrefix(id, c.dom.name+"."), prev.pos)
		return
	}
	if rateLimit != nil || rateLimits != nil {
		nd.rule = c.rule(n, field, rateLimit, rateLimits, tierOverrides, id, pol)
		if nd.rule != nil {
			nd.rule.ShadowMode = shadow
			nd.rule.DetailedMetric = detailed
			nd.rule.ShareThreshold = share && nd.kind == Wildcard
			c.dom.rules = append(c.dom.rules, nd.rule)
		}
	} else if tierOverrides != nil {
		c.errf(tierOverrides, field+".tiers", "tier overrides need a rate_limit or rate_limits on the same descriptor")
	}
	if children != nil {
		nd.children = newLevel()
		c.descriptors(children, field+".descriptors", nd.children, id, pol, depth+1)
		if nd.children.empty() {
			nd.children = nil
		}
	}
	switch nd.kind {
	case KeyOnly:
		lvl.keyOnly[nd.key] = nd
	case Exact:
		lvl.exact[Entry{nd.key, nd.value}] = nd
	case Wildcard:
		lvl.wild = append(lvl.wild, nd)
	}
}

// limitSet is what a rate_limit and rate_limits block compile to.
type limitSet struct {
	limits    []floodgate.Limit
	units     []Unit
	unlimited bool
	deny      bool
	name      string
	replaces  []string
}

// rule compiles a descriptor's limits into a rule.
func (c *compiler) rule(n *yaml.Node, field string, rateLimit, rateLimits, tierOverrides *yaml.Node, id string, pol policy) *Rule {
	before := len(c.errs)
	ls := c.limitBlocks(rateLimit, rateLimits, field, &pol, true)
	r := &Rule{
		ID:           id,
		Domain:       c.dom.name,
		Name:         ls.name,
		Replaces:     ls.replaces,
		Limits:       ls.limits,
		Units:        ls.units,
		Unlimited:    ls.unlimited,
		Deny:         ls.deny,
		Consistency:  pol.consistency,
		OnStoreError: pol.onError,
		Pos:          c.pos(n),
	}
	if tierOverrides != nil {
		r.tiers = c.tierOverrides(tierOverrides, field+".tiers")
	}
	if r.Consistency == Approximate {
		c.checkApproximate(n, field, r.Limits)
		for _, t := range r.tiers {
			c.checkApproximate(n, field+".tiers."+t.tier.name, t.limits)
		}
	}
	if len(c.errs) > before {
		return nil
	}
	return r
}

// checkApproximate reports the limits that approximate counting cannot keep.
func (c *compiler) checkApproximate(n *yaml.Node, field string, limits []floodgate.Limit) {
	if err := CheckApproximate(limits); err != nil {
		c.errf(n, field, "%v", err)
	}
}

// CheckApproximate returns an error naming the first of limits that
// approximate counting cannot keep: it syncs sums per aligned window, which
// only the fixed window and the sliding window counter are.
func CheckApproximate(limits []floodgate.Limit) error {
	for _, l := range limits {
		if !approx.Supports(l.Algorithm) {
			return fmt.Errorf("consistency approximate counts fixed_window and sliding_window only, not %v", l.Algorithm)
		}
	}
	return nil
}

// limitBlocks compiles a rate_limit block (which may carry the Envoy
// metadata: name, replaces, unlimited) and a rate_limits list.
func (c *compiler) limitBlocks(rateLimit, rateLimits *yaml.Node, field string, pol *policy, meta bool) limitSet {
	var ls limitSet
	if rateLimit != nil {
		c.rateLimit(rateLimit, field+".rate_limit", &ls, pol, meta)
	}
	c.list(rateLimits, field+".rate_limits", func(i int, path string, item *yaml.Node) {
		if ls.unlimited {
			c.errf(item, path, "a rule cannot be unlimited and have rate_limits")
			return
		}
		c.limitItem(item, path, &ls)
	})
	if rateLimits != nil && rateLimit == nil && len(ls.limits) == 0 && !ls.deny {
		c.errf(rateLimits, field+".rate_limits", "is empty; want at least one limit")
	}
	return ls
}

// field is one field of a mapping, as collect returns it.
type field struct {
	path string
	val  *yaml.Node
}

// collect reads a mapping's fields (checking them against known) into a map.
func (c *compiler) collect(n *yaml.Node, path string, known []string) (map[string]field, bool) {
	m := map[string]field{}
	ok := c.fields(n, path, known, func(name, p string, k, v *yaml.Node) {
		m[name] = field{path: p, val: v}
	})
	return m, ok
}

// rateLimit compiles an Envoy rate_limit block.
func (c *compiler) rateLimit(n *yaml.Node, path string, ls *limitSet, pol *policy, meta bool) {
	known := rateLimitFields
	if !meta {
		known = []string{"unit", "requests_per_unit", "unlimited", "algorithm", "window", "burst"}
	}
	m, ok := c.collect(n, path, known)
	if !ok {
		return
	}
	if f, ok := m["unlimited"]; ok {
		ls.unlimited, _ = c.boolean(f.val, f.path)
	}
	if f, ok := m["name"]; ok {
		ls.name, _ = c.str(f.val, f.path)
	}
	if f, ok := m["consistency"]; ok {
		pol.consistency, _ = c.consistency(f.val, f.path)
	}
	if f, ok := m["on_store_error"]; ok {
		pol.onError, _ = c.failurePolicy(f.val, f.path)
	}
	if f, ok := m["replaces"]; ok {
		c.list(f.val, f.path, func(i int, ipath string, item *yaml.Node) {
			var name string
			c.fields(item, ipath, []string{"name"}, func(_, p string, k, v *yaml.Node) {
				name, _ = c.str(v, p)
			})
			switch {
			case name == "":
				c.errf(item, ipath+".name", "should not have an empty replaces entry")
			case name == ls.name:
				c.errf(item, ipath+".name", "replaces should not contain the name of the same rule (%q)", name)
			default:
				ls.replaces = append(ls.replaces, name)
			}
		})
	}
	if ls.unlimited {
		if f, ok := m["unit"]; ok {
			c.errf(f.val, f.path, "should not specify a rate limit unit when unlimited")
		}
		for _, name := range []string{"window", "algorithm", "burst"} {
			if f, ok := m[name]; ok {
				c.errf(f.val, f.path, "should not be given when unlimited")
			}
		}
		return
	}
	c.limit(n, path, m, ls)
}

// limitItem compiles one item of a rate_limits list.
func (c *compiler) limitItem(n *yaml.Node, path string, ls *limitSet) {
	if m, ok := c.collect(n, path, limitFields); ok {
		c.limit(n, path, m, ls)
	}
}

// limit compiles one limit (unit or window, requests_per_unit, algorithm,
// burst) from a mapping's collected fields.
func (c *compiler) limit(n *yaml.Node, path string, m map[string]field, ls *limitSet) {
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow}
	var unit Unit
	before := len(c.errs)
	unitF, hasUnit := m["unit"]
	windowF, hasWindow := m["window"]
	quotaF, hasQuota := m["requests_per_unit"]
	if hasUnit {
		if s, ok := c.str(unitF.val, unitF.path); ok {
			u, err := ParseUnit(s)
			if err != nil {
				c.errf(unitF.val, unitF.path, "invalid rate limit unit %q (want second, minute, hour, day, week, month or year)", s)
			} else {
				unit = u
				l.Window = u.Duration()
			}
		}
	}
	if hasWindow {
		if s, ok := c.str(windowF.val, windowF.path); ok {
			w, err := time.ParseDuration(s)
			if err != nil {
				c.errf(windowF.val, windowF.path, "invalid window %q: want a duration such as 30s, 5m or 36h", s)
			} else {
				l.Window = w
			}
		}
	}
	if hasQuota {
		l.Quota, _ = c.integer(quotaF.val, quotaF.path, 0, floodgate.MaxQuota)
	}
	if f, ok := m["algorithm"]; ok {
		if s, ok := c.str(f.val, f.path); ok {
			a, err := floodgate.ParseAlgorithm(s)
			if err != nil {
				c.errf(f.val, f.path, "unknown algorithm %q (want fixed_window, sliding_window_log, sliding_window, token_bucket, gcra or concurrency)", s)
			} else {
				l.Algorithm = a
			}
		}
	}
	if f, ok := m["burst"]; ok {
		l.Burst, _ = c.integer(f.val, f.path, 1, floodgate.MaxQuota)
	}
	if len(c.errs) > before {
		return
	}
	switch {
	case hasUnit && hasWindow:
		c.errf(windowF.val, windowF.path, "give either unit or window, not both")
		return
	case !hasUnit && !hasWindow:
		c.errf(n, path+".unit", "missing: want a unit (second, minute, hour, day, week, month, year) or a window")
		return
	}
	if !hasQuota || l.Quota == 0 {
		// Envoy reads a missing requests_per_unit as 0, and 0 denies every
		// request: the way to block a value.
		ls.deny = true
		return
	}
	if err := l.Validate(); err != nil {
		at, atPath := n, path
		msg := err.Error()
		switch {
		case hasWindow && strings.Contains(msg, "window"):
			at, atPath = windowF.val, windowF.path
		case strings.Contains(msg, "burst") && m["burst"].val != nil:
			at, atPath = m["burst"].val, m["burst"].path
		case strings.Contains(msg, "quota"):
			at, atPath = quotaF.val, quotaF.path
		}
		c.errf(at, atPath, "%s", strings.TrimPrefix(msg, "floodgate: "))
		return
	}
	ls.limits = append(ls.limits, l)
	ls.units = append(ls.units, unit)
}

// tierOverrides compiles a descriptor's tiers block: tier name → limits.
func (c *compiler) tierOverrides(n *yaml.Node, field string) []tierLimits {
	n = c.resolve(n)
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		c.errf(n, field, "want a mapping of tier name to rate_limit, got %s", kindName(n))
		return nil
	}
	byTier := map[*tier]tierLimits{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := field + "." + k.Value
		t := c.tiers[k.Value]
		if t == nil {
			c.errf(k, path, "unknown tier %q: define it in the top-level tiers list", k.Value)
			continue
		}
		if _, dup := byTier[t]; dup {
			c.errf(k, path, "tier %q given twice", k.Value)
			continue
		}
		var rl, rls *yaml.Node
		c.fields(v, path, tierLimitFields, func(name, p string, _, fv *yaml.Node) {
			if name == "rate_limit" {
				rl = fv
			} else {
				rls = fv
			}
		})
		if rl == nil && rls == nil {
			c.errf(v, path, "want a rate_limit or rate_limits for the tier")
			continue
		}
		ls := c.limitBlocks(rl, rls, path, nil, false)
		byTier[t] = tierLimits{tier: t, limits: ls.limits, units: ls.units, unlimited: ls.unlimited, deny: ls.deny}
	}
	var out []tierLimits
	for _, t := range c.dom.tiers {
		if tl, ok := byTier[t]; ok {
			out = append(out, tl)
		}
	}
	return out
}
