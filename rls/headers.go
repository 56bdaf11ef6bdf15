package rls

import (
	"strconv"
	"strings"

	"github.com/floodgate/floodgate/engine"
)

// formatHeaders returns the response headers of mode for the decided
// statuses, as key/value pairs. Descriptors that the store did not decide
// (no rule, unlimited, deny, replaced) carry no policy.
//
// Draft: one policy per limit of each decided descriptor, named by the
// rule's name, else its id, with "/N" appended for the Nth limit (from 0) of
// a rule with several limits:
//
//	RateLimit-Policy: "default.remote_address";q=10;w=1
//	RateLimit: "default.remote_address";r=7;t=1
//
// Legacy: the deciding result of the most restrictive descriptor (a denied
// one first, else the fewest remaining): X-RateLimit-Limit (its quota),
// X-RateLimit-Remaining, X-RateLimit-Reset (whole seconds, rounded up).
func formatHeaders(mode HeaderMode, sts []engine.Status) [][2]string {
	switch mode {
	case DraftHeaders:
		var policy, state []string
		for i := range sts {
			st := &sts[i]
			if !st.Decided {
				continue
			}
			base := st.Match.Rule.Name
			if base == "" {
				base = st.Match.Rule.ID
			}
			for k, l := range st.Match.Limits {
				name := base
				if len(st.Match.Limits) > 1 {
					name += "/" + strconv.Itoa(k)
				}
				q := sfString(name)
				policy = append(policy, q+";q="+strconv.FormatInt(l.Quota, 10)+";w="+strconv.FormatInt(ceilSeconds(l.Window), 10))
				r := st.Result
				if k < len(st.Each) {
					r = st.Each[k]
				}
				state = append(state, q+";r="+strconv.FormatInt(r.Remaining, 10)+";t="+strconv.FormatInt(ceilSeconds(r.ResetAfter), 10))
			}
		}
		if len(policy) == 0 {
			return nil
		}
		return [][2]string{{"RateLimit-Policy", strings.Join(policy, ", ")}, {"RateLimit", strings.Join(state, ", ")}}
	case LegacyHeaders:
		var best *engine.Status
		for i := range sts {
			st := &sts[i]
			if !st.Decided {
				continue
			}
			switch {
			case best == nil,
				!st.Result.Allowed && best.Result.Allowed,
				st.Result.Allowed == best.Result.Allowed && st.Result.Remaining < best.Result.Remaining:
				best = st
			}
		}
		if best == nil {
			return nil
		}
		return [][2]string{
			{"X-RateLimit-Limit", strconv.FormatInt(best.Result.Limit.Quota, 10)},
			{"X-RateLimit-Remaining", strconv.FormatInt(best.Result.Remaining, 10)},
			{"X-RateLimit-Reset", strconv.FormatInt(ceilSeconds(best.Result.ResetAfter), 10)},
		}
	}
	return nil
}

// sfString formats s as a structured-field String (RFC 8941): quoted, with
// " and \ escaped; bytes outside printable ASCII become '_'.
func sfString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
