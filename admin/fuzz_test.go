package admin_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/floodgate/floodgate/admin"
)

// FuzzBodies sends arbitrary bodies to every endpoint that reads one: the
// answer is a JSON object, an error (4xx, with a message) or a success,
// never a 5xx or a panic, and a refused body changes nothing.
func FuzzBodies(f *testing.F) {
	for _, s := range []string{
		`{"domain":"api","descriptor":[{"key":"user","value":"ann"}]}`,
		`{"domain":"api","descriptor":[{"key":"api_key","value":"gold"}]}`,
		`{"domain":"api","descriptor":[{"key":"user","value":"a"}],"limits":[{"algorithm":"gcra","quota":5,"window":"1s","burst":2}],"expires_in":"1h","reason":"r"}`,
		`{"domain":"api","key":"api|user=a"}`,
		`{"domain":"api","descriptor":[{"key":"region","value":"eu"}],"limits":[{"algorithm":"token_bucket","quota":1,"window":"1ms"}]}`,
		`{"domain":"","descriptor":null}`,
		`[]`, `null`, `{"domain":1}`, `{"limits":[{"quota":-1}]}`, "\x00\xff",
	} {
		for _, ep := range []string{"inspect", "reset", "put", "delete"} {
			f.Add(ep, s)
		}
	}
	f.Fuzz(func(t *testing.T, endpoint, body string) {
		method, path := "POST", "/admin/v1/inspect"
		switch endpoint {
		case "reset":
			path = "/admin/v1/reset"
		case "put":
			method, path = "PUT", "/admin/v1/overrides"
		case "delete":
			method, path = "DELETE", "/admin/v1/overrides"
		}
		f := newFixture(t, admin.Options{})
		w := serveOnce(f.h, method, path, body)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, w.Code, w.Body)
		}
		var answer map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
			t.Fatalf("%s %s %q: %d, not a JSON object: %s", method, path, body, w.Code, w.Body)
		}
		if w.Code >= 400 {
			if msg, _ := answer["error"].(string); strings.TrimSpace(msg) == "" {
				t.Fatalf("%s %s %q: %d without a message: %s", method, path, body, w.Code, w.Body)
			}
			if w.Code != http.StatusConflict && len(f.h.Audit()) != 0 {
				t.Fatalf("%s %s %q: %d, yet audited: %+v", method, path, body, w.Code, f.h.Audit())
			}
		}
	})
}
