package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate/approx"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/metrics"
	"github.com/floodgate/floodgate/rules"
)

// registerMetrics registers the scrape-time collectors of a store stack;
// nil parts are skipped. A failed registration is logged: metrics are
// never a reason not to serve.
func registerMetrics(mx *metrics.Metrics, logger *slog.Logger, eng *engine.Engine, res *resilience, w *rules.Watcher, apx *approx.Store) {
	errs := []error{mx.Engine(eng)}
	if res != nil && res.brk != nil {
		errs = append(errs, mx.Breaker(res.brk))
	}
	if res != nil {
		errs = append(errs, registerFastPath(mx, res.batch, res.cache)...)
	}
	if res != nil && res.mem != nil {
		errs = append(errs, mx.Membership(res.mem))
	}
	if w != nil {
		errs = append(errs, mx.Watcher(w))
	}
	if apx != nil {
		errs = append(errs, mx.Approx(apx))
	}
	if err := errors.Join(errs...); err != nil {
		logger.Error("metrics: some collectors are missing", "err", err)
	}
}

// sideServer serves a handler on a listener of its own, beside the main
// one: GET /metrics (--metrics) or the admin API (--admin).
type sideServer struct {
	protocol string // in the "listening" log line: metrics or admin
	ln       net.Listener
	srv      *http.Server
}

// listenMetrics listens on addr for GET /metrics; Serve is left to start.
func listenMetrics(addr string, mx *metrics.Metrics, logger *slog.Logger) (*sideServer, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", mx.Handler())
	return listenSide("metrics", addr, mux, logger)
}

// listenSide listens on addr for h; Serve is left to start.
func listenSide(protocol, addr string, h http.Handler, logger *slog.Logger) (*sideServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return &sideServer{protocol: protocol, ln: ln, srv: srv}, nil
}

// start serves in a goroutine until close; a failure is logged only: the
// decisions go on without it. A nil server does nothing.
func (m *sideServer) start(logger *slog.Logger) {
	if m == nil {
		return
	}
	go func() {
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error(m.protocol+" server failed", "addr", m.ln.Addr().String(), "err", err)
		}
	}()
	logger.Info("listening", "protocol", m.protocol, "addr", m.ln.Addr().String())
}

// close stops the server at once (a request in flight is cut). A nil
// server does nothing.
func (m *sideServer) close() {
	if m != nil {
		m.srv.Close()
	}
}

// redisLogger routes go-redis's internal log (every failed dial during an
// outage, pool and failover notices) to slog at debug level: an outage is
// reported once by the breaker and the engine's rate-limited warning, and
// counted in the metrics, not once per connection attempt.
type redisLogger struct{ logger *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if ctx == nil {
		ctx = context.Background()
	}
	if !l.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	l.logger.DebugContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "go-redis")
}

// quietRedis installs redisLogger as go-redis's logger (process-wide).
func quietRedis(logger *slog.Logger) { goredis.SetLogger(redisLogger{logger}) }
