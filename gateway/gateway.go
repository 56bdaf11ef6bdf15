// Package gateway is floodgate's reverse proxy: it rate-limits requests
// with a middleware (normally [middleware.Rules]) and forwards the admitted
// ones to one upstream HTTP service with net/http/httputil.ReverseProxy.
// The floodgate proxy command runs it.
//
// # What passes through
//
//   - Request and response bodies are streamed in both directions, at the
//     same time for a chunked request body (full duplex, also on HTTP/1.1;
//     a body of known length is read to its end before the answer starts,
//     net/http's default); every write of the
//     upstream's response is flushed to the client at once, so chunked
//     responses and server-sent events arrive as they are produced.
//   - Protocol upgrades (WebSocket): the Upgrade request is forwarded and,
//     after the upstream's 101 Switching Protocols, bytes are copied both
//     ways until either side closes. The middleware decides the upgrade
//     request like any other; the frames that follow are not counted.
//   - HTTP/2: towards an https:// upstream the transport negotiates HTTP/2
//     by ALPN; towards clients, HTTP/2 needs TLS on the listener (the Go
//     server negotiates it). Cleartext HTTP/2 (h2c) is not offered.
//   - X-Forwarded-For gets the direct peer appended (keeping what the client
//     sent before it), X-Forwarded-Host and X-Forwarded-Proto are set.
//     Rate-limit keys use the rules' trusted proxies, not these headers.
//
// # Errors
//
// An upstream that cannot be reached or fails mid-request gets 502 Bad
// Gateway (504 Gateway Timeout when the failure is a timeout) with a
// problem+json body; the error itself is logged, not shown to the client.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/floodgate/floodgate/middleware"
)

// Options configures a [Gateway]. The zero value forwards everything
// unlimited with the default transport.
type Options struct {
	// Middleware wraps the proxy, normally a [middleware.Rules] middleware.
	// Nil forwards every request unlimited.
	Middleware func(http.Handler) http.Handler
	// Transport makes the upstream requests. Nil means a clone of
	// http.DefaultTransport (HTTP/2 to https:// upstreams, connection pooling,
	// environment proxy settings).
	Transport http.RoundTripper
	// PreserveHost, when true, forwards the client's Host header; by default
	// the upstream URL's host is sent.
	PreserveHost bool
	// Logger receives upstream errors. Nil discards them.
	Logger *slog.Logger
}

// Gateway is an http.Handler that rate-limits and forwards requests to one
// upstream. Create it with [New]. It is safe for concurrent use.
type Gateway struct {
	upstream *url.URL
	proxy    *httputil.ReverseProxy
	handler  http.Handler
	logger   *slog.Logger
}

var _ http.Handler = (*Gateway)(nil)

// New returns a gateway to upstream, an absolute http:// or https:// URL
// whose path, if any, prefixes every forwarded path and whose query is
// merged into every forwarded query.
func New(upstream string, opts Options) (*Gateway, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("gateway: upstream %q: %w", upstream, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("gateway: upstream %q: want an absolute http:// or https:// URL", upstream)
	}
	g := &Gateway{upstream: u, logger: opts.Logger}
	if g.logger == nil {
		g.logger = slog.New(slog.DiscardHandler)
	}
	transport := opts.Transport
	if transport == nil {
		transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			if opts.PreserveHost {
				pr.Out.Host = pr.In.Host
			}
			// Keep the chain the client sent; SetXForwarded appends the peer.
			if xff, ok := pr.In.Header["X-Forwarded-For"]; ok {
				pr.Out.Header["X-Forwarded-For"] = xff
			}
			pr.SetXForwarded()
		},
		Transport: transport,
		// 0: a response of known length is written as the upstream sends
		// it, but its last bytes reach the client only once the handler
		// chain has returned, so the middleware's releases (concurrency
		// leases, the load shedder's slot) happen before the client can send
		// its next request. Streams (no length, or text/event-stream) are
		// still flushed at once by ReverseProxy.
		FlushInterval: 0,
		ErrorHandler:  g.upstreamError,
		ErrorLog:      slog.NewLogLogger(g.logger.Handler(), slog.LevelWarn),
	}
	g.handler = g.proxy
	if opts.Middleware != nil {
		g.handler = opts.Middleware(g.proxy)
	}
	return g, nil
}

// Upstream returns the upstream URL.
func (g *Gateway) Upstream() *url.URL { u := *g.upstream; return &u }

// ServeHTTP rate-limits r and forwards it when admitted. For an HTTP/1
// request with a chunked body it enables full duplex first, so that the
// upstream's response streams back while the request body is still arriving.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.ContentLength < 0 {
		// A request body of unknown length (chunked) is a stream: let the
		// answer flow back while it is still arriving. Bodies of known length
		// keep net/http's default of consuming the body first. Fails only
		// when w does not support it (HTTP/2 is full duplex anyway).
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	g.handler.ServeHTTP(w, r)
}

// upstreamError answers a request whose upstream round trip failed.
func (g *Gateway) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		g.logger.Debug("client gone before the upstream answered", "method", r.Method, "path", r.URL.Path)
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	status, title, detail := http.StatusBadGateway, "Bad Gateway", "the upstream service could not be reached or did not answer"
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		status, title, detail = http.StatusGatewayTimeout, "Gateway Timeout", "the upstream service did not answer in time"
	}
	g.logger.Warn("upstream error", "upstream", g.upstream.Redacted(), "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	middleware.WriteProblem(w, middleware.Problem{Type: "about:blank", Title: title, Status: status, Detail: detail})
}
