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
	"sync"
	"time"

	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/httpapi"
	"github.com/floodgate/floodgate/metrics"
	"github.com/floodgate/floodgate/rls"
)

func init() {
	register("serve", "run the decision server: Envoy's gRPC rate-limit API and the HTTP JSON API", runServe)
}

// serveConfig is what the serve command's flags set.
type serveConfig struct {
	http            string
	grpc            string
	config          string
	rlsHeaders      rls.HeaderMode
	logFormat       string
	logLevel        slog.Level
	shutdownTimeout time.Duration
	metrics         string
	admin           adminConfig

	stack stackConfig
}

// parseServe parses serve's flags and their environment variables (looked up
// with lookup). Usage and errors go to stderr.
func parseServe(args []string, stderr io.Writer, lookup func(string) (string, bool)) (serveConfig, error) {
	cfg := serveConfig{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.http, "http", "127.0.0.1:8080", "listen `address` of the HTTP JSON API (port 0 picks a free port)")
	fs.StringVar(&cfg.grpc, "grpc", "127.0.0.1:8081", "listen `address` of Envoy's gRPC RateLimitService (port 0 picks a free port; empty disables it)")
	fs.StringVar(&cfg.config, "config", "", "rule `file or directory` (*.yaml), reloaded when it changes (default: "+sampleConfig+" when it exists, else no rules)")
	fs.Func("rls-headers", "response headers the gRPC API asks Envoy to add: none, draft (RateLimit-Policy, RateLimit) or legacy (X-RateLimit-*) (default none)", func(s string) error {
		m, err := rls.ParseHeaderMode(s)
		cfg.rlsHeaders = m
		return err
	})
	processFlags(fs, &cfg.logFormat, &cfg.logLevel, &cfg.shutdownTimeout)
	fs.StringVar(&cfg.metrics, "metrics", "", "listen `address` of GET /metrics (Prometheus) on a listener of its own (default: served on --http)")
	adminFlags(&cfg.admin, fs)
	stackFlags(&cfg.stack, fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: floodgate serve [flags]\n\nServes Envoy's RateLimitService on --grpc, and POST /json, POST /v1/check,\nGET /healthz, GET /readyz and GET /metrics on --http, and the admin API on\n--admin when a token is set, until SIGINT or SIGTERM.\nEvery flag can also be set from FLOODGATE_<FLAG> (--log-level: FLOODGATE_LOG_LEVEL); the flag wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, lookup); err != nil {
		return cfg, err
	}
	err := checkProcess(cfg.logFormat, cfg.shutdownTimeout)
	if err == nil {
		err = cfg.stack.check()
	}
	if err == nil {
		err = cfg.admin.check()
	}
	if err != nil {
		fmt.Fprintf(stderr, "floodgate serve: %v\n", err)
		return cfg, err
	}
	return cfg, nil
}

// processFlags defines the flags every long-running command shares: the
// log format and level, and the shutdown timeout.
func processFlags(fs *flag.FlagSet, format *string, level *slog.Level, shutdown *time.Duration) {
	fs.StringVar(format, "log-format", "text", "log format: text or json")
	fs.TextVar(level, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.DurationVar(shutdown, "shutdown-timeout", 10*time.Second, "on SIGINT or SIGTERM, how long in-flight requests may take to finish")
}

// checkProcess validates the values of [processFlags].
func checkProcess(format string, shutdown time.Duration) error {
	switch {
	case format != "text" && format != "json":
		return fmt.Errorf("--log-format %q: want text or json", format)
	case shutdown <= 0:
		return fmt.Errorf("--shutdown-timeout %v: want a positive duration", shutdown)
	}
	return nil
}

// newLogger returns a logger writing to w in the given format ("text" or
// "json") from the given level on.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseServe(args, stderr, os.LookupEnv)
	if err != nil {
		return flagsExit(err)
	}
	return serve(ctx, cfg, newLogger(stderr, cfg.logFormat, cfg.logLevel))
}

