package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runConfig(context.Background(), []string{"validate", "../../examples/ratelimit.yaml", "../../examples/envoy"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "ok: 2 file(s), domains default, edge") {
		t.Errorf("output %q", out.String())
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n  - key: ''\n"), 0o644)
	out.Reset()
	errb.Reset()
	if code := runConfig(context.Background(), []string{"validate", bad}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	want := bad + ":4:24: descriptors[0].rate_limit.unit: invalid rate limit unit \"fortnight\""
	if !strings.Contains(errb.String(), want) || !strings.Contains(errb.String(), bad+":5:5: descriptors[1].key: descriptor has an empty key") || !strings.Contains(errb.String(), "2 error(s)") {
		t.Errorf("stderr:\n%s\nwant %q", errb.String(), want)
	}
}

func TestConfigExplain(t *testing.T) {
	var out, errb bytes.Buffer
	none := func(string) (string, bool) { return "", false }
	code := configExplain([]string{"../../examples/envoy", "--descriptor", "path=/static/app.js", "--descriptor", "path=/reports/q1", "--descriptor", "remote_address=10.0.0.1"}, &out, &errb, none)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"level 1: path=/static/app.js matched path=/static/* (wildcard)",
		"which has no rate limit: admitted",
		"level 1: path=/reports/q1 matched path=/reports/* (wildcard)",
		"shadow_mode: decided and counted, but always reported OK",
		"level 1: remote_address=10.0.0.1 matched remote_address (key-only)",
		"limit: fixed_window 100/1s (100 per second)",
		"store key: edge|remote_address=10.0.0.1",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
	// Two domains and no --domain: usage error.
	if code := configExplain([]string{"../../examples", "../../examples/envoy", "--descriptor", "a=b"}, &out, &errb, none); code == 0 {
		t.Errorf("exit 0 without --domain over two domains")
	}
}
