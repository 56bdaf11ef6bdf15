package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/floodgate/floodgate/rls"
	"github.com/floodgate/floodgate/rules"
)

// sampleConfig is the rule file serve loads when no --config is given and
// it exists in the working directory, so that "go run ./cmd/floodgate
// serve" from the repository root has rules to show.
const sampleConfig = "examples/ratelimit.yaml"

// loadRules loads the rules named by --config and watches them for
// changes. With no --config it loads sampleConfig when that file exists,
// else it serves with no rules (every descriptor admitted) and says so. The
// returned function gives the rules in force (nil when none); the watcher,
// when not nil, is closed by the caller.
func loadRules(ctx context.Context, path string, logger *slog.Logger) (func() *rules.Set, *rules.Watcher, error) {
	if path == "" {
		if st, err := os.Stat(sampleConfig); err != nil || st.IsDir() {
			logger.Warn("no --config given and no " + sampleConfig + " here: serving with no rules, every descriptor is admitted")
			return func() *rules.Set { return nil }, nil, nil
		}
		path = sampleConfig
		logger.Info("no --config given: loading the sample rules", "config", path)
	}
	w, err := rules.Watch(ctx, []string{path}, rules.WatchOptions{Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	set := w.Current()
	logger.Info("rules loaded", "config", path, "domains", set.Domains(), "version", set.Version())
	return w.Current, w, nil
}

// grpcServer is the gRPC listener of serve: Envoy's RateLimitService, the
// health service and reflection.
type grpcServer struct {
	ln     net.Listener
	srv    *grpc.Server
	health *health.Server
}

// listenGRPC listens on addr and builds the gRPC server; Serve is left to
// the caller.
func listenGRPC(addr string, svc *rls.Server) (*grpcServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv, hs := rls.NewGRPCServer(svc)
	return &grpcServer{ln: ln, srv: srv, health: hs}, nil
}

// stop reports NOT_SERVING, then stops the server gracefully, letting
// in-flight calls finish within timeout before closing their connections.
// It reports whether they finished in time. A nil server is stopped.
func (g *grpcServer) stop(timeout time.Duration) bool {
	if g == nil {
		return true
	}
	g.health.Shutdown() // every service NOT_SERVING
	done := make(chan struct{})
	go func() {
		g.srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		g.srv.Stop()
		<-done
		return false
	}
}
