package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate/internal/proctest"
	"github.com/floodgate/floodgate/internal/redistest"
	"github.com/floodgate/floodgate/rules"
)

// proxyRules limits /api/ per client address, 3 per 366-day window (a window
// boundary falls inside the test about once in 30 million runs).
const proxyRules = `
domain: gw
requests:
  descriptors:
    - path_prefix: /api/
      entries:
        - {key: remote_address, from: client_ip}
descriptors:
  - key: remote_address
    rate_limit: {window: 8784h, requests_per_unit: 3}
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseProxy(t *testing.T) {
	env := map[string]string{
		"FLOODGATE_UPSTREAM": "http://127.0.0.1:9",
		"FLOODGATE_CONFIG":   "rules.yaml",
		"FLOODGATE_LISTEN":   "127.0.0.1:0",
		"FLOODGATE_DOMAIN":   "gw",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var stderr bytes.Buffer
	cfg, err := parseProxy([]string{"--domain", "other", "--legacy-headers"}, &stderr, lookup)
	if err != nil {
		t.Fatalf("parseProxy: %v\n%s", err, stderr.String())
	}
	if cfg.upstream != "http://127.0.0.1:9" || cfg.config != "rules.yaml" || cfg.listen != "127.0.0.1:0" || cfg.domain != "other" ||
		!cfg.legacyHeaders || cfg.stack != defaultStack {
		t.Errorf("parseProxy = %+v: want the environment, with the --domain flag winning", cfg)
	}
	// The store stack's flags are serve's.
	env["FLOODGATE_STORE_TIMEOUT"] = "250ms"
	env["FLOODGATE_BATCH"] = "false"
	cfg, err = parseProxy([]string{"--store", "redis://127.0.0.1:1", "--on-store-error", "fail_closed", "--breaker-failures", "7",
		"--overlimit-size", "300", "--sync-interval", "2s"}, &stderr, lookup)
	if err != nil {
		t.Fatalf("parseProxy: %v\n%s", err, stderr.String())
	}
	wantStack := stackConfig{store: "redis://127.0.0.1:1", syncInterval: 2 * time.Second, approxKeys: 1 << 20, onStoreError: rules.FailClosed,
		storeTimeout: 250 * time.Millisecond, breakerFailures: 7, throughput: defaultThroughput}
	wantStack.throughput.batch, wantStack.throughput.overlimitSize = false, 300
	if cfg.stack != wantStack {
		t.Errorf("parseProxy stack = %+v, want %+v", cfg.stack, wantStack)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", "x"}, "--upstream is required"},
		{[]string{"--upstream", "http://x", "--config", "x", "--on-store-error", "ignore"}, `unknown failure policy "ignore"`},
		{[]string{"--upstream", "http://x", "--config", "x", "--batch-max", "0"}, "--batch-max 0"},
		{[]string{"--upstream", "http://x", "--config", "x", "--sync-interval", "-1s"}, "--sync-interval -1s"},
		{[]string{"--upstream", "http://x", "--config", "x", "--approximate-max-keys", "0"}, "--approximate-max-keys 0"},
		{[]string{"--upstream", "http://x"}, "--config is required"},
		{[]string{"--upstream", "http://x", "--config", "x", "--tls-cert", "c"}, "--tls-cert and --tls-key go together"},
		{[]string{"--upstream", "http://x", "--config", "x", "--log-format", "xml"}, `--log-format "xml"`},
		{[]string{"--upstream", "http://x", "--config", "x", "extra"}, "unexpected arguments"},
	} {
		stderr.Reset()
		_, err := parseProxy(tc.args, &stderr, func(string) (string, bool) { return "", false })
		if err == nil || !strings.Contains(stderr.String(), tc.want) || flagsExit(err) != 2 {
			t.Errorf("parseProxy(%q): %v, stderr %q; want usage error %q", tc.args, err, stderr.String(), tc.want)
		}
	}
}

func TestProxyDomainErrors(t *testing.T) {
	noMapping := writeFile(t, "plain.yaml", "domain: plain\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n")
	good := writeFile(t, "gw.yaml", proxyRules)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", noMapping}, `has no requests block`},
		{[]string{"--config", good, "--domain", "nope"}, `no such domain in the rules (have gw)`},
		{[]string{"--config", good, "--upstream", "ftp://x"}, "want an absolute http:// or https:// URL"},
		{[]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, "cannot load rules"},
		{[]string{"--config", good, "--store", "nosuch://x"}, "unknown scheme"},
	} {
		args := append([]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9"}, tc.args...)
		_, stderr, code := proctest.Run(t, nil, args...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("floodgate %s: exit %d, stderr:\n%s\nwant exit 1 and %q", strings.Join(args, " "), code, stderr, tc.want)
		}
	}
}

// The real binary in front of a real upstream: limits enforced with the
// fields, the upstream's answers passed through, 502 when it is gone.
func TestProxyProcess(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			io.WriteString(w, "ok\n")
			return
		}
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Upstream", "yes")
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	}))
	defer up.Close()
	cfgFile := writeFile(t, "gw.yaml", proxyRules)
	p := proctest.Start(t, proctest.Options{
		Args: []string{"proxy", "--config", cfgFile, "--log-format", "json"},
		Env:  []string{"FLOODGATE_UPSTREAM=" + up.URL, "FLOODGATE_LISTEN=127.0.0.1:0"},
	})

	for i := 1; i <= 4; i++ {
		resp, err := client.Post(p.URL("/api/echo"), "text/plain", strings.NewReader(fmt.Sprintf("body %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("RateLimit-Policy"); got != `"gw.remote_address";q=3;w=31622400` {
			t.Errorf("request %d: RateLimit-Policy %q", i, got)
		}
		if i <= 3 {
			if resp.StatusCode != 200 || string(body) != fmt.Sprintf("POST /api/echo body %d", i) || resp.Header.Get("X-Upstream") != "yes" {
				t.Errorf("request %d: %s %q, want the upstream's answer", i, resp.Status, body)
			}
			if got, want := resp.Header.Get("RateLimit"), fmt.Sprintf(`"gw.remote_address";r=%d;t=`, 3-i); !strings.HasPrefix(got, want) {
				t.Errorf("request %d: RateLimit %q, want %s...", i, got, want)
			}
			continue
		}
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(string(body), `"type":"https://iana.org/assignments/http-problem-types#quota-exceeded"`) {
			t.Errorf("request 4: %s Retry-After %q %s, want 429 quota-exceeded", resp.Status, resp.Header.Get("Retry-After"), body)
		}
	}
	if hits.Load() != 3 {
		t.Errorf("upstream got %d /api requests, want 3", hits.Load())
	}
	if !strings.Contains(p.Stderr(), `"msg":"listening"`) || !strings.Contains(p.Stderr(), `"upstream":"`+up.URL+`"`) {
		t.Errorf("no listening line naming the upstream in:\n%s", p.Stderr())
	}

	// Upstream gone: 502 with a problem body. A fresh path outside /api/ is
	// not limited.
	up.Close()
	resp, err := client.Get(p.URL("/other"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(body), `"title":"Bad Gateway"`) {
		t.Errorf("upstream down: %s %q %s, want 502 problem+json", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	code, err := p.Stop()
	if err != nil || code != 0 {
		t.Errorf("stop: exit %d, %v; want 0", code, err)
	}
	for _, want := range []string{`"msg":"upstream error"`, `"msg":"stopped"`} {
		if !strings.Contains(p.Stderr(), want) {
			t.Errorf("no %s line:\n%s", want, p.Stderr())
		}
	}
	if strings.Contains(p.Stderr(), "panic") {
		t.Errorf("a panic in the logs:\n%s", p.Stderr())
	}
}

// The --listen address in use is a clear error.
func TestProxyListenInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, stderr, code := proctest.Run(t, nil, "proxy", "--listen", ln.Addr().String(), "--upstream", "http://127.0.0.1:9", "--config", writeFile(t, "gw.yaml", proxyRules))
	if code != 1 || !strings.Contains(stderr, "cannot listen") {
		t.Errorf("listen in use: exit %d, stderr:\n%s", code, stderr)
	}
}

// Serve and proxy define the store stack's flags alike: same names, usage
// and defaults.
func TestStackFlagsShared(t *testing.T) {
	var serveOut, proxyOut bytes.Buffer
	none := func(string) (string, bool) { return "", false }
	parseServe([]string{"-h"}, &serveOut, none)
	parseProxy([]string{"-h"}, &proxyOut, none)
	for _, name := range []string{"store", "on-store-error", "store-timeout", "breaker-failures", "breaker-cooldown",
		"assume-instances", "batch", "batch-window", "batch-max", "overlimit-cache", "overlimit-size", "sync-interval", "approximate-max-keys"} {
		s, p := flagHelp(serveOut.String(), name), flagHelp(proxyOut.String(), name)
		if s == "" || s != p {
			t.Errorf("--%s: serve's help %q, proxy's %q; want the same, not empty", name, s, p)
		}
	}
}

// flagHelp returns the lines of flag name in a FlagSet's PrintDefaults
// output, "" when absent.
func flagHelp(out, name string) string {
	var b strings.Builder
	in := false
	for line := range strings.Lines(out) {
		switch {
		case strings.HasPrefix(line, "  -"):
			f := strings.Fields(line[3:])
			in = len(f) > 0 && f[0] == name
		case !strings.HasPrefix(line, "    \t") && !strings.HasPrefix(line, "\t"):
			in = false
		}
		if in {
			b.WriteString(line)
		}
	}
	return b.String()
}

// TestProxyStoreOutage kills a real redis-server under two proxies, one
// with --on-store-error fail_closed and one with fail_open: the first
// denies with 429 without calling the upstream, the second forwards; both
// count the policy's decisions.
func TestProxyStoreOutage(t *testing.T) {
	srv := redistest.StartServer(t)
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			hits.Add(1)
		}
		io.WriteString(w, "ok\n")
	}))
	defer up.Close()
	cfgFile := writeFile(t, "gw.yaml", proxyRules)
	start := func(policy string) *proctest.Process {
		return proctest.Start(t, proctest.Options{
			Args: []string{"proxy", "--config", cfgFile, "--metrics", "127.0.0.1:0", "--store", "redis://" + srv.Addr,
				"--on-store-error", policy, "--store-timeout", "200ms", "--breaker-failures", "3", "--breaker-cooldown", "1h"},
			Env:  []string{"FLOODGATE_UPSTREAM=" + up.URL, "FLOODGATE_LISTEN=127.0.0.1:0"},
			Wait: []string{"http", "metrics"},
		})
	}
	closed, open := start("fail_closed"), start("fail_open")
	get := func(p *proctest.Process) int {
		t.Helper()
		resp, err := client.Get(p.URL("/api/x"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// One request each before the outage: 2 of the 3 the shared key allows.
	for _, p := range []*proctest.Process{closed, open} {
		if code := get(p); code != http.StatusOK {
			t.Fatalf("before the outage: status %d, want 200", code)
		}
	}
	if hits.Load() != 2 {
		t.Fatalf("upstream got %d requests before the outage, want 2", hits.Load())
	}
	srv.Kill()

	const n = 6
	for i := range n {
		if code := get(closed); code != http.StatusTooManyRequests {
			t.Fatalf("fail_closed, request %d during the outage: status %d, want 429", i, code)
		}
		if code := get(open); code != http.StatusOK {
			t.Fatalf("fail_open, request %d during the outage: status %d, want 200", i, code)
		}
	}
	if got := hits.Load(); got != 2+n {
		t.Errorf("upstream got %d requests, want %d: the fail_open proxy's %d during the outage and none of fail_closed's", got, 2+n, n)
	}
	for _, c := range []struct {
		p      *proctest.Process
		policy string
		result string
	}{{closed, "fail_closed", "denied"}, {open, "fail_open", "allowed"}} {
		m := scrape(t, "http://"+c.p.Addr("metrics")+"/metrics")
		want(t, m, map[string]float64{
			decision("gw", "gw.remote_address", "gateway", "ok"):                                      1,
			decision("gw", "gw.remote_address", "gateway", "policy_"+c.policy):                        n,
			series("floodgate_breaker_state", "shard", ""):                                            2,
			series("floodgate_engine_policy_decisions_total", "policy", c.policy, "result", c.result): n,
		})
	}
}

// slowUpstream is an upstream that answers "ok" at once, but holds requests
// to path until finish is closed (at most 20s), telling entered of each.
func slowUpstream(t *testing.T, path string) (up *httptest.Server, entered chan struct{}, finish chan struct{}) {
	entered, finish = make(chan struct{}, 4), make(chan struct{})
	up = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			entered <- struct{}{}
			select {
			case <-finish:
			case <-time.After(20 * time.Second):
			}
		}
		io.WriteString(w, "ok\n")
	}))
	t.Cleanup(up.Close)
	return up, entered, finish
}

// inflightRules allows two requests in flight per client address on /up/,
// across every proxy sharing the store.
const inflightRules = `
domain: gw
requests:
  descriptors:
    - path_prefix: /up/
      entries:
        - {key: uploads, from: client_ip}
