package headers

import "github.com/floodgate/floodgate/engine"

// Policies appends to dst the policies of an engine decision, so that every
// front names them alike: one policy per limit of each descriptor the store
// decided, named after its rule (rate_limit.name when given, else the rule's
// id, such as "edge.remote_address"); a rule with several limits names each
// "<rule>/<derived limit name>" ("edge.api/10-per-1s"). Descriptors with no
// rule, unlimited, replaced or requests_per_unit 0 rules, and rules in
// shadow_mode (never advertised) add nothing.
func Policies(dst []Policy, sts []engine.Status) []Policy {
	for i := range sts {
		st := &sts[i]
		rule := st.Match.Rule
		if rule == nil || rule.ShadowMode || !st.Decided {
			continue
		}
		base := RuleName(st)
		for k, l := range st.Match.Limits {
			p := Policy{Name: base, Result: st.Result}
			if k < len(st.Each) {
				p.Result = st.Each[k]
			}
			p.Result.Limit = l
			if len(st.Match.Limits) > 1 {
				p.Name = base + "/" + Policy{Result: p.Result}.String()
			}
			dst = append(dst, p)
		}
	}
	return dst
}

// RuleName returns the name a status's rule goes by in the fields and in a
// denial's violated-policies: rate_limit.name, else the rule's id; "" when
// no rule matched.
func RuleName(st *engine.Status) string {
	if st.Match.Rule == nil {
		return ""
	}
	if st.Match.Rule.Name != "" {
		return st.Match.Rule.Name
	}
	return st.Match.Rule.ID
}
