package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/floodgate/floodgate/admin"
	"github.com/floodgate/floodgate/httpapi"
)

func init() {
	register("admin", "call a running server's admin API: rules, inspect, reset, override, overrides, unoverride, audit", runAdminCtl)
}

const adminCtlUsage = `Usage: floodgate admin ACTION [flags]

Calls the admin API of a running floodgate serve or proxy (see docs/admin.md)
and prints its JSON answer. The token comes from --admin-token-file,
--admin-token or FLOODGATE_ADMIN_TOKEN, as for serve.

Actions:

	rules                                   the rules in force
	inspect    --domain D --descriptor k=v[,k=v]   a client's state, spending nothing
	reset      --domain D --descriptor k=v[,k=v]   forget a client's state
	override   --domain D --descriptor k=v[,k=v] --limit alg/quota/window[/burst] [--limit ...]
	           [--expires-in 24h] [--reason TEXT]   replace a client's limits on every instance
	overrides                               the overrides in force
	unoverride --domain D (--descriptor k=v[,k=v] | --key STOREKEY)
	audit                                   the audit log

Exit status: 0 when the API answered 2xx, 1 for another answer or no answer,
2 for bad usage.

Flags:
`

func runAdminCtl(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stdout, adminCtlUsage)
			return 0
		}
		fmt.Fprint(stderr, adminCtlUsage)
		return 2
	}
	action, rest := args[0], args[1:]
	var cfg adminConfig
	var domain, key, expires, reason string
	var timeout time.Duration
	var descs descriptorFlag
	var limits []httpapi.LimitSpec
	fs := flag.NewFlagSet("admin "+action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminFlags(&cfg, fs)
	fs.StringVar(&domain, "domain", "", "the descriptor's domain")
	fs.Var(&descs, "descriptor", "the descriptor, as key=value[,key=value]")
	fs.StringVar(&key, "key", "", "unoverride: the store key the overrides list shows, for an override whose rule is gone")
	fs.Func("limit", "override: a limit as algorithm/quota/window[/burst], e.g. token_bucket/1000/1m/200; repeat for several", func(s string) error {
		l, err := parseLimitFlag(s)
		if err != nil {
			return err
		}
		limits = append(limits, httpapi.LimitSpec{Algorithm: l.Algorithm.String(), Quota: l.Quota, Window: l.Window.String(), Burst: l.Burst})
		return nil
	})
	fs.StringVar(&expires, "expires-in", "", "override: how long it lasts, e.g. 24h (default: until unoverride)")
	fs.StringVar(&reason, "reason", "", "override: why, kept with it and in the audit log")
	fs.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), adminCtlUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, rest, os.LookupEnv); err != nil {
		return flagsExit(err)
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "floodgate admin %s: %s\n", action, msg)
		return 2
	}
	tok, err := cfg.resolve()
	if err != nil {
		return usage(err.Error())
	}
	if tok == "" {
		return usage("no token: set FLOODGATE_ADMIN_TOKEN, --admin-token-file or --admin-token")
	}
	if cfg.addr == "" {
		return usage("--admin: empty")
	}
	one := func() ([]admin.Entry, string) {
		if domain == "" || len(descs) != 1 {
			return nil, "give --domain and one --descriptor"
		}
		var d []admin.Entry
		for _, e := range descs[0] {
			d = append(d, admin.Entry{Key: e.Key, Value: e.Value})
		}
		return d, ""
	}
	var method, path string
	var body any
	switch action {
	case "rules", "overrides", "audit":
		method, path = http.MethodGet, "/admin/v1/"+action
	case "inspect", "reset":
		d, msg := one()
		if msg != "" {
			return usage(msg)
		}
		method, path, body = http.MethodPost, "/admin/v1/"+action, admin.KeyRequest{Domain: domain, Descriptor: d}
	case "override":
		d, msg := one()
		if msg != "" {
			return usage(msg)
		}
		if len(limits) == 0 {
			return usage("give at least one --limit")
		}
		method, path = http.MethodPut, "/admin/v1/overrides"
		body = admin.OverrideRequest{Domain: domain, Descriptor: d, Limits: limits, ExpiresIn: expires, Reason: reason}
	case "unoverride":
		req := admin.DeleteOverrideRequest{Domain: domain, Key: key}
		if key == "" {
			d, msg := one()
			if msg != "" {
				return usage(msg + " (or --key)")
			}
			req.Descriptor = d
		} else if domain == "" {
			return usage("give --domain with --key")
		}
		method, path, body = http.MethodDelete, "/admin/v1/overrides", req
	default:
		return usage(fmt.Sprintf("unknown action %q: want rules, inspect, reset, override, overrides, unoverride or audit", action))
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return usage(err.Error())
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	base := cfg.addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, rd)
	if err != nil {
		return usage(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "floodgate admin %s: %v\n", action, err)
		return 1
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		fmt.Fprintf(stderr, "floodgate admin %s: reading the answer: %v\n", action, err)
		return 1
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, raw, "", "  ") == nil {
		raw = append(pretty.Bytes(), '\n')
	}
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(stderr, "floodgate admin %s: %s\n%s", action, resp.Status, raw)
		return 1
	}
	_, _ = stdout.Write(raw)
	return 0
}
