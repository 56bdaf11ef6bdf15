package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/gateway"
	"github.com/floodgate/floodgate/metrics"
	"github.com/floodgate/floodgate/middleware"
	"github.com/floodgate/floodgate/rules"
)

func init() {
	register("proxy", "run the gateway: a rate-limiting reverse proxy in front of an HTTP service", runProxy)
}

// proxyConfig is what the proxy command's flags set.
type proxyConfig struct {
	upstream        string
	config          string
	listen          string
	domain          string
	legacyHeaders   bool
	omitHeaders     bool
	tlsCert         string
	tlsKey          string
	reloadInterval  time.Duration
	logFormat       string
	logLevel        slog.Level
	shutdownTimeout time.Duration
	metrics         string
	admin           adminConfig
	shed            shedConfig

	stack stackConfig
}

// parseProxy parses proxy's flags and their environment variables (looked up
// with lookup). Usage and errors go to stderr.
func parseProxy(args []string, stderr io.Writer, lookup func(string) (string, bool)) (proxyConfig, error) {
	cfg := proxyConfig{}
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.upstream, "upstream", "", "`url` of the upstream service, http:// or https:// (required)")
	fs.StringVar(&cfg.config, "config", "", "rule `file or directory` (*.yaml) with a requests block, reloaded when it changes (required)")
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8000", "listen `address` (port 0 picks a free port)")
	fs.StringVar(&cfg.domain, "domain", "", "rule `domain` whose requests block maps requests to descriptors (default: the only domain of --config)")
	fs.BoolVar(&cfg.legacyHeaders, "legacy-headers", false, "also send X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset")
	fs.BoolVar(&cfg.omitHeaders, "omit-headers", false, "leave RateLimit-Policy and RateLimit off admitted responses (denials keep them)")
	fs.StringVar(&cfg.tlsCert, "tls-cert", "", "TLS certificate `file` (PEM); with --tls-key, serves HTTPS and HTTP/2")
	fs.StringVar(&cfg.tlsKey, "tls-key", "", "TLS private key `file` (PEM)")
	fs.StringVar(&cfg.metrics, "metrics", "", "listen `address` of GET /metrics (Prometheus), e.g. 127.0.0.1:9464 (default: not served; never on --listen, whose paths belong to the upstream)")
	adminFlags(&cfg.admin, fs)
	shedFlags(&cfg.shed, fs)
	fs.DurationVar(&cfg.reloadInterval, "reload-interval", time.Second, "how often --config is checked for changes")
	processFlags(fs, &cfg.logFormat, &cfg.logLevel, &cfg.shutdownTimeout)
	stackFlags(&cfg.stack, fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: floodgate proxy --upstream URL --config FILE|DIR [flags]\n\n"+
			"Rate-limits every request by the rules' request mapping (requests block) and\n"+
			"forwards the admitted ones to --upstream, until SIGINT or SIGTERM. Denials get\n"+
			"429 with Retry-After; an unreachable upstream gives 502. The store stack is\n"+
			"serve's: when the store cannot decide, --on-store-error decides. With\n"+
			"--shed-capacity, requests past this proxy's capacity get 503, lowest priority first.\n"+
			"Every flag can also be set from FLOODGATE_<FLAG> (--upstream: FLOODGATE_UPSTREAM); the flag wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, lookup); err != nil {
		return cfg, err
	}
	err := checkProcess(cfg.logFormat, cfg.shutdownTimeout)
	switch {
	case err != nil:
	case cfg.upstream == "":
		err = errors.New("--upstream is required")
	case cfg.config == "":
		err = errors.New("--config is required")
	case (cfg.tlsCert == "") != (cfg.tlsKey == ""):
		err = errors.New("--tls-cert and --tls-key go together")
	default:
		if err = cfg.stack.check(); err == nil {
			err = cfg.admin.check()
		}
		if err == nil {
			err = cfg.shed.check()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "floodgate proxy: %v\n", err)
		return cfg, err
	}
	return cfg, nil
}

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseProxy(args, stderr, os.LookupEnv)
	if err != nil {
		return flagsExit(err)
	}
	return proxy(ctx, cfg, newLogger(stderr, cfg.logFormat, cfg.logLevel))
}

// proxyDomain returns the domain the gateway maps requests in: cfg's, or the
// only one of set. The domain must have a requests block.
func proxyDomain(set *rules.Set, domain string) (string, error) {
	domains := set.Domains()
	if domain == "" {
		if len(domains) != 1 {
			return "", fmt.Errorf("--domain is required when the rules define %d domains (%s)", len(domains), strings.Join(domains, ", "))
		}
		domain = domains[0]
	}
	if set.Rules(domain) == nil && set.Mapper(domain) == nil {
		return "", fmt.Errorf("--domain %q: no such domain in the rules (have %s)", domain, strings.Join(domains, ", "))
	}
	if set.Mapper(domain) == nil {
		return "", fmt.Errorf("domain %q has no requests block: the gateway would limit nothing (see docs/configuration.md, \"Mapping HTTP requests to descriptors\")", domain)
	}
	return domain, nil
}