descriptors:
  - key: uploads
    rate_limit: {requests_per_unit: 2, window: 10m, algorithm: concurrency}
`

// TestProxyInFlightRedis: two proxies on one Redis hold one request each in
// flight; a third, through either, is denied until one ends, and every
// lease comes back when its request is done.
func TestProxyInFlightRedis(t *testing.T) {
	up, entered, finish := slowUpstream(t, "/up/slow")
	srv := redistest.StartServer(t)
	ps := proctest.StartN(t, 2, proctest.Options{
		Args: []string{"proxy", "--config", writeFile(t, "gw.yaml", inflightRules), "--store", "redis://" + srv.Addr, "--store-timeout", "2s"},
		Env:  []string{"FLOODGATE_UPSTREAM=" + up.URL, "FLOODGATE_LISTEN=127.0.0.1:0"},
	})
	get := func(p *proctest.Process, path string) int {
		t.Helper()
		resp, err := client.Get(p.URL(path))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	slow := make(chan int, 2)
	for _, p := range ps {
		go func() { slow <- get(p, "/up/slow") }()
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("a slow request never reached the upstream")
		}
	}
	for i, p := range ps {
		if got := get(p, "/up/fast"); got != http.StatusTooManyRequests {
			t.Errorf("a third request in flight, through proxy %d: %d, want 429", i, got)
		}
	}
	close(finish)
	for range 2 {
		if c := <-slow; c != http.StatusOK {
			t.Errorf("a slow request: %d", c)
		}
	}
	for i := range 6 {
		if got := get(ps[i%2], "/up/fast"); got != http.StatusOK {
			t.Errorf("request %d after the slow ones ended: %d, want 200 (their leases released)", i, got)
		}
	}
}

// TestProxyShedding: with --shed-capacity 2 and normal requests shed at
// half of it, one normal request in flight turns away further normal and
// sheddable ones with 503, a critical one still passes, and the counts are
// in /metrics (normal admissions include the readiness probes of /healthz,
// which the proxy forwards, so they are not counted exactly).
func TestProxyShedding(t *testing.T) {
	up, entered, finish := slowUpstream(t, "/slow")
	p := proctest.Start(t, proctest.Options{
		Args: []string{"proxy", "--config", writeFile(t, "gw.yaml", proxyRules), "--metrics", "127.0.0.1:0",
			"--shed-capacity", "2", "--shed-normal-at", "0.5", "--shed-sheddable-at", "0.5"},
		Env:  []string{"FLOODGATE_UPSTREAM=" + up.URL, "FLOODGATE_LISTEN=127.0.0.1:0"},
		Wait: []string{"http", "metrics"},
	})
	get := func(path, priority string) (int, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", p.URL(path), nil)
		if priority != "" {
			req.Header.Set("X-Priority", priority)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	slow := make(chan int, 1)
	go func() { c, _ := get("/slow", ""); slow <- c }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never reached the upstream")
	}
	for _, pr := range []string{"normal", "sheddable", ""} {
		if code, h := get("/fast", pr); code != http.StatusServiceUnavailable || h.Get("Retry-After") != "1" {
			t.Errorf("priority %q with one request in flight of a normal limit of 1: %d, Retry-After %q; want 503", pr, code, h.Get("Retry-After"))
		}
	}
	if code, _ := get("/fast", "critical"); code != http.StatusOK {
		t.Errorf("a critical request with the reserve free: %d, want 200", code)
	}
	close(finish)
	if c := <-slow; c != http.StatusOK {
		t.Errorf("the slow request: %d", c)
	}
	if code, _ := get("/fast", ""); code != http.StatusOK {
		t.Errorf("a normal request once the slow one ended: %d, want 200", code)
	}
	resp, err := client.Get("http://" + p.Addr("metrics") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`floodgate_shed_requests_total{outcome="shed",priority="normal"} 2`,
		`floodgate_shed_requests_total{outcome="shed",priority="sheddable"} 1`,
		`floodgate_shed_requests_total{outcome="admitted",priority="critical"} 1`,
		"floodgate_shed_in_flight 0",
		"floodgate_shed_capacity 2",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("no %q in /metrics", want)
		}
	}
}

func TestShedFlags(t *testing.T) {
	ok := shedConfig{capacity: 10, sheddableAt: 0.5, normalAt: 0.9, header: "X-Priority"}
	if err := ok.check(); err != nil {
		t.Fatal(err)
	}
	off := shedConfig{}
	if err := off.check(); err != nil {
		t.Errorf("shedding off: %v", err)
	}
	for _, c := range []struct {
		mod  func(*shedConfig)
		want string
	}{
		{func(c *shedConfig) { c.sheddableAt = 0 }, "--shed-sheddable-at 0"},
		{func(c *shedConfig) { c.normalAt = 1.5 }, "--shed-normal-at 1.5"},
		{func(c *shedConfig) { c.normalAt = 0.3 }, "lower --shed-sheddable-at too"},
		{func(c *shedConfig) { c.header = "" }, "--shed-priority-header"},
		{func(c *shedConfig) { c.capacity = -1 }, "--shed-capacity -1"},
	} {
		cfg := ok
		c.mod(&cfg)
		if err := cfg.check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", cfg, err, c.want)
		}
	}
}
