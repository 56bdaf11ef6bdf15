package rules

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
)

// d parses "k=v,k2=v2" into entries.
func d(s string) []Entry {
	var es []Entry
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		es = append(es, Entry{Key: k, Value: v})
	}
	return es
}

func mustParse(t *testing.T, src string) *Set {
	t.Helper()
	s, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

// fw is a fixed window limit.
func fw(q int64, w time.Duration) floodgate.Limit {
	return floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: q, Window: w}
}

// want describes an expected match: "" for no rule, else the rule's limits
// as Rule.String prints them, optionally followed by flags.
type matchCase struct {
	descriptor string
	want       string // "" = no rule; else describeLimits output
	rule       string // expected Rule.ID when non-empty
	tier       string
}

var envoyTable = []struct {
	name   string
	config string
	cases  []matchCase
}{
	{
		name: "key-only default and exact override (Envoy example 3)",
		config: `
domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
`,
		cases: []matchCase{
			{"remote_address=50.0.0.1", "fixed_window 10/1s", "edge_proxy_per_ip.remote_address", ""},
			{"remote_address=50.0.0.5", "deny (requests_per_unit 0)", "edge_proxy_per_ip.remote_address_50.0.0.5", ""},
			{"remote_address=", "fixed_window 10/1s", "", ""},
			{"other=1", "", "", ""},
			{"remote_address=1.2.3.4,path=/x", "", "", ""}, // longer than the configured path
		},
	},
	{
		name: "nested override and key-only nested (Envoy example 2)",
		config: `
domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 5
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 100
`,
		cases: []matchCase{
			{"message_type=marketing,to_number=2061111111", "fixed_window 5/24h0m0s", "messaging.message_type_marketing.to_number", ""},
			{"to_number=2061111111", "fixed_window 100/24h0m0s", "messaging.to_number", ""},
			{"message_type=marketing", "", "", ""}, // placeholder node without a limit
			{"message_type=other,to_number=1", "", "", ""},
		},
	},
	{
		name: "depth must match (Envoy example 4)",
		config: `
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit: {requests_per_unit: 300, unit: second}
  - key: k2
    value: v2
    descriptors:
      - key: subkey
        rate_limit: {requests_per_unit: 300, unit: second}
`,
		cases: []matchCase{
			{"key=value,subkey=subvalue", "", "", ""},
			{"key=value", "fixed_window 300/1s", "", ""},
			{"k2=v2,subkey=anything", "fixed_window 300/1s", "example4.k2_v2.subkey", ""},
			{"k2=v2", "", "", ""},
		},
	},
	{
		name: "whitelisting by a value with no limit, and unlimited (Envoy example 5)",
		config: `
domain: internal
descriptors:
  - key: client
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: client
    value: trusted
  - key: ldap
    rate_limit:
      unlimited: true
`,
		cases: []matchCase{
			{"client=a", "fixed_window 100/1m0s", "", ""},
			{"client=trusted", "", "", ""},
			{"ldap=x", "unlimited", "internal.ldap", ""},
		},
	},
	{
		name: "wildcards: at the end, inner * is literal, declaration order, exact first",
		config: `
domain: wild
descriptors:
  - key: path
    value: /api/v1/*
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    value: /api/v1/special
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    value: /files/*/meta
    rate_limit: {unit: minute, requests_per_unit: 4}
  - key: path
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: user
    value: "*"
    descriptors:
      - key: op
        value: read*
        rate_limit: {unit: second, requests_per_unit: 6}
`,
		cases: []matchCase{
			{"path=/api/v1/users", "fixed_window 1/1m0s", "wild.path_/api/v1/*", ""},
			{"path=/api/v1/", "fixed_window 1/1m0s", "", ""},
			{"path=/api/v2/users", "fixed_window 2/1m0s", "", ""},
			{"path=/api/v1/special", "fixed_window 3/1m0s", "", ""},
			{"path=/files/*/meta", "fixed_window 4/1m0s", "", ""},     // inner * matches itself only
			{"path=/files/a.txt/meta", "fixed_window 5/1m0s", "", ""}, // falls back to key-only
			{"path=/other", "fixed_window 5/1m0s", "", ""},
			{"user=alice,op=readAll", "fixed_window 6/1s", "wild.user_*.op_read*", ""},
			{"user=alice,op=write", "", "", ""},
		},
	},
	{
		name: "shadow mode (Envoy example 6)",
		config: `
domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit: {requests_per_unit: 10, unit: second}
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit: {requests_per_unit: 20, unit: second}
`,
		cases: []matchCase{
			{"service=auth,user=user-a", "fixed_window 10/1s", "example6.service.user_user-a", ""},
			{"service=auth,user=user-b", "fixed_window 20/1s", "", ""},
		},
	},
	{
		name: "extensions: algorithm, window, burst, rate_limits, tiers",
		config: `
domain: ext
tiers:
  - name: premium
    key: api_key
    values: [gold-1, "vip-*"]
descriptors:
  - key: api_key
    rate_limit:
      unit: second
      requests_per_unit: 10
      algorithm: token_bucket
      burst: 20
    tiers:
      premium:
        rate_limit: {unit: second, requests_per_unit: 100, algorithm: token_bucket, burst: 200}
  - key: tenant
    rate_limits:
      - {requests_per_unit: 10, window: 30s, algorithm: sliding_window}
      - {requests_per_unit: 1000, unit: day}
  - key: conc
    rate_limit: {requests_per_unit: 5, window: 1m, algorithm: concurrency}
`,
		cases: []matchCase{
			{"api_key=free-1", "token_bucket 10/1s burst 20", "", ""},
			{"api_key=gold-1", "token_bucket 100/1s burst 200", "", "premium"},
			{"api_key=vip-42", "token_bucket 100/1s burst 200", "", "premium"},
			{"tenant=t1", "sliding_window 10/30s and fixed_window 1000/24h0m0s", "", ""},
			{"conc=x", "concurrency 5/1m0s", "", ""},
		},
	},
}

