package rls

import (
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/headers"
)

// formatHeaders returns the response headers of mode for the decided
// statuses, formatted by package headers exactly as the middleware and the
// gateway write them: one policy per limit of each decided descriptor, named
// after its rule. Descriptors that the store did not decide (no rule,
// unlimited, deny, replaced) and shadow-mode rules carry no policy.
func formatHeaders(mode HeaderMode, sts []engine.Status) []headers.Field {
	var f headers.Fields
	switch mode {
	case DraftHeaders:
		f = headers.Draft | headers.RetryAfter
	case LegacyHeaders:
		f = headers.Legacy | headers.RetryAfter
	default:
		return nil
	}
	var stack [8]headers.Policy
	return headers.Append(nil, f, headers.Policies(stack[:0], sts)...)
}
