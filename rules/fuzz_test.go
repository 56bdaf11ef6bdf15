package rules

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must return a set or errors,
// never panic; a returned set must answer Match.
func FuzzParse(f *testing.F) {
	for _, tc := range envoyTable {
		f.Add([]byte(tc.config))
	}
	f.Add([]byte(mappingConfig))
	for _, name := range []string{"../examples/ratelimit.yaml", "../examples/envoy/config.yaml"} {
		if data, err := os.ReadFile(filepath.FromSlash(name)); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			if s != nil {
				t.Fatal("a set and an error")
			}
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, dom := range s.Domains() {
			for _, r := range s.Rules(dom) {
				for _, l := range r.Limits {
					if err := l.Validate(); err != nil {
						t.Fatalf("rule %s: invalid limit: %v", r.ID, err)
					}
				}
			}
			s.Match(dom, []Entry{{"a", "b"}, {"c", "d"}})
		}
	})
}
