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
	"time"

	"github.com/floodgate/floodgate/httpapi"
)

func init() {
	register("serve", "run the decision server: the HTTP JSON API on a store", runServe)
}

// serveConfig is what the serve command's flags set.
type serveConfig struct {
	http            string
	store           string
	logFormat       string
	logLevel        slog.Level
	shutdownTimeout time.Duration
}

// parseServe parses serve's flags and their environment variables (looked up
// with lookup). Usage and errors go to stderr.
func parseServe(args []string, stderr io.Writer, lookup func(string) (string, bool)) (serveConfig, error) {
	cfg := serveConfig{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.http, "http", "127.0.0.1:8080", "listen `address` of the HTTP JSON API (port 0 picks a free port)")
	fs.StringVar(&cfg.store, "store", "memory", "store `url`: memory (in-process)")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "log format: text or json")
	fs.TextVar(&cfg.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGINT or SIGTERM, how long in-flight requests may take to finish")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: floodgate serve [flags]\n\nServes POST /v1/check and GET /healthz until SIGINT or SIGTERM.\nEvery flag can also be set from FLOODGATE_<FLAG> (--log-level: FLOODGATE_LOG_LEVEL); the flag wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, lookup); err != nil {
		return cfg, err
	}
	if cfg.logFormat != "text" && cfg.logFormat != "json" {
		err := fmt.Errorf("--log-format %q: want text or json", cfg.logFormat)
		fmt.Fprintf(stderr, "floodgate serve: %v\n", err)
		return cfg, err
	}
	if cfg.shutdownTimeout <= 0 {
		err := fmt.Errorf("--shutdown-timeout %v: want a positive duration", cfg.shutdownTimeout)
		fmt.Fprintf(stderr, "floodgate serve: %v\n", err)
		return cfg, err
	}
	return cfg, nil
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
// it stops accepting connections, lets in-flight requests finish within
// cfg.shutdownTimeout, and closes the store. It logs, once listening, a line
// "listening" with protocol=http and the actual addr.
func serve(ctx context.Context, cfg serveConfig, logger *slog.Logger) int {
	st, err := openStore(ctx, cfg.store)
	if err != nil {
		logger.Error("cannot open store", "err", err)
		return 1
	}
	logger.Info("store opened", "store", cfg.store)
	closeStore := func() int {
		if err := st.Close(); err != nil {
			logger.Error("closing store", "store", cfg.store, "err", err)
			return 1
		}
		return 0
	}

	ln, err := net.Listen("tcp", cfg.http)
	if err != nil {
		logger.Error("cannot listen", "protocol", "http", "addr", cfg.http, "err", err)
		closeStore()
		return 1
	}
	srv := &http.Server{
		Handler:           httpapi.New(st, logger),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("listening", "protocol", "http", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		logger.Error("http server failed", "addr", ln.Addr().String(), "err", err)
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
		logger.Error("http server failed", "err", err)
		code = 1
	}
	if c := closeStore(); c != 0 {
		code = c
	}
	logger.Info("stopped", "exit_code", code)
	return code
}
