package redis

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// ParseURL parses a store URL into the connection fields of [Options] (URL,
// Addrs, Cluster, MasterName, Username, Password, DB, TLS):
//
//	redis://[user:pass@]host[:port][/db]            a standalone server (port 6379)
//	rediss://[user:pass@]host[:port][/db]           the same over TLS
//	redis-cluster://[user:pass@]host:port,host:port,...   a Redis Cluster (seed nodes)
//	rediss-cluster://...                            the same over TLS
//	redis-sentinel://[user:pass@]master@host:port,host:port[/db]   a master found by Sentinel (port 26379)
//
// User and password may be percent-encoded; unencoded, the user information
// ends at the last '@', so a password may hold '@', '/', '?' or '#'. Errors
// name the part that is wrong; they never repeat the password.
func ParseURL(raw string) (Options, error) {
	opts := Options{URL: raw}
	shown := redact(raw)
	bad := func(format string, args ...any) (Options, error) {
		return Options{}, fmt.Errorf("redis: url %q: %s", shown, fmt.Sprintf(format, args...))
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return bad("no scheme: want redis://, rediss://, redis-cluster:// or redis-sentinel://")
	}
	defPort := "6379"
	switch scheme {
	case "redis":
	case "rediss":
		opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	case "redis-cluster":
		opts.Cluster = true
	case "rediss-cluster":
		opts.Cluster = true
		opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	case "redis-sentinel":
		defPort = "26379"
	default:
		return bad("unknown scheme %q: want redis, rediss, redis-cluster, rediss-cluster or redis-sentinel", scheme)
	}
	// The user information ends at the last '@': host names, ports and the
	// database never hold one, and a password may hold '@', '/', '?' or '#'
	// unencoded.
	var userinfo string
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		userinfo, rest = rest[:i], rest[i+1:]
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		return bad("query or fragment %q: not supported", rest[i:])
	}
	path := ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest, path = rest[:i], rest[i+1:]
	}
	hosts := rest
	if scheme == "redis-sentinel" {
		if userinfo == "" {
			return bad("no master name: want redis-sentinel://[user:pass@]master@host:port,...")
		}
		name := userinfo
		userinfo = ""
		if i := strings.LastIndexByte(name, '@'); i >= 0 {
			userinfo, name = name[:i], name[i+1:]
		}
		var err error
		if opts.MasterName, err = url.PathUnescape(name); err != nil || opts.MasterName == "" {
			return bad("bad master name %q", name)
		}
	}
	if userinfo != "" {
		user, pass, hasPass := strings.Cut(userinfo, ":")
		var err error
		if opts.Username, err = url.PathUnescape(user); err != nil {
			return bad("bad user name: %v", err)
		}
		if hasPass {
			if opts.Password, err = url.PathUnescape(pass); err != nil {
				return bad("bad password encoding")
			}
		}
	}
	if hosts == "" {
		return bad("no host")
	}
	for _, h := range strings.Split(hosts, ",") {
		addr, err := hostPort(h, defPort)
		if err != nil {
			return bad("%v", err)
		}
		opts.Addrs = append(opts.Addrs, addr)
	}
	if len(opts.Addrs) > 1 && !opts.Cluster && opts.MasterName == "" {
		return bad("%d hosts: a standalone server takes one; use redis-cluster:// or redis-sentinel://", len(opts.Addrs))
	}
	if path != "" {
		if opts.Cluster {
			return bad("database %q: a cluster has only database 0", path)
		}
		db, err := strconv.Atoi(path)
		if err != nil || db < 0 {
			return bad("database %q: want a number from 0", path)
		}
		opts.DB = db
	}
	if opts.TLS != nil && len(opts.Addrs) == 1 {
		host, _, _ := net.SplitHostPort(opts.Addrs[0])
		opts.TLS.ServerName = host
	}
	return opts, nil
}

// hostPort checks one host[:port] and adds the default port.
func hostPort(h, defPort string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("empty host in the host list")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port (or an IPv6 address without brackets and port).
		if strings.Count(h, ":") > 0 && !strings.HasPrefix(h, "[") {
			return "", fmt.Errorf("bad address %q: want host:port", h)
		}
		host, port = strings.Trim(h, "[]"), defPort
	}
	if host == "" {
		return "", fmt.Errorf("bad address %q: no host name", h)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("bad port %q in address %q: want 1 to 65535", port, h)
	}
	return net.JoinHostPort(host, port), nil
}

// redact replaces the password in a URL with "xxxxx". The user information
// ends at the last '@' (for redis-sentinel, the one before the master name),
// as [ParseURL] reads it.
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return raw
	}
	cred, tail := rest[:at], rest[at:]
	if scheme == "redis-sentinel" {
		j := strings.LastIndexByte(cred, '@')
		if j < 0 {
			return raw
		}
		cred, tail = cred[:j], cred[j:]+tail
	}
	user, _, hasPass := strings.Cut(cred, ":")
	if !hasPass {
		return raw
	}
	return scheme + "://" + user + ":xxxxx" + tail
}
