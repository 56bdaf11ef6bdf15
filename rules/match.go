package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/floodgate/floodgate"
)

// Match finds the rule for one descriptor of a request in domain, walking
// the configuration as envoyproxy/ratelimit does:
//
//   - At each level, for the descriptor's next entry, an exact key and value
//     is tried first, then the wildcard values of that key in the order they
//     were written (the first whose prefix fits wins), then the key-only
//     node.
//   - When the node found has a rate limit and the entry is the descriptor's
//     last, that is the rule.
//   - When the node has nested descriptors, the walk goes on with the next
//     entry among them; otherwise it stops: a descriptor longer than the
//     configured path, or one whose path ends at a node without a rate
//     limit, gets no rule.
//
// ok is false when no rule applies (unknown domain, no match, a node without
// a rate limit): the descriptor is admitted without being counted. The
// Match is filled even then, with the walk and the reason, for explanations.
func (s *Set) Match(domainName string, entries []Entry) (m Match, ok bool) {
	m.Domain = domainName
	m.entries = len(entries)
	if s == nil {
		m.end = endNoRules
		return m, false
	}
	d := s.domains[domainName]
	if d == nil {
		m.end = endUnknownDomain
		return m, false
	}
	if len(entries) == 0 {
		m.end = endEmpty
		return m, false
	}
	lvl := d.root
	var rule *Rule
	m.Path = make([]Step, 0, len(entries))
	for i, e := range entries {
		n, kind := lvl.find(e)
		if n == nil {
			m.end = endNoMatch
			m.failed = e
			break
		}
		m.Path = append(m.Path, Step{Entry: e, Kind: kind, Node: n.label(), Pos: n.pos})
		if i == len(entries)-1 {
			if n.rule != nil {
				rule = n.rule
				m.end = endRule
			} else {
				m.end = endNoLimit
			}
			break
		}
		if n.children == nil {
			m.end = endTooDeep
			break
		}
		lvl = n.children
	}
	if rule == nil {
		return m, false
	}
	m.Rule = rule
	m.Limits, m.Units, m.Unlimited, m.Deny = rule.Limits, rule.Units, rule.Unlimited, rule.Deny
	for _, tl := range rule.tiers {
		if inTier(tl.tier, entries) {
			m.Tier = tl.tier.name
			m.Limits, m.Units, m.Unlimited, m.Deny = tl.limits, tl.units, tl.unlimited, tl.deny
			break
		}
	}
	m.Key = storeKey(domainName, entries, rule, m.Path)
	return m, true
}

// How a walk ended, for Match.Reason.
const (
	endNoRules = iota + 1
	endUnknownDomain
	endEmpty
	endNoMatch
	endRule
	endNoLimit
	endTooDeep
)

// Reason explains in one line why the walk ended where it did: which entry
// matched which node and how, or why no rule applies.
func (m Match) Reason() string {
	var last Step
	if len(m.Path) > 0 {
		last = m.Path[len(m.Path)-1]
	}
	var s string
	switch m.end {
	case endNoRules:
		s = "no rules are loaded"
	case endUnknownDomain:
		s = fmt.Sprintf("unknown domain %q", m.Domain)
	case endEmpty:
		s = "the descriptor has no entries"
	case endNoMatch:
		s = fmt.Sprintf("no descriptor matches %s at level %d", m.failed, len(m.Path)+1)
	case endRule:
		s = fmt.Sprintf("%s matched %s (%s), which has a rate limit", last.Entry, last.Node, last.Kind)
	case endNoLimit:
		s = fmt.Sprintf("%s matched %s (%s), which has no rate limit: admitted", last.Entry, last.Node, last.Kind)
	case endTooDeep:
		s = fmt.Sprintf("%s matched %s (%s), which has no nested descriptors for the remaining %d entries", last.Entry, last.Node, last.Kind, m.entries-len(m.Path))
	default:
		return ""
	}
	if m.Tier != "" {
		s += fmt.Sprintf("; tier %q applies", m.Tier)
	}
	if m.Replaced {
		s += fmt.Sprintf("; replaced by another descriptor's rule (replaces %q)", m.Rule.Name)
	}
	return s
}

