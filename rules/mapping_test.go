package rules

import (
	"net/http/httptest"
	"net/netip"
	"reflect"
	"testing"
)

const mappingConfig = `
domain: m
requests:
  trusted_proxies: [10.0.0.0/8]
  descriptors:
    - entries:
        - {key: remote_address, from: client_ip}
    - path_prefix: /api/
      methods: [post]
      entries:
        - {key: route, value: api}
        - {key: method, from: method}
        - {key: path, from: path}
    - path: /login
      entries:
        - {key: api_key, from: api_key}
        - {key: ua, from: header, header: user-agent}
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 1}
`

func TestMapperDescriptors(t *testing.T) {
	s := mustParse(t, mappingConfig)
	r := httptest.NewRequest("POST", "/api/orders", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	got := s.Descriptors("m", r)
	want := [][]Entry{
		{{"remote_address", "192.0.2.7"}},
		{{"route", "api"}, {"method", "POST"}, {"path", "/api/orders"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	r = httptest.NewRequest("GET", "/login", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	r.Header.Set("X-Api-Key", "k1")
	if got := s.Descriptors("m", r); len(got) != 1 {
		t.Fatalf("a missing header must drop the descriptor: %v", got)
	}
	r.Header.Set("User-Agent", "curl")
	if got := s.Descriptors("m", r); len(got) != 2 || got[1][0] != (Entry{"api_key", "k1"}) || got[1][1] != (Entry{"ua", "curl"}) {
		t.Fatalf("got %v", got)
	}
	if s.Mapper("nope") != nil || s.Descriptors("nope", r) != nil {
		t.Fatal("unknown domain has a mapper")
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	cases := []struct {
		name, remote, xff string
		trusted           []netip.Prefix
		want              string
	}{
		{"no proxy trusted: XFF ignored (spoofing)", "203.0.113.9:1234", "1.2.3.4", nil, "203.0.113.9"},
		{"untrusted peer: spoofed XFF ignored", "203.0.113.9:1234", "1.2.3.4", trusted, "203.0.113.9"},
		{"trusted peer: the hop it saw", "10.0.0.2:80", "198.51.100.1", trusted, "198.51.100.1"},
		{"client-supplied left entries ignored", "10.0.0.2:80", "1.2.3.4, 198.51.100.1, 10.0.0.3", trusted, "198.51.100.1"},
		{"all trusted: leftmost", "10.0.0.2:80", "10.1.1.1, 10.0.0.3", trusted, "10.1.1.1"},
		{"garbage stops the walk", "10.0.0.2:80", "1.2.3.4, nonsense, 10.0.0.3", trusted, "10.0.0.3"},
		{"ipv6 peer", "[2001:db8::1]:80", "1.2.3.4", trusted, "2001:db8::1"},
		{"mapped ipv4", "[::ffff:10.0.0.2]:80", "198.51.100.1", trusted, "198.51.100.1"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		got, ok := ClientIP(r, c.trusted)
		if !ok || got.String() != c.want {
			t.Errorf("%s: got %v %v, want %s", c.name, got, ok, c.want)
		}
	}
}

func TestMapperSpoofedXFF(t *testing.T) {
	s := mustParse(t, mappingConfig)
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "203.0.113.9:1234"
	r.Header.Set("X-Forwarded-For", "10.0.0.1")
	if got := s.Descriptors("m", r); got[0][0].Value != "203.0.113.9" {
		t.Fatalf("spoofed X-Forwarded-For was trusted: %v", got)
	}
}
