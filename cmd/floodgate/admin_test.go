package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/floodgate/floodgate/internal/proctest"
	"github.com/floodgate/floodgate/internal/redistest"
	"github.com/floodgate/floodgate/overlimit"
)

const adminToken = "test-admin-token-0123456789"

// Three requests a day per user, from a token bucket: nothing refills
// during a test.
const adminRules = `
domain: api
descriptors:
  - key: user
    rate_limit: {requests_per_unit: 3, window: 24h, algorithm: token_bucket}
`

// startAdmin starts n serve processes with the admin API on, sharing the
// given flags, and returns them.
func startAdmin(t *testing.T, n int, args ...string) []*proctest.Process {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(cfg, []byte(adminRules), 0o644); err != nil {
		t.Fatal(err)
	}
	return proctest.StartN(t, n, proctest.Options{
		Args: append([]string{"serve", "--config", cfg}, args...),
		Env:  []string{"FLOODGATE_ADMIN_TOKEN=" + adminToken},
		Wait: []string{"http", "admin"},
	})
}

// adminCall sends one admin request with token tok and returns the status
// and the decoded body.
func adminCall(t *testing.T, p *proctest.Process, method, path, tok, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+p.Addr("admin")+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, out
}

const userAnn = `{"domain":"api","descriptor":[{"key":"user","value":"ann"}]}`

// remaining returns the units left of an inspect or reset answer's only
// limit.
func remaining(t *testing.T, body map[string]any) float64 {
	t.Helper()
	limits, _ := body["limits"].([]any)
	if len(limits) != 1 {
		t.Fatalf("limits: %v", body)
	}
	r, ok := limits[0].(map[string]any)["remaining"].(float64)
	if !ok {
		t.Fatalf("no remaining: %v", body)
	}
	return r
}

// spend sends requests for user ann through POST /json of p and returns
// how many were admitted.
func spend(t *testing.T, p *proctest.Process, n int) int {
	t.Helper()
	ok := 0
	for range n {
		if envoyJSON(t, p.URL("/json"), "api", "user", "ann") == http.StatusOK {
			ok++
		}
	}
	return ok
}

// TestAdminAPI: on the memory store, the admin API sees what POST /json
// spent, resets it, audits the reset and refuses a request without the
// token.
func TestAdminAPI(t *testing.T) {
	p := startAdmin(t, 1, "--store", "memory")[0]
	if got := spend(t, p, 5); got != 3 {
		t.Fatalf("admitted %d of 5, want 3", got)
	}
	if code, body := adminCall(t, p, "POST", "/admin/v1/inspect", "", userAnn); code != http.StatusUnauthorized {
		t.Errorf("inspect without the token: %d %v", code, body)
	}
	code, body := adminCall(t, p, "POST", "/admin/v1/inspect", adminToken, userAnn)
	if code != http.StatusOK || remaining(t, body) != 0 || body["rule"] != "api.user" {
		t.Fatalf("inspect: %d %v", code, body)
	}
	code, body = adminCall(t, p, "POST", "/admin/v1/reset", adminToken, userAnn)
	if code != http.StatusOK || body["reset"] != true || remaining(t, body) != 3 {
		t.Fatalf("reset: %d %v", code, body)
	}
	if got := spend(t, p, 5); got != 3 {
		t.Errorf("after the reset: admitted %d of 5, want 3", got)
	}
	code, body = adminCall(t, p, "GET", "/admin/v1/audit", adminToken, "")
	entries, _ := body["entries"].([]any)
	if code != http.StatusOK || len(entries) != 1 || entries[0].(map[string]any)["outcome"] != "done" {
		t.Errorf("audit: %d %v", code, body)
	}
	if !strings.Contains(p.Stderr(), "admin audit") {
		t.Errorf("no audit line in the log:\n%s", p.Stderr())
	}
}

// TestAdminRedis: two processes share a Redis server with the whole stack
// (over-limit cache, batching, breaker). A reset through one process's admin
// API gives the client a fresh quota of exactly 3 across both.
func TestAdminRedis(t *testing.T) {
	srv := redistest.StartServer(t)
	ps := startAdmin(t, 2, "--store", "redis://"+srv.Addr, "--store-timeout", "2s")
	if got := spend(t, ps[0], 4) + spend(t, ps[1], 2); got != 3 {
		t.Fatalf("admitted %d of 6 on two processes, want 3", got)
	}
	code, body := adminCall(t, ps[1], "POST", "/admin/v1/inspect", adminToken, userAnn)
	if code != http.StatusOK || remaining(t, body) != 0 {
		t.Fatalf("inspect on the second process: %d %v", code, body)
	}
	// Both processes hold the denial in their over-limit caches. The reset
	// through the first forgets its own at once; the second's answers for
	// at most --overlimit-max-lifetime (1s) after it was cached.
	code, body = adminCall(t, ps[0], "POST", "/admin/v1/reset", adminToken, userAnn)
	if code != http.StatusOK || remaining(t, body) != 3 {
		t.Fatalf("reset: %d %v", code, body)
	}
	reset := time.Now()
	if got := spend(t, ps[0], 2); got != 2 {
		t.Errorf("after the reset, through the process that reset: admitted %d of 2, want 2", got)
	}
	time.Sleep(overlimit.DefaultMaxLifetime + 100*time.Millisecond - time.Since(reset))
	if got := spend(t, ps[1], 2); got != 1 {
		t.Errorf("1.1s after the reset, through the other process: admitted %d of 2, want the last unit", got)
	}
	if got := spend(t, ps[0], 1); got != 0 {
		t.Errorf("past the fresh quota: admitted %d", got)
	}
}