// inTier reports whether one of entries has t's key and one of its values.
func inTier(t *tier, entries []Entry) bool {
	for _, e := range entries {
		if e.Key == t.key && t.has(e.Value) {
			return true
		}
	}
	return false
}

// find looks an entry up in one level: exact, then wildcard, then key-only.
func (l *level) find(e Entry) (*node, MatchKind) {
	if n := l.exact[e]; n != nil {
		return n, Exact
	}
	for _, n := range l.wild {
		if n.key == e.Key && strings.HasPrefix(e.Value, n.prefix) {
			return n, Wildcard
		}
	}
	if n := l.keyOnly[e.Key]; n != nil {
		return n, KeyOnly
	}
	return nil, 0
}

// MatchRequest matches every descriptor of one request (see [Set.Match]) and
// applies replaces as Envoy's service does: when a matched rule replaces a
// name, every matched rule of the request with that name is marked Replaced
// (admitted without being counted). The result has one Match per
// descriptor; ok[i] reports whether descriptor i has a rule to decide.
func (s *Set) MatchRequest(domainName string, descriptors [][]Entry) (ms []Match, ok []bool) {
	ms = make([]Match, len(descriptors))
	ok = make([]bool, len(descriptors))
	var replaced map[string]bool
	for i, entries := range descriptors {
		ms[i], ok[i] = s.Match(domainName, entries)
		if ok[i] {
			for _, name := range ms[i].Rule.Replaces {
				if replaced == nil {
					replaced = map[string]bool{}
				}
				replaced[name] = true
			}
		}
	}
	for i := range ms {
		if ok[i] && ms[i].Rule.Name != "" && replaced[ms[i].Rule.Name] {
			ms[i].Replaced = true
			ok[i] = false
		}
	}
	return ms, ok
}

// storeKey builds the store key of a matched descriptor: the domain and
// every entry, as Envoy's cache key does (so each distinct value has its own
// counter). With share_threshold, the entry that matched the wildcard is
// written as its pattern, so that every matching value shares one counter.
//
// Format: domain|key=value|key=value, with %, |, =, {, }, * and control
// bytes percent-escaped in every part; a shared wildcard entry is written
// key=prefix* (its * unescaped). Keys longer than floodgate.MaxKeyLen are
// replaced by the domain and a SHA-256 of the full key.
func storeKey(domainName string, entries []Entry, rule *Rule, path []Step) string {
	var b strings.Builder
	n := len(domainName)
	for _, e := range entries {
		n += len(e.Key) + len(e.Value) + 2
	}
	b.Grow(n + 8)
	escape(&b, domainName)
	for i, e := range entries {
		b.WriteByte('|')
		escape(&b, e.Key)
		b.WriteByte('=')
		if rule.ShareThreshold && i == len(path)-1 && path[i].Kind == Wildcard {
			escape(&b, strings.TrimSuffix(path[i].Node[len(e.Key)+1:], "*"))
			b.WriteByte('*')
			continue
		}
		escape(&b, e.Value)
	}
	key := b.String()
	if len(key) <= floodgate.MaxKeyLen {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	var h strings.Builder
	escape(&h, domainName)
	prefix := h.String()
	if len(prefix) > floodgate.MaxKeyLen-80 {
		prefix = prefix[:floodgate.MaxKeyLen-80]
	}
	return prefix + "|#sha256=" + hex.EncodeToString(sum[:])
}

const hexDigits = "0123456789ABCDEF"

func escape(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f || c == '%' || c == '|' || c == '=' || c == '{' || c == '}' || c == '*' || c == '#':
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		default:
			b.WriteByte(c)
		}
	}
}

// String describes a match on one line: the rule, the tier, the limits and
// the store key, or why no rule applies.
func (m Match) String() string {
	if m.Rule == nil {
		return "no rule: " + m.Reason()
	}
	s := fmt.Sprintf("rule %s (%v): %s", m.Rule.ID, m.Rule.Pos, describeLimits(m.Limits, m.Unlimited, m.Deny))
	if m.Tier != "" {
		s += " [tier " + m.Tier + "]"
	}
	if m.Rule.ShadowMode {
		s += " [shadow mode]"
	}
	if m.Replaced {
		s += " [replaced]"
	}
	return s + " key " + m.Key
}