// serve runs the server until ctx is cancelled, then shuts down gracefully:
// it stops accepting connections, lets in-flight requests and gRPC calls
// finish within cfg.shutdownTimeout, and closes the store. It logs, once
// listening, a line "listening" with protocol=http (and protocol=grpc) and
// the actual addr.
func serve(ctx context.Context, cfg serveConfig, logger *slog.Logger) int {
	ruleSet, watcher, err := loadRules(ctx, cfg.config, logger)
	if err != nil {
		logger.Error("cannot load rules", "config", cfg.config, "err", err)
		return 1
	}
	if watcher != nil {
		defer watcher.Close()
	}
	mx := metrics.New()
	stk, err := newStack(ctx, cfg.stack, ruleSet, engine.FrontGRPC, logger, mx)
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
	st, eng := stk.store, stk.engine
	stk.registerMetrics(watcher)
	rlsSrv := rls.New(eng, rls.Options{Headers: cfg.rlsHeaders, Logger: logger})

	ln, err := net.Listen("tcp", cfg.http)
	if err != nil {
		logger.Error("cannot listen", "protocol", "http", "addr", cfg.http, "err", err)
		closeStore()
		return 1
	}
	api := httpapi.New(st, logger)
	api.UseEngine(eng)
	api.HandleEnvoy(rlsSrv)
	// Rules that fail to load stop serve before it listens, and a server
	// with no rules still answers POST /v1/check: readiness is the store's.
	api.HandleReady(nil)
	handler := http.Handler(api)
	if cfg.metrics == "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", mx.Handler())
		mux.Handle("/", api)
		handler = mux
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	var grpcSrv *grpcServer
	if cfg.grpc != "" {
		grpcSrv, err = listenGRPC(cfg.grpc, rlsSrv)
		if err != nil {
			logger.Error("cannot listen", "protocol", "grpc", "addr", cfg.grpc, "err", err)
			ln.Close()
			closeStore()
			return 1
		}
	}
	var mxSrv *sideServer
	if cfg.metrics != "" {
		mxSrv, err = listenMetrics(cfg.metrics, mx, logger)
		if err != nil {
			logger.Error("cannot listen", "protocol", "metrics", "addr", cfg.metrics, "err", err)
			ln.Close()
			grpcSrv.stop(0)
			closeStore()
			return 1
		}
		defer mxSrv.close()
	}
	adminSrv, err := listenAdmin(cfg.admin, stk, logger)
	if err != nil {
		logger.Error("cannot listen", "protocol", "admin", "addr", cfg.admin.addr, "err", err)
		ln.Close()
		grpcSrv.stop(0)
		closeStore()
		return 1
	}
	closeStore = closingFirst(adminSrv, closeStore)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("listening", "protocol", "http", "addr", ln.Addr().String())
	mxSrv.start(logger)
	adminSrv.start(logger)
	grpcErrc := make(chan error, 1)
	if grpcSrv != nil {
		go func() { grpcErrc <- grpcSrv.srv.Serve(grpcSrv.ln) }()
		logger.Info("listening", "protocol", "grpc", "addr", grpcSrv.ln.Addr().String())
	}

	select {
	case err := <-errc:
		logger.Error("http server failed", "addr", ln.Addr().String(), "err", err)
		grpcSrv.stop(0)
		closeStore()
		return 1
	case err := <-grpcErrc:
		logger.Error("grpc server failed", "addr", grpcSrv.ln.Addr().String(), "err", err)
		srv.Close()
		closeStore()
		return 1
	case <-ctx.Done():
	}
	logger.Info("shutting down", "cause", context.Cause(ctx).Error(), "timeout", cfg.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	code := 0
	var wg sync.WaitGroup
	if grpcSrv != nil {
		wg.Go(func() {
			if !grpcSrv.stop(cfg.shutdownTimeout) {
				logger.Error("in-flight gRPC calls did not finish in time; closing their connections", "timeout", cfg.shutdownTimeout)
			}
		})
	}
	if err := srv.Shutdown(sctx); err != nil {
		logger.Error("in-flight requests did not finish in time; closing their connections", "timeout", cfg.shutdownTimeout, "err", err)
		srv.Close()
		code = 1
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Error("http server failed", "err", err)
		code = 1
	}
	wg.Wait()
	if c := closeStore(); c != 0 {
		code = c
	}
	logger.Info("stopped", "exit_code", code)
	return code
}