func TestMatchTable(t *testing.T) {
	for _, tc := range envoyTable {
		t.Run(tc.name, func(t *testing.T) {
			s := mustParse(t, tc.config)
			dom := s.Domains()[0]
			for _, c := range tc.cases {
				m, ok := s.Match(dom, d(c.descriptor))
				got := ""
				if ok {
					got = describeLimits(m.Limits, m.Unlimited, m.Deny)
				}
				if got != c.want {
					t.Errorf("%s: got %q, want %q (%s)", c.descriptor, got, c.want, m.Reason())
					continue
				}
				if ok && c.rule != "" && m.Rule.ID != c.rule {
					t.Errorf("%s: rule %q, want %q", c.descriptor, m.Rule.ID, c.rule)
				}
				if m.Tier != c.tier {
					t.Errorf("%s: tier %q, want %q", c.descriptor, m.Tier, c.tier)
				}
				for _, l := range m.Limits {
					if err := l.Validate(); err != nil {
						t.Errorf("%s: invalid limit: %v", c.descriptor, err)
					}
				}
			}
		})
	}
}

func TestShadowModeFlag(t *testing.T) {
	s := mustParse(t, envoyTable[5].config)
	m, _ := s.Match("example6", d("service=auth,user=user-a"))
	if !m.Rule.ShadowMode {
		t.Fatal("user-a should be in shadow mode")
	}
	m, _ = s.Match("example6", d("service=auth,user=user-b"))
	if m.Rule.ShadowMode {
		t.Fatal("user-b should not be in shadow mode")
	}
}

// Envoy's example 7: replaces.
func TestReplaces(t *testing.T) {
	s := mustParse(t, `
domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
`)
	one := d("key_1=value_1,user=bkthomps")
	two := d("key_2=value_2,user=bkthomps")
	ms, ok := s.MatchRequest("example7", [][]Entry{one})
	if !ok[0] || ms[0].Limits[0].Quota != 5 {
		t.Fatalf("alone: %v %v", ms[0], ok[0])
	}
	ms, ok = s.MatchRequest("example7", [][]Entry{one, two})
	if ok[0] || !ms[0].Replaced {
		t.Errorf("the 5/s rule should be replaced: %v", ms[0])
	}
	if !ok[1] || ms[1].Limits[0].Quota != 10 {
		t.Errorf("the 10/s rule should apply: %v", ms[1])
	}
}

