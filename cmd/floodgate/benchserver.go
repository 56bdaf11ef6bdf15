package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	pb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/floodgate/floodgate/bench/envoybaseline"
	"github.com/floodgate/floodgate/rls"
)

func init() {
	register("bench-server", "yardstick gRPC rate-limit servers for benchmarks: an envoyproxy/ratelimit-style INCRBY+EXPIRE pipeline, or a do-nothing server", runBenchServer)
}

// benchServerConfig is what the bench-server command's flags set.
type benchServerConfig struct {
	kind  string
	grpc  string
	store string
	quota uint
	unit  string
	pool  int
}

func runBenchServer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg benchServerConfig
	fs := flag.NewFlagSet("bench-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.kind, "kind", "envoy", "envoy (per request, a go-redis pipeline of INCRBY and EXPIRE per descriptor, fixed window on this process's clock, as envoyproxy/ratelimit) or noop (OK to everything: the transport's floor)")
	fs.StringVar(&cfg.grpc, "grpc", "127.0.0.1:0", "listen `address` of the RateLimitService")
	fs.StringVar(&cfg.store, "store", "", "envoy: redis://host:port[/db] to count in")
	fs.UintVar(&cfg.quota, "quota", 1_000_000_000, "envoy: requests per unit for every descriptor")
	fs.StringVar(&cfg.unit, "unit", "second", "envoy: second, minute, hour or day")
	fs.IntVar(&cfg.pool, "pool", 0, "envoy: Redis connections at most (default go-redis's, 10 per GOMAXPROCS)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: floodgate bench-server [flags]\n\nServes a yardstick of Envoy's RateLimitService v3 on --grpc until SIGINT or\nSIGTERM, for \"floodgate bench --target grpc\". Not a rate limiter to deploy.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, os.LookupEnv); err != nil {
		return flagsExit(err)
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "floodgate bench-server: %v\n", err)
		return 1
	}
	// The same server options as floodgate serve's, so that the yardsticks
	// measure the same transport.
	g := grpc.NewServer(rls.ServerOptions()...)
	switch cfg.kind {
	case "noop":
		pb.RegisterRateLimitServiceServer(g, envoybaseline.Noop{})
	case "envoy":
		if cfg.store == "" {
			fmt.Fprintf(stderr, "floodgate bench-server: --kind envoy needs --store redis://host:port\n")
			return 2
		}
		opts, err := goredis.ParseURL(cfg.store)
		if err != nil {
			return fail(fmt.Errorf("--store %q: %w", cfg.store, err))
		}
		if cfg.pool > 0 {
			opts.PoolSize = cfg.pool
		}
		c := goredis.NewClient(opts)
		defer c.Close()
		unit, ok := pb.RateLimitResponse_RateLimit_Unit_value[strings.ToUpper(cfg.unit)]
		if !ok || cfg.quota == 0 || cfg.quota > 1<<32-1 {
			fmt.Fprintf(stderr, "floodgate bench-server: --unit %q, --quota %d: want second, minute, hour or day and 1 to 4294967295\n", cfg.unit, cfg.quota)
			return 2
		}
		s, err := envoybaseline.New(c, envoybaseline.Options{Quota: uint32(cfg.quota), Unit: pb.RateLimitResponse_RateLimit_Unit(unit)})
		if err != nil {
			return fail(err)
		}
		s.Register(g)
	default:
		fmt.Fprintf(stderr, "floodgate bench-server: --kind %q: want envoy or noop\n", cfg.kind)
		return 2
	}
	ln, err := net.Listen("tcp", cfg.grpc)
	if err != nil {
		return fail(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	logger := newLogger(stderr, "text", slog.LevelInfo)
	logger.Info("listening", "protocol", "grpc", "addr", ln.Addr().String(), "kind", cfg.kind)
	select {
	case err := <-errc:
		return fail(err)
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		g.Stop()
	}
	return 0
}
