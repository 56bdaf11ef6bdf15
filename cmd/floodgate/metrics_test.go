package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/floodgate/floodgate/internal/proctest"
	"github.com/floodgate/floodgate/internal/redistest"
)

// scrape reads GET /metrics of p into series text → value, the series
// written as the text format writes them (labels sorted by name).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// series writes name{k="v",...} with the labels sorted by name.
func series(name string, kv ...string) string {
	if len(kv) == 0 {
		return name
	}
	var ls []string
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
	}
	sort.Strings(ls)
	return name + "{" + strings.Join(ls, ",") + "}"
}

func decision(domain, rule, front, outcome string) string {
	return series("floodgate_decisions_total", "domain", domain, "rule", rule, "front", front, "outcome", outcome)
}

// want checks that every series of ws has its value in m.
func want(t *testing.T, m map[string]float64, ws map[string]float64) {
	t.Helper()
	for s, v := range ws {
		got, ok := m[s]
		switch {
		case !ok:
			t.Errorf("%s: missing", s)
		case got != v:
			t.Errorf("%s = %v, want %v", s, got, v)
		}
	}
}

// waitMetric scrapes until cond holds, for at most 15s (a rule reload is
// picked up at the next poll, every second).
func waitMetric(t *testing.T, url string, what string, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := scrape(t, url)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15s: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// envoyJSON posts one descriptor key=value of domain to POST /json and
// returns the status.
func envoyJSON(t *testing.T, url, domain, key, value string) int {
	t.Helper()
	body := fmt.Sprintf(`{"domain":%q,"descriptors":[{"entries":[{"key":%q,"value":%q}]}]}`, domain, key, value)
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST /json: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// check posts an inline limit to POST /v1/check and returns the status and
// the policy the answer names.
func check(t *testing.T, url, key string) (int, string) {
	t.Helper()
	resp, err := client.Post(url, "application/json", strings.NewReader(`{"key":"`+key+`","limit":`+yearly+`}`))
	if err != nil {
		t.Fatalf("POST /v1/check: %v", err)
	}
	defer resp.Body.Close()
	var r struct {
		Policy string `json:"policy"`
		Error  string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("POST /v1/check: %v", err)
	}
	return resp.StatusCode, r.Policy
}

const metricsRules = `
domain: edge
descriptors:
  - key: ip
    rate_limit: {unit: day, requests_per_unit: 2}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: day, requests_per_unit: 1}
`

func TestServeMetrics(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(file, []byte(metricsRules), 0o644); err != nil {
		t.Fatal(err)
	}
	p := proctest.Serve(t, "--config", dir)
	mu := p.URL("/metrics")
	before := scrape(t, mu)
	if _, ok := before["go_goroutines"]; !ok {
		t.Error("no go_goroutines")
	}
	if _, ok := before["process_resident_memory_bytes"]; !ok {
		t.Error("no process_resident_memory_bytes")
	}
	var v1 string
	for s := range before {
		if strings.HasPrefix(s, "floodgate_config_info{") {
			v1 = s
		}
	}
	if v1 == "" || before[v1] != 1 {
		t.Fatalf("no floodgate_config_info: %v", v1)
	}

	for i, code := range []int{200, 200, 429} {
		if got := envoyJSON(t, p.URL("/json"), "edge", "ip", "10.0.0.1"); got != code {
			t.Fatalf("/json %d: status %d, want %d", i, got, code)
		}
	}
	envoyJSON(t, p.URL("/json"), "edge", "shadow", "x")
	envoyJSON(t, p.URL("/json"), "edge", "shadow", "x")
	envoyJSON(t, p.URL("/json"), "edge", "unmatched", "x")
	envoyJSON(t, p.URL("/json"), "elsewhere", "ip", "x")
	if code, _ := check(t, p.URL("/v1/check"), "metrics-ok"); code != 200 {
		t.Fatalf("/v1/check: %d", code)
	}
	m := scrape(t, mu)
	want(t, m, map[string]float64{
		decision("edge", "edge.ip", "http_json", "ok"):                    2,
		decision("edge", "edge.ip", "http_json", "over_limit"):            1,
		decision("edge", "edge.shadow", "http_json", "ok"):                1,
		decision("edge", "edge.shadow", "http_json", "shadow_over_limit"): 1,
		decision("edge", "", "http_json", "ok"):                           1,
		decision("", "", "http_json", "ok"):                               1,
		decision("", "", "v1_check", "ok"):                                1,
		series("floodgate_store_call_duration_seconds_count"):             6, // ip 3, shadow 2, check 1: the unmatched call no store
		series("floodgate_rules_reloads_total", "result", "success"):      0,
		series("floodgate_rules_reloads_total", "result", "failure"):      0,
	})
	for s := range m {
		if strings.Contains(s, "10.0.0.1") {
			t.Errorf("a descriptor value in a series: %s", s)
		}
	}

	// A broken file: counted, the version in force stays.
	if err := os.WriteFile(file, []byte("domain: edge\ndescriptors: [{key: ip, rate_limit: {unit: fortnight}}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	failed := series("floodgate_rules_reloads_total", "result", "failure")
	m = waitMetric(t, mu, "reload failure counted", func(m map[string]float64) bool { return m[failed] == 1 })
	want(t, m, map[string]float64{v1: 1, series("floodgate_rules_reload_failing"): 1})

	// A good file: a reload, a new version.
	if err := os.WriteFile(file, []byte(metricsRules+"  - key: more\n    rate_limit: {unit: second, requests_per_unit: 5}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := series("floodgate_rules_reloads_total", "result", "success")
	m = waitMetric(t, mu, "reload success counted", func(m map[string]float64) bool { return m[ok] == 1 })
	if _, still := m[v1]; still {
		t.Errorf("old version %s still exported", v1)
	}
	want(t, m, map[string]float64{series("floodgate_rules_reload_failing"): 0})
}

func TestServeMetricsListener(t *testing.T) {
	p := proctest.Start(t, proctest.Options{
		Args: []string{"serve", "--metrics", "127.0.0.1:0"},
		Wait: []string{"http", "metrics"},
	})
	if resp, err := client.Get(p.URL("/metrics")); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on --http: status %d, want 404 with --metrics", resp.StatusCode)
	}
	m := scrape(t, "http://"+p.Addr("metrics")+"/metrics")
	if _, ok := m["go_goroutines"]; !ok {
		t.Error("no go_goroutines on --metrics")
	}
}

// TestServeStoreOutageMetrics kills a real redis-server under two serve
// processes, one with --on-store-error fail_closed and one with fail_open:
// POST /v1/check answers by policy (429 and 200), the breaker opens, and
// the metrics say so.
func TestServeStoreOutageMetrics(t *testing.T) {
	srv := redistest.StartServer(t)
	store := "redis://" + srv.Addr
	rules := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(rules, []byte(metricsRules), 0o644); err != nil {
		t.Fatal(err)
	}
	common := []string{"--store", store, "--config", rules, "--store-timeout", "200ms", "--breaker-failures", "3", "--breaker-cooldown", "1h"}
	closed := proctest.Serve(t, append([]string{"--on-store-error", "fail_closed"}, common...)...)
	open := proctest.Serve(t, append([]string{"--on-store-error", "fail_open"}, common...)...)
	for _, p := range []*proctest.Process{closed, open} {
		if code, pol := check(t, p.URL("/v1/check"), "outage-"+strconv.Itoa(p.Pid())); code != 200 || pol != "" {
			t.Fatalf("before the outage: %d %q", code, pol)
		}
		m := scrape(t, p.URL("/metrics"))
		if live := m["floodgate_live_instances"]; live < 1 || live > 2 {
			t.Errorf("floodgate_live_instances = %v, want 1 or 2", live)
		}
		want(t, m, map[string]float64{
			series("floodgate_breaker_state", "shard", ""): 0,
			decision("", "", "v1_check", "ok"):             1,
		})
	}
	srv.Kill()

	const n = 6
	for i := range n {
		code, pol := check(t, closed.URL("/v1/check"), "outage-k")
		if code != http.StatusTooManyRequests || pol != "fail_closed" {
			t.Fatalf("fail_closed, check %d during the outage: status %d policy %q, want 429 fail_closed", i, code, pol)
		}
		code, pol = check(t, open.URL("/v1/check"), "outage-k")
		if code != http.StatusOK || pol != "fail_open" {
			t.Fatalf("fail_open, check %d during the outage: status %d policy %q, want 200 fail_open", i, code, pol)
		}
	}
	if code := envoyJSON(t, closed.URL("/json"), "edge", "ip", "x"); code != http.StatusTooManyRequests {
		t.Errorf("fail_closed /json during the outage: %d", code)
	}
	if code := envoyJSON(t, open.URL("/json"), "edge", "ip", "x"); code != http.StatusOK {
		t.Errorf("fail_open /json during the outage: %d", code)
	}
	for _, c := range []struct {
		p      *proctest.Process
		policy string
		result string
	}{{closed, "fail_closed", "denied"}, {open, "fail_open", "allowed"}} {
		m := scrape(t, c.p.URL("/metrics"))
		want(t, m, map[string]float64{
			series("floodgate_breaker_state", "shard", ""):                                            2,
			series("floodgate_breaker_transitions_total", "to", "open"):                               1,
			decision("", "", "v1_check", "policy_"+c.policy):                                          n,
			decision("edge", "edge.ip", "http_json", "policy_"+c.policy):                              1,
			series("floodgate_engine_store_errors_total"):                                             n + 1,
			series("floodgate_engine_policy_decisions_total", "policy", c.policy, "result", c.result): n + 1,
		})
		if fails := m[series("floodgate_store_call_errors_total", "kind", "error")] + m[series("floodgate_store_call_errors_total", "kind", "timeout")]; fails < 3 {
			t.Errorf("%s: %v failed store calls counted, want at least the 3 that opened the breaker", c.policy, fails)
		}
		if r := m[series("floodgate_breaker_rejected_total")]; r < 1 {
			t.Errorf("%s: %v calls rejected by the open breaker", c.policy, r)
		}
	}
}

func TestProxyMetrics(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	defer up.Close()
	cfgFile := writeFile(t, "gw.yaml", proxyRules)
	p := proctest.Start(t, proctest.Options{
		Args: []string{"proxy", "--config", cfgFile, "--metrics", "127.0.0.1:0"},
		Env:  []string{"FLOODGATE_UPSTREAM=" + up.URL, "FLOODGATE_LISTEN=127.0.0.1:0"},
		Wait: []string{"http", "metrics"},
	})
	for i := range 4 {
		resp, err := client.Get(p.URL("/api/x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: 200, false: 429}[i < 3]; resp.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	// /metrics on --listen belongs to the upstream.
	resp, err := client.Get(p.URL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok\n" {
		t.Errorf("/metrics on --listen answered %q, want the upstream's answer", body)
	}
	m := scrape(t, "http://"+p.Addr("metrics")+"/metrics")
	want(t, m, map[string]float64{
		decision("gw", "gw.remote_address", "gateway", "ok"):         3,
		decision("gw", "gw.remote_address", "gateway", "over_limit"): 1,
		series("floodgate_rules_reloads_total", "result", "success"): 0,
	})
}