func TestStoreKey(t *testing.T) {
	s := mustParse(t, `
domain: k
descriptors:
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: path
    value: /files/*
    share_threshold: true
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: p2
    value: /files/*
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: a
    descriptors:
      - key: b
        rate_limit: {unit: second, requests_per_unit: 1}
`)
	key := func(desc []Entry) string {
		m, ok := s.Match("k", desc)
		if !ok {
			t.Fatalf("%v: no match", desc)
		}
		if err := floodgate.ValidateKey(m.Key); err != nil {
			t.Fatal(err)
		}
		return m.Key
	}
	if a, b := key(d("ip=1.1.1.1")), key(d("ip=1.1.1.2")); a == b {
		t.Errorf("distinct values share key %q", a)
	}
	if got := key(d("ip=1.1.1.1")); got != "k|ip=1.1.1.1" {
		t.Errorf("key %q", got)
	}
	if a, b := key(d("path=/files/a")), key(d("path=/files/b")); a != b || a != "k|path=/files/*" {
		t.Errorf("share_threshold keys %q %q, want one shared key", a, b)
	}
	if a := key(d("path=/files/*")); a == key(d("path=/files/a")) {
		// The literal value "/files/*" is escaped, so it cannot collide.
		t.Logf("literal value key %q", a)
	}
	if a, b := key(d("p2=/files/a")), key(d("p2=/files/b")); a == b {
		t.Errorf("without share_threshold each value has its own key: %q", a)
	}
	// Separators inside values cannot make two descriptors collide.
	if a, b := key([]Entry{{"a", "x|b=y"}, {"b", "z"}}), key([]Entry{{"a", "x"}, {"b", "y|b=z"}}); a == b {
		t.Errorf("collision %q", a)
	}
	long := strings.Repeat("v", 5000)
	if k := key(d("ip=" + long)); len(k) > floodgate.MaxKeyLen || !strings.Contains(k, "#sha256=") {
		t.Errorf("long key %q", k)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string // substrings, each must appear in one error (in order)
	}{
		{"duplicate key", `
domain: d
descriptors:
  - key: a
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: a
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: b
    value: x
  - key: b
    value: x
`, []string{"test.yaml:6:5: descriptors[1]: duplicate descriptor \"a\"", "test.yaml:10:5: descriptors[3]: duplicate descriptor \"b_x\""}},
		{"unknown fields", `
domain: d
descriptor:
  - key: a
descriptors:
  - key: a
    ratelimit: {unit: second}
    rate_limit: {unit: second, requests_per_unit: 1, per: 2}
`, []string{"test.yaml:3:1: descriptor: unknown field", "test.yaml:7:5: descriptors[0].ratelimit: unknown field", "test.yaml:8:54: descriptors[0].rate_limit.per: unknown field"}},
		{"bad units", `
domain: d
descriptors:
  - key: a
    rate_limit: {unit: fortnight, requests_per_unit: 1}
  - key: b
    rate_limit: {requests_per_unit: 1}
  - key: c
    rate_limit: {unlimited: true, unit: second}
  - key: e
    rate_limit: {unit: second, window: 1s, requests_per_unit: 1}
`, []string{"descriptors[0].rate_limit.unit: invalid rate limit unit \"fortnight\"", "descriptors[1].rate_limit.unit: missing", "descriptors[2].rate_limit.unit: should not specify", "descriptors[3].rate_limit.window: give either"}},
		{"empty keys and domain", `
descriptors:
  - key: ""
    rate_limit: {unit: second, requests_per_unit: 1}
  - value: x
`, []string{"domain: missing", "descriptors[0].key: descriptor has an empty key", "descriptors[1].key: descriptor has an empty key"}},
		{"limit validation", `
domain: d
descriptors:
  - key: a
    rate_limit: {window: 1us, requests_per_unit: 1}
  - key: b
    rate_limit: {unit: second, requests_per_unit: 10, burst: 5}
  - key: c
    rate_limit: {unit: second, requests_per_unit: -1}
  - key: e
    rate_limit: {unit: second, requests_per_unit: 1, algorithm: magic}
  - key: f
    rate_limit: {window: 400d, requests_per_unit: 1}
`, []string{"test.yaml:5:26: descriptors[0].rate_limit.window: limit window 1µs", "test.yaml:7:62: descriptors[1].rate_limit.burst: limit burst 5", "descriptors[2].rate_limit.requests_per_unit: -1 is out of range", "descriptors[3].rate_limit.algorithm: unknown algorithm", "descriptors[4].rate_limit.window: invalid window"}},
		{"types", `
domain: [x]
descriptors:
  key: a
`, []string{"domain: want a string", "descriptors: want a list"}},
		{"replaces", `
domain: d
descriptors:
  - key: a
    rate_limit:
      name: n
      unit: second
      requests_per_unit: 1
      replaces: [{name: n}, {name: ""}]
`, []string{"replaces[0].name: replaces should not contain", "replaces[1].name: should not have an empty replaces entry"}},
		{"tiers", `
domain: d
tiers:
  - name: gold
    key: k
descriptors:
  - key: a
    rate_limit: {unit: second, requests_per_unit: 1}
    tiers:
      silver: {rate_limit: {unit: second, requests_per_unit: 2}}
`, []string{"tiers[0].values: missing", "descriptors[0].tiers.silver: unknown tier"}},
		{"yaml syntax", "domain: d\ndescriptors:\n  - key: [a\n", []string{"test.yaml:"}},
		{"empty file", "", []string{"domain: the file is empty"}},
		{"policies", `
domain: d
consistency: eventual
descriptors:
  - key: a
    on_store_error: retry
    rate_limit: {unit: second, requests_per_unit: 1}
`, []string{"consistency: unknown consistency \"eventual\"", "descriptors[0].on_store_error: unknown failure policy \"retry\""}},
		{"approximate token bucket", `
domain: d
descriptors:
  - key: a
    consistency: approximate
    rate_limit: {unit: second, requests_per_unit: 1, algorithm: token_bucket}
  - key: b
    consistency: approximate
    rate_limit: {window: 30s, requests_per_unit: 5, algorithm: sliding_window}
`, []string{"descriptors[0]: consistency approximate counts fixed_window and sliding_window only, not token_bucket"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Parse("test.yaml", []byte(c.src))
			if err == nil {
				t.Fatalf("no error, set %v", s.Domains())
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %T is not Errors", err)
			}
			i := 0
			for _, e := range errs {
				if i < len(c.want) && strings.Contains(e.Error(), c.want[i]) {
					i++
				}
			}
			if i < len(c.want) {
				t.Errorf("missing error %q in:\n%v", c.want[i], err)
			}
		})
	}
}

