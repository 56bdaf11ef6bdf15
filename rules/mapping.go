package rules

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"gopkg.in/yaml.v3"
)

// Mapper builds descriptors from HTTP requests, for the net/http middleware
// and the gateway. It is compiled from a file's requests block (see
// docs/configuration.md); it is immutable and safe for concurrent use.
type Mapper struct {
	domain      string
	trusted     []netip.Prefix
	descriptors []mapDescriptor
}

// mapDescriptor builds one descriptor when its conditions hold.
type mapDescriptor struct {
	path       string // exact path condition, "" for none
	pathPrefix string
	methods    []string // upper case; nil for any
	entries    []mapEntry
}

// entry sources.
const (
	fromConstant = iota
	fromClientIP
	fromHeader
	fromAPIKey
	fromPath
	fromMethod
)

type mapEntry struct {
	key    string
	from   int
	header string // canonical header name for fromHeader and fromAPIKey
	value  string // for fromConstant
}

// Mapper returns the request mapping of domain, nil when its file has no
// requests block (or the domain is unknown).
func (s *Set) Mapper(domainName string) *Mapper {
	if s == nil || s.domains[domainName] == nil {
		return nil
	}
	return s.domains[domainName].mapping
}

// Descriptors returns the descriptors the request maps to in domain, nil
// when the domain has no requests block.
func (s *Set) Descriptors(domainName string, r *http.Request) [][]Entry {
	return s.Mapper(domainName).Descriptors(r)
}

// Domain returns the domain the mapper belongs to.
func (m *Mapper) Domain() string {
	if m == nil {
		return ""
	}
	return m.domain
}

// Descriptors returns one descriptor per configured descriptor whose
// conditions (path, path_prefix, methods) hold for r and whose every entry
// has a value: a descriptor that needs a header the request lacks is left
// out, as Envoy leaves out a descriptor whose request_headers action finds
// no header. A nil Mapper returns nil.
func (m *Mapper) Descriptors(r *http.Request) [][]Entry {
	if m == nil {
		return nil
	}
	var out [][]Entry
	var ip string
	for _, d := range m.descriptors {
		if d.path != "" && r.URL.Path != d.path {
			continue
		}
		if d.pathPrefix != "" && !strings.HasPrefix(r.URL.Path, d.pathPrefix) {
			continue
		}
		if d.methods != nil && !contains(d.methods, r.Method) {
			continue
		}
		entries := make([]Entry, 0, len(d.entries))
		for _, e := range d.entries {
			var v string
			switch e.from {
			case fromConstant:
				v = e.value
			case fromClientIP:
				if ip == "" {
					if a, ok := ClientIP(r, m.trusted); ok {
						ip = a.String()
					}
				}
				v = ip
			case fromHeader:
				v = r.Header.Get(e.header)
			case fromAPIKey:
				v = r.Header.Get(e.header)
				if e.header == "Authorization" {
					if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
						v = strings.TrimSpace(v[7:])
					} else {
						v = ""
					}
				}
			case fromPath:
				v = r.URL.Path
			case fromMethod:
				v = r.Method
			}
			if v == "" {
				entries = nil
				break
			}
			entries = append(entries, Entry{Key: e.key, Value: v})
		}
		if entries != nil {
			out = append(out, entries)
		}
	}
	return out
}

// ClientIP returns the client address of r. It is the direct peer
// (r.RemoteAddr) unless that peer is in trusted: then X-Forwarded-For is
// read from right to left, skipping trusted addresses, and the first
// untrusted one is the client. If every address is trusted, the leftmost is
// the client; a malformed entry stops the walk at the last good address.
// With no trusted prefixes X-Forwarded-For is never read, so a client cannot
// choose its own address. ok is false when RemoteAddr holds no address.
func ClientIP(r *http.Request, trusted []netip.Prefix) (addr netip.Addr, ok bool) {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	peer = peer.Unmap().WithZone("")
	if !isTrusted(peer, trusted) {
		return peer, true
	}
	client := peer
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		s := strings.TrimSpace(hops[i])
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			break
		}
		client = a.Unmap().WithZone("")
		if !isTrusted(client, trusted) {
			break
		}
	}
	return client, true
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Field names of the requests block.
var (
	requestsFields      = []string{"trusted_proxies", "descriptors"}
	reqDescFields       = []string{"path", "path_prefix", "methods", "entries"}
	reqEntryFields      = []string{"key", "from", "header", "value"}
	defaultAPIKeyHeader = "X-Api-Key"
)