// proxy runs the gateway until ctx is cancelled, then shuts down gracefully:
// it stops accepting connections, lets in-flight requests finish within
// cfg.shutdownTimeout, and closes the store stack ([newStack], the same as
// serve's: failure policy, deadline, circuit breaker, batching, over-limit
// cache). Once listening it logs a line
// "listening" with protocol=http (https with TLS) and the actual addr.
func proxy(ctx context.Context, cfg proxyConfig, logger *slog.Logger) int {
	watcher, err := rules.Watch(ctx, []string{cfg.config}, rules.WatchOptions{Interval: cfg.reloadInterval, Logger: logger})
	if err != nil {
		logger.Error("cannot load rules", "config", cfg.config, "err", err)
		return 1
	}
	defer watcher.Close()
	domain, err := proxyDomain(watcher.Current(), cfg.domain)
	if err != nil {
		logger.Error("cannot proxy", "config", cfg.config, "err", err)
		return 1
	}
	logger.Info("rules loaded", "config", cfg.config, "domain", domain, "version", watcher.Current().Version())

	mx := metrics.New()
	stk, err := newStack(ctx, cfg.stack, watcher.Current, engine.FrontGateway, logger, mx)
	if err != nil {
		logger.Error("cannot start the store stack", "store", cfg.stack.store, "err", err)
		return 1
	}
	closeStore := func() int {
		if stk.close() != nil {
			return 1
		}
		return 0
	}
	stk.registerMetrics(watcher)
	var mxSrv *sideServer
	if cfg.metrics != "" {
		if mxSrv, err = listenMetrics(cfg.metrics, mx, logger); err != nil {
			logger.Error("cannot listen", "protocol", "metrics", "addr", cfg.metrics, "err", err)
			closeStore()
			return 1
		}
		defer mxSrv.close()
	}
	adminSrv, err := listenAdmin(cfg.admin, stk, logger)
	if err != nil {
		logger.Error("cannot listen", "protocol", "admin", "addr", cfg.admin.addr, "err", err)
		closeStore()
		return 1
	}
	closeStore = closingFirst(adminSrv, closeStore)
	mw, err := middleware.Rules(stk.engine, domain, middleware.Options{
		OmitHeaders: cfg.omitHeaders,
		Legacy:      cfg.legacyHeaders,
		Logger:      logger,
	})
	if err == nil {
		// The load shedder comes first: a request it turns away spends no
		// quota.
		var shedMW func(http.Handler) http.Handler
		if shedMW, err = shedMiddleware(cfg.shed, mx); err == nil && shedMW != nil {
			limit := mw
			mw = func(h http.Handler) http.Handler { return shedMW(limit(h)) }
		}
	}
	if err == nil {
		var g *gateway.Gateway
		g, err = gateway.New(cfg.upstream, gateway.Options{Middleware: mw, Logger: logger})
		if err == nil {
			mxSrv.start(logger)
			adminSrv.start(logger)
			return runGateway(ctx, cfg, g, logger, closeStore)
		}
	}
	logger.Error("cannot proxy", "upstream", cfg.upstream, "err", err)
	closeStore()
	return 1
}

func runGateway(ctx context.Context, cfg proxyConfig, g *gateway.Gateway, logger *slog.Logger, closeStore func() int) int {
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		logger.Error("cannot listen", "protocol", "http", "addr", cfg.listen, "err", err)
		closeStore()
		return 1
	}
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	proto := "http"
	errc := make(chan error, 1)
	if cfg.tlsCert != "" {
		proto = "https"
		go func() { errc <- srv.ServeTLS(ln, cfg.tlsCert, cfg.tlsKey) }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	logger.Info("listening", "protocol", proto, "addr", ln.Addr().String(), "upstream", g.Upstream().Redacted())

	select {
	case err := <-errc:
		logger.Error("proxy server failed", "addr", ln.Addr().String(), "err", err)
		closeStore()
		return 1
	case <-ctx.Done():
	}
	logger.Info("shutting down", "cause", context.Cause(ctx).Error(), "timeout", cfg.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	code := 0
	if err := srv.Shutdown(sctx); err != nil {
		logger.Error("in-flight requests did not finish in time; closing their connections", "timeout", cfg.shutdownTimeout, "err", err)
		srv.Close()
		code = 1
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Error("proxy server failed", "err", err)
		code = 1
	}
	if c := closeStore(); c != 0 {
		code = c
	}
	logger.Info("stopped", "exit_code", code)
	return code
}