func TestUnitsAndPolicies(t *testing.T) {
	s := mustParse(t, `
domain: u
on_store_error: fail_closed
descriptors:
  - key: w
    rate_limit: {unit: WEEK, requests_per_unit: 1}
  - key: m
    rate_limit: {unit: Month, requests_per_unit: 1}
  - key: y
    consistency: approximate
    rate_limit: {unit: year, requests_per_unit: 1, on_store_error: local}
`)
	for _, c := range []struct {
		key    string
		window time.Duration
		unit   Unit
		cons   Consistency
		pol    FailurePolicy
	}{
		{"w", 7 * 24 * time.Hour, Week, Strict, FailClosed},
		{"m", 30 * 24 * time.Hour, Month, Strict, FailClosed},
		{"y", 365 * 24 * time.Hour, Year, Approximate, FailLocal},
	} {
		m, ok := s.Match("u", []Entry{{c.key, "v"}})
		if !ok || m.Limits[0] != fw(1, c.window) || m.Units[0] != c.unit || m.Rule.Consistency != c.cons || m.Rule.OnStoreError != c.pol {
			t.Errorf("%s: %v %+v", c.key, ok, m.Rule)
		}
	}
	if u, exact := UnitFor(90 * time.Second); u != Minute || exact {
		t.Errorf("UnitFor(90s) = %v %v", u, exact)
	}
}

func TestDuplicateDomainAcrossFiles(t *testing.T) {
	_, err := build([]source{
		{name: "a.yaml", data: []byte("domain: x\n")},
		{name: "b.yaml", data: []byte("domain: x\n")},
	})
	if err == nil || !strings.Contains(err.Error(), `b.yaml:1:9: domain: duplicate domain "x", already defined at a.yaml:1:9`) {
		t.Fatalf("got %v", err)
	}
}

func TestVersion(t *testing.T) {
	a := mustParse(t, "domain: x\n")
	b := mustParse(t, "domain: x\n")
	c := mustParse(t, "domain: y\n")
	if a.Version() == "" || a.Version() != b.Version() || a.Version() == c.Version() {
		t.Fatalf("versions %q %q %q", a.Version(), b.Version(), c.Version())
	}
}

func BenchmarkMatch(b *testing.B) {
	s, err := Parse("b.yaml", []byte(envoyTable[1].config))
	if err != nil {
		b.Fatal(err)
	}
	desc := d("message_type=marketing,to_number=2061111111")
	b.ReportAllocs()
	for b.Loop() {
		s.Match("messaging", desc)
	}
}