// mapper compiles a requests block.
func (d *decoder) mapper(n *yaml.Node, field string) *Mapper {
	m := &Mapper{}
	d.fields(n, field, requestsFields, func(name, path string, k, v *yaml.Node) {
		switch name {
		case "trusted_proxies":
			d.list(v, path, func(i int, ipath string, item *yaml.Node) {
				s, ok := d.str(item, ipath)
				if !ok {
					return
				}
				p, err := netip.ParsePrefix(s)
				if err != nil {
					a, aerr := netip.ParseAddr(s)
					if aerr != nil {
						d.errf(item, ipath, "%q is not an address or CIDR prefix (such as 10.0.0.0/8)", s)
						return
					}
					p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
				}
				m.trusted = append(m.trusted, p.Masked())
			})
		case "descriptors":
			d.list(v, path, func(i int, ipath string, item *yaml.Node) {
				if md, ok := d.mapDescriptor(item, ipath); ok {
					m.descriptors = append(m.descriptors, md)
				}
			})
		}
	})
	return m
}

func (d *decoder) mapDescriptor(n *yaml.Node, field string) (mapDescriptor, bool) {
	var md mapDescriptor
	before := len(d.errs)
	d.fields(n, field, reqDescFields, func(name, path string, k, v *yaml.Node) {
		switch name {
		case "path":
			md.path, _ = d.str(v, path)
			if md.path != "" && !strings.HasPrefix(md.path, "/") {
				d.errf(v, path, "%q must start with /", md.path)
			}
		case "path_prefix":
			md.pathPrefix, _ = d.str(v, path)
			if md.pathPrefix != "" && !strings.HasPrefix(md.pathPrefix, "/") {
				d.errf(v, path, "%q must start with /", md.pathPrefix)
			}
		case "methods":
			md.methods = []string{}
			d.list(v, path, func(i int, ipath string, item *yaml.Node) {
				if s, ok := d.str(item, ipath); ok && s != "" {
					md.methods = append(md.methods, strings.ToUpper(s))
				}
			})
		case "entries":
			d.list(v, path, func(i int, ipath string, item *yaml.Node) {
				if e, ok := d.mapEntry(item, ipath); ok {
					md.entries = append(md.entries, e)
				}
			})
		}
	})
	if len(d.errs) == before && len(md.entries) == 0 {
		d.errf(n, field+".entries", "missing: a descriptor needs at least one entry")
	}
	return md, len(d.errs) == before
}

func (d *decoder) mapEntry(n *yaml.Node, field string) (mapEntry, bool) {
	var e mapEntry
	var from string
	var hasValue, hasHeader bool
	before := len(d.errs)
	d.fields(n, field, reqEntryFields, func(name, path string, k, v *yaml.Node) {
		switch name {
		case "key":
			e.key, _ = d.str(v, path)
		case "from":
			from, _ = d.str(v, path)
		case "header":
			e.header, _ = d.str(v, path)
			e.header = http.CanonicalHeaderKey(e.header)
			hasHeader = true
		case "value":
			e.value, _ = d.str(v, path)
			hasValue = true
		}
	})
	if len(d.errs) > before {
		return e, false
	}
	if e.key == "" {
		d.errf(n, field+".key", "missing: every entry needs a descriptor key")
		return e, false
	}
	switch from {
	case "", "constant":
		e.from = fromConstant
		if e.value == "" {
			d.errf(n, field+".value", "missing: a constant entry needs a value (or give from: client_ip, header, api_key, path or method)")
		}
	case "client_ip":
		e.from = fromClientIP
	case "header":
		e.from = fromHeader
		if e.header == "" {
			d.errf(n, field+".header", "missing: from: header needs the header name")
		}
	case "api_key":
		e.from = fromAPIKey
		if e.header == "" {
			e.header = defaultAPIKeyHeader
		}
	case "path":
		e.from = fromPath
	case "method":
		e.from = fromMethod
	default:
		d.errf(n, field+".from", "unknown source %q (want client_ip, header, api_key, path, method or constant)", from)
	}
	if hasValue && e.from != fromConstant {
		d.errf(n, field+".value", "value is only for constant entries, not from: %s", from)
	}
	if hasHeader && e.from != fromHeader && e.from != fromAPIKey {
		d.errf(n, field+".header", "header is only for from: header or api_key, not %q", from)
	}
	return e, len(d.errs) == before
}
