package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/floodgate/floodgate/rules"
)

func init() {
	register("config", "validate rule files, or explain which rule matches a descriptor", runConfig)
}

const configUsage = `Usage:

	floodgate config validate FILE|DIR...
	floodgate config explain FILE|DIR... [--domain D] --descriptor key=value[,key=value] [--descriptor ...]

validate loads the files (a directory's *.yaml and *.yml files) and prints
every error with its file:line:column and field; exit status 0 when valid,
1 otherwise.

explain prints, for each descriptor (one --descriptor per descriptor of the
request), the path walked through the rules (exact, wildcard or key-only at
each level), the rule that matches and why, its limits and the store key.
--domain may be left out when the files define a single domain.
`

// runConfig runs "floodgate config".
func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, configUsage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, configUsage)
		return 0
	case "validate":
		return configValidate(args[1:], stdout, stderr)
	case "explain":
		return configExplain(args[1:], stdout, stderr, os.LookupEnv)
	}
	fmt.Fprintf(stderr, "floodgate config: unknown subcommand %q\n\n%s", args[0], configUsage)
	return 2
}

// configValidate runs "floodgate config validate".
func configValidate(args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Fprint(stdout, configUsage)
			return 0
		}
	}
	if len(args) == 0 {
		fmt.Fprintf(stderr, "floodgate config validate: give at least one file or directory\n\n%s", configUsage)
		return 2
	}
	set, err := rules.Load(args...)
	if err != nil {
		printErrors(stderr, err)
		return 1
	}
	n := 0
	for _, d := range set.Domains() {
		n += len(set.Rules(d))
	}
	fmt.Fprintf(stdout, "ok: %d file(s), domains %s, %d rule(s), version %s\n", len(set.Files()), strings.Join(set.Domains(), ", "), n, set.Version())
	return 0
}

// printErrors prints a load error, one problem per line.
func printErrors(w io.Writer, err error) {
	var errs rules.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(w, e)
		}
		fmt.Fprintf(w, "%d error(s)\n", len(errs))
		return
	}
	fmt.Fprintln(w, err)
}

// descriptorFlag collects repeated --descriptor values.
type descriptorFlag [][]rules.Entry

func (f *descriptorFlag) String() string { return "" }

func (f *descriptorFlag) Set(s string) error {
	var es []rules.Entry
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("entry %q: want key=value", kv)
		}
		es = append(es, rules.Entry{Key: k, Value: v})
	}
	*f = append(*f, es)
	return nil
}

// configExplain runs "floodgate config explain".
func configExplain(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	fs := flag.NewFlagSet("config explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("domain", "", "the domain (default: the only domain of the files)")
	var descs descriptorFlag
	fs.Var(&descs, "descriptor", "a descriptor as key=value[,key=value]; repeat for several descriptors of one request")
	fs.Usage = func() { fmt.Fprint(stderr, configUsage) }
	if v, ok := lookup(envName("domain")); ok {
		*domain = v
	}
	// Paths and flags may be interleaved.
	var paths []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if err == flag.ErrHelp {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		paths = append(paths, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(paths) == 0 || len(descs) == 0 {
		fmt.Fprintf(stderr, "floodgate config explain: give the rule files and at least one --descriptor\n\n%s", configUsage)
		return 2
	}
	set, err := rules.Load(paths...)
	if err != nil {
		printErrors(stderr, err)
		return 1
	}
	if *domain == "" {
		if ds := set.Domains(); len(ds) == 1 {
			*domain = ds[0]
		} else {
			fmt.Fprintf(stderr, "floodgate config explain: the files define domains %s; choose one with --domain\n", strings.Join(ds, ", "))
			return 2
		}
	}
	ms, ok := set.MatchRequest(*domain, descs)
	for i, m := range ms {
		explainMatch(stdout, descs[i], m, ok[i])
	}
	return 0
}

// explainMatch prints one descriptor's match.
func explainMatch(w io.Writer, desc []rules.Entry, m rules.Match, ok bool) {
	parts := make([]string, len(desc))
	for i, e := range desc {
		parts[i] = e.String()
	}
	fmt.Fprintf(w, "descriptor %s in domain %q\n", strings.Join(parts, ","), m.Domain)
	for i, st := range m.Path {
		fmt.Fprintf(w, "  level %d: %s matched %s (%s) at %v\n", i+1, st.Entry, st.Node, st.Kind, st.Pos)
	}
	fmt.Fprintf(w, "  why: %s\n", m.Reason())
	if m.Rule == nil {
		fmt.Fprintf(w, "  result: no rule; the descriptor is admitted without being counted\n\n")
		return
	}
	r := m.Rule
	fmt.Fprintf(w, "  rule: %s at %v\n", r.ID, r.Pos)
	if r.Name != "" {
		fmt.Fprintf(w, "  name: %s\n", r.Name)
	}
	if len(r.Replaces) > 0 {
		fmt.Fprintf(w, "  replaces: %s\n", strings.Join(r.Replaces, ", "))
	}
	if m.Tier != "" {
		fmt.Fprintf(w, "  tier: %s\n", m.Tier)
	}
	switch {
	case m.Unlimited:
		fmt.Fprintf(w, "  limits: unlimited (admitted, not counted)\n")
	case m.Deny:
		fmt.Fprintf(w, "  limits: requests_per_unit 0 (every request is over the limit)\n")
	default:
		for i, l := range m.Limits {
			unit := ""
			if i < len(m.Units) && m.Units[i] != 0 {
				unit = fmt.Sprintf(" (%d per %s)", l.Quota, m.Units[i])
			}
			fmt.Fprintf(w, "  limit: %v%s\n", l, unit)
		}
	}
	fmt.Fprintf(w, "  consistency: %v\n", r.Consistency)
	if r.OnStoreError != rules.FailureDefault {
		fmt.Fprintf(w, "  on_store_error: %v\n", r.OnStoreError)
	}
	if r.ShadowMode {
		fmt.Fprintf(w, "  shadow_mode: decided and counted, but always reported OK\n")
	}
	if r.ShareThreshold {
		fmt.Fprintf(w, "  share_threshold: every value matching the wildcard shares one counter\n")
	}
	fmt.Fprintf(w, "  store key: %s\n", m.Key)
	switch {
	case m.Replaced:
		fmt.Fprintf(w, "  result: replaced by another descriptor's rule; admitted without being counted\n\n")
	case ok:
		fmt.Fprintf(w, "  result: decided by this rule\n\n")
	}
}