// TestAdminOff: without a token the admin API does not listen; a token too
// short, or a token file that cannot be read, stop serve before it starts.
func TestAdminOff(t *testing.T) {
	p := proctest.Serve(t, "--store", "memory")
	if p.Addr("admin") != "" || !strings.Contains(p.Stderr(), "admin API off") {
		t.Errorf("admin API without a token: addr %q; log:\n%s", p.Addr("admin"), p.Stderr())
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--admin-token", "short"}, "want at least 16"},
		{[]string{"--admin-token-file", file + ".missing"}, "no such file"},
	} {
		_, stderr, code := proctest.Run(t, nil, append([]string{"serve", "--store", "memory"}, c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("serve %v: exit %d, want 2 saying %q; stderr:\n%s", c.args, code, c.want, stderr)
		}
	}
	// The token from a file works, and wins over one in the environment;
	// white space around a token in the environment is ignored.
	p = proctest.Start(t, proctest.Options{
		Args: []string{"serve", "--store", "memory", "--admin-token-file", file},
		Env:  []string{"FLOODGATE_ADMIN_TOKEN=another-token-0123456789"},
		Wait: []string{"http", "admin"},
	})
	if code, body := adminCall(t, p, "GET", "/admin/v1/rules", adminToken, ""); code != http.StatusOK {
		t.Errorf("rules with the file's token: %d %v", code, body)
	}
	p = proctest.Start(t, proctest.Options{
		Args: []string{"serve", "--store", "memory"},
		Env:  []string{"FLOODGATE_ADMIN_TOKEN=" + adminToken + "\n"},
		Wait: []string{"http", "admin"},
	})
	if code, body := adminCall(t, p, "GET", "/admin/v1/rules", adminToken, ""); code != http.StatusOK {
		t.Errorf("rules with a token from the environment ending in a newline: %d %v", code, body)
	}
}

// TestAdminOverrideRedis: an override put through one process's admin API
// applies in the other process, which shares the Redis server, within the
// overrides' polling interval (1s); its deletion too.
func TestAdminOverrideRedis(t *testing.T) {
	srv := redistest.StartServer(t)
	ps := startAdmin(t, 2, "--store", "redis://"+srv.Addr, "--store-timeout", "2s")
	put := `{"domain":"api","descriptor":[{"key":"user","value":"ann"}],"limits":[{"algorithm":"fixed_window","quota":6,"window":"8784h"}],"reason":"trial"}`
	code, body := adminCall(t, ps[0], "PUT", "/admin/v1/overrides", adminToken, put)
	if code != http.StatusOK {
		t.Fatalf("put: %d %v", code, body)
	}
	set := time.Now()
	// The other process sees it within its polling interval.
	for {
		code, body := adminCall(t, ps[1], "POST", "/admin/v1/inspect", adminToken, userAnn)
		if code == http.StatusOK && body["override"] == true {
			t.Logf("override seen by the other process %v after it was set", time.Since(set).Round(time.Millisecond))
			break
		}
		if time.Since(set) > 5*time.Second {
			t.Fatalf("the other process never applied the override: %d %v", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := spend(t, ps[1], 5) + spend(t, ps[0], 3); got != 6 {
		t.Errorf("under an override of 6: admitted %d of 8 on two processes", got)
	}
	code, body = adminCall(t, ps[1], "GET", "/admin/v1/overrides", adminToken, "")
	if list, _ := body["overrides"].([]any); code != http.StatusOK || len(list) != 1 {
		t.Errorf("list on the other process: %d %v", code, body)
	}
	if code, body := adminCall(t, ps[1], "DELETE", "/admin/v1/overrides", adminToken, userAnn); code != http.StatusOK {
		t.Fatalf("delete: %d %v", code, body)
	}
	deleted := time.Now()
	for {
		code, body := adminCall(t, ps[0], "POST", "/admin/v1/inspect", adminToken, userAnn)
		if code == http.StatusOK && body["override"] == nil {
			break
		}
		if time.Since(deleted) > 5*time.Second {
			t.Fatalf("the first process still applies the deleted override: %d %v", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The audit log is shared: the first process lists the put it made and
	// the delete the other made, numbered in one sequence.
	code, body = adminCall(t, ps[0], "GET", "/admin/v1/audit", adminToken, "")
	entries, _ := body["entries"].([]any)
	if code != http.StatusOK || body["shared"] != true || len(entries) != 2 {
		t.Fatalf("audit on the first process: %d %v", code, body)
	}
	newest, oldest := entries[0].(map[string]any), entries[1].(map[string]any)
	if newest["action"] != "delete override" || oldest["action"] != "override" || newest["seq"] != 2.0 || oldest["seq"] != 1.0 ||
		newest["instance"] == oldest["instance"] || newest["instance"] == nil {
		t.Errorf("shared audit: %v", entries)
	}
	// Back under the rule's own count: 3 a day, untouched so far.
	if got := spend(t, ps[0], 4); got != 3 {
		t.Errorf("after the delete: admitted %d of 4, want the rule's 3", got)
	}
}

// TestAdminCommand: floodgate admin drives a running server's admin API:
// inspect, reset, override and its removal, the lists, and clear failures.
func TestAdminCommand(t *testing.T) {
	p := startAdmin(t, 1, "--store", "memory")[0]
	env := []string{"FLOODGATE_ADMIN_TOKEN=" + adminToken}
	ctl := func(args ...string) (string, string, int) {
		t.Helper()
		return proctest.Run(t, env, append(append([]string{"admin"}, args[0], "--admin", p.Addr("admin")), args[1:]...)...)
	}
	spend(t, p, 2)
	out, stderr, code := ctl("inspect", "--domain", "api", "--descriptor", "user=ann")
	if code != 0 || !strings.Contains(out, `"remaining": 1`) {
		t.Fatalf("inspect: exit %d\n%s%s", code, out, stderr)
	}
	if out, stderr, code := ctl("reset", "--domain", "api", "--descriptor", "user=ann"); code != 0 || !strings.Contains(out, `"reset": true`) || !strings.Contains(out, `"remaining": 3`) {
		t.Errorf("reset: exit %d\n%s%s", code, out, stderr)
	}
	if out, stderr, code := ctl("override", "--domain", "api", "--descriptor", "user=ann", "--limit", "fixed_window/7/8784h", "--reason", "trial"); code != 0 || !strings.Contains(out, `"quota": 7`) {
		t.Errorf("override: exit %d\n%s%s", code, out, stderr)
	}
	if got := spend(t, p, 9); got != 7 {
		t.Errorf("under the override of 7: admitted %d of 9", got)
	}
	if out, _, code := ctl("overrides"); code != 0 || !strings.Contains(out, `"reason": "trial"`) {
		t.Errorf("overrides: exit %d\n%s", code, out)
	}
	if out, stderr, code := ctl("unoverride", "--domain", "api", "--descriptor", "user=ann"); code != 0 || !strings.Contains(out, `"deleted": true`) {
		t.Errorf("unoverride: exit %d\n%s%s", code, out, stderr)
	}
	if out, _, code := ctl("audit"); code != 0 || strings.Count(out, `"action"`) != 3 {
		t.Errorf("audit: exit %d, want 3 entries\n%s", code, out)
	}
	if out, _, code := ctl("rules"); code != 0 || !strings.Contains(out, `"api.user"`) {
		t.Errorf("rules: exit %d\n%s", code, out)
	}
	// Failures: an answer other than 2xx is exit 1 with the answer; bad
	// usage is exit 2.
	if _, stderr, code := ctl("unoverride", "--domain", "api", "--descriptor", "user=ann"); code != 1 || !strings.Contains(stderr, "404") {
		t.Errorf("unoverride of nothing: exit %d, %s", code, stderr)
	}
	if _, stderr, code := proctest.Run(t, []string{"FLOODGATE_ADMIN_TOKEN=wrong-token-0123456789"}, "admin", "rules", "--admin", p.Addr("admin")); code != 1 || !strings.Contains(stderr, "401") {
		t.Errorf("a wrong token: exit %d, %s", code, stderr)
	}
	for _, args := range [][]string{{"explode"}, {"inspect", "--domain", "api"}, {"override", "--domain", "api", "--descriptor", "user=a"}, {"override", "--domain", "api", "--descriptor", "user=a", "--limit", "nope"}} {
		if _, stderr, code := ctl(args...); code != 2 || stderr == "" {
			t.Errorf("admin %v: exit %d, %q; want 2 with a message", args, code, stderr)
		}
	}
	if _, stderr, code := proctest.Run(t, nil, "admin", "rules", "--admin", p.Addr("admin")); code != 2 || !strings.Contains(stderr, "no token") {
		t.Errorf("no token: exit %d, %s", code, stderr)
	}
}
