// Package rules loads rate-limit rules written in the configuration format
// of envoyproxy/ratelimit, with floodgate's extensions, and matches request
// descriptors against them.
//
// # Loading
//
// [Load] compiles files or directories (one domain per file) into a [Set];
// [Parse] compiles one file's bytes. A Set is immutable and safe for
// concurrent use. On a bad file they return [Errors]: every problem, each
// with file:line:column, the field and a plain message.
//
// # Matching
//
// [Set.Match] finds the rule for one descriptor (a list of [Entry]) exactly
// as envoyproxy/ratelimit does: exact value, then wildcard value (ending in
// *), then key-only, entry by entry down nested descriptors.
// [Set.MatchRequest] matches all the descriptors of one request and applies
// replaces. A [Match] carries the [floodgate.Limit] values to decide with,
// the shadow mode, consistency and failure policy of the [Rule], the walk
// taken (for explanations) and the store key.
//
// # Requests
//
// A file's requests block maps HTTP requests to descriptors: [Set.Mapper],
// [Mapper.Descriptors], and [ClientIP] for the client address behind
// trusted proxies.
//
// # Reloading
//
// [Watch] polls files for changes and swaps in a new Set atomically; an
// invalid file keeps the previous rules.
//
// The format, every matching rule and the extensions are described with
// examples in docs/configuration.md.
package rules
