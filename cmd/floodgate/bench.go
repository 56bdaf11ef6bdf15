package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/batch"
	"github.com/floodgate/floodgate/bench"
	"github.com/floodgate/floodgate/overlimit"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

func init() {
	register("bench", "load generator: decisions/s, latency percentiles, round trips, exactness", runBench)
}

// benchConfig is what the bench command's flags set.
type benchConfig struct {
	target     string
	addr       string
	store      string
	batch      bool
	batching   throughputConfig // how batches form: only its batch flags are set
	cache      bool
	limit      string
	domain     string
	descriptor string
	redisStats string
	dist       string
	json       bool
	progress   string
	cpuProfile string
	run        bench.Config
}

func parseBench(args []string, stderr io.Writer, lookup func(string) (string, bool)) (benchConfig, error) {
	var cfg benchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.target, "target", "library", "what to load: library (in process, on --store), http (the HTTP API at --addr), grpc (Envoy's RateLimitService at --addr), redis_rate (the go-redis/redis_rate yardstick on --store)")
	fs.StringVar(&cfg.addr, "addr", "", "server `address`: http://host:port for http, host:port for grpc")
	fs.StringVar(&cfg.store, "store", "memory", "store `url` for the library and redis_rate targets: memory or redis://...")
	fs.BoolVar(&cfg.batch, "batch", false, "library target: coalesce concurrent decisions into batched store calls")
	batchFlags(&cfg.batching, fs)
	fs.BoolVar(&cfg.cache, "cache", false, "library target: answer keys known to be over their limit without a store call")
	fs.StringVar(&cfg.limit, "limit", "token_bucket/1000/1s", "`algorithm/quota/window[/burst]` of the http, library and redis_rate targets (redis_rate ignores the algorithm: it is GCRA)")
	fs.StringVar(&cfg.domain, "domain", "bench", "grpc: the rate-limit domain")
	fs.StringVar(&cfg.descriptor, "descriptor", "key={key}", "grpc: descriptor entries `k=v[,k=v]`; {key} in a value is replaced by the request's key")
	fs.StringVar(&cfg.redisStats, "redis-stats", "", "redis://host:port whose INFO commandstats are compared before and after the run")
	fs.DurationVar(&cfg.run.Duration, "duration", 0, "run this long (default 10s; 5m at most with --requests)")
	fs.Int64Var(&cfg.run.Requests, "requests", 0, "stop after this many decisions (0: run for --duration)")
	fs.IntVar(&cfg.run.Concurrency, "concurrency", bench.DefaultConcurrency, "workers, each with one decision in flight")
	fs.IntVar(&cfg.run.Keys, "keys", 1, "distinct keys (1 adds the exactness check)")
	fs.StringVar(&cfg.dist, "dist", "uniform", "key distribution: uniform or zipf")
	fs.Float64Var(&cfg.run.ZipfS, "zipf-s", bench.DefaultZipfS, "Zipf exponent (above 1)")
	fs.Int64Var(&cfg.run.Hits, "hits", 1, "cost of each decision")
	fs.Float64Var(&cfg.run.Rate, "rate", 0, "target decisions per second for the whole run, each decision's latency counted from the instant it was due (0: as fast as possible, latency from the send)")
	fs.BoolVar(&cfg.json, "json", false, "print the report as JSON")
	fs.StringVar(&cfg.progress, "progress", "auto", "live progress line: auto (when stdout is a terminal), always or never")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the run (go tool pprof) to this `file`")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: floodgate bench [flags]\n\nSends decisions from concurrent workers and reports decisions/s, latency\npercentiles, allowed/denied, errors, store round trips per decision and, for\none key, whether no more was admitted than the limit allows.\n\nExamples:\n\n\tfloodgate bench --store redis://127.0.0.1:6379 --batch --keys 10000 --concurrency 64\n\tfloodgate bench --target http --addr http://127.0.0.1:8080 --limit fixed_window/100/1m\n\tfloodgate bench --target grpc --addr 127.0.0.1:8081 --domain api --descriptor user={key} --keys 10000\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, lookup); err != nil {
		return cfg, err
	}
	fail := func(err error) (benchConfig, error) {
		fmt.Fprintf(stderr, "floodgate bench: %v\n", err)
		return cfg, err
	}
	switch cfg.dist {
	case "uniform":
	case "zipf":
		cfg.run.Zipf = true
	default:
		return fail(fmt.Errorf("--dist %q: want uniform or zipf", cfg.dist))
	}
	switch cfg.progress {
	case "auto", "always", "never":
	default:
		return fail(fmt.Errorf("--progress %q: want auto, always or never", cfg.progress))
	}
	if cfg.run.Concurrency < 1 || cfg.run.Concurrency > 100_000 {
		return fail(fmt.Errorf("--concurrency %d: want 1 to 100000", cfg.run.Concurrency))
	}
	if cfg.run.Keys < 1 || cfg.run.Keys > 10_000_000 {
		return fail(fmt.Errorf("--keys %d: want 1 to 10000000", cfg.run.Keys))
	}
	if err := floodgate.ValidateCost(cfg.run.Hits); err != nil || cfg.run.Hits < 1 {
		return fail(fmt.Errorf("--hits %d: want 1 to %d", cfg.run.Hits, int64(floodgate.MaxCost)))
	}
	if cfg.run.Duration < 0 || cfg.run.Requests < 0 || cfg.run.Rate < 0 {
		return fail(fmt.Errorf("--duration, --requests and --rate must not be negative"))
	}
	switch cfg.target {
	case "library", "redis_rate":
	case "http", "grpc":
		if cfg.addr == "" {
			return fail(fmt.Errorf("--target %s needs --addr", cfg.target))
		}
	default:
		return fail(fmt.Errorf("--target %q: want library, http, grpc or redis_rate", cfg.target))
	}
	if cfg.target != "grpc" {
		l, err := parseLimitFlag(cfg.limit)
		if err != nil {
			return fail(err)
		}
		cfg.run.Limit = l
	}
	return cfg, nil
}

// parseLimitFlag parses "algorithm/quota/window[/burst]".
func parseLimitFlag(s string) (floodgate.Limit, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 && len(parts) != 4 {
		return floodgate.Limit{}, fmt.Errorf("--limit %q: want algorithm/quota/window[/burst], e.g. token_bucket/100/1m/20", s)
	}
	var l floodgate.Limit
	var err error
	if l.Algorithm, err = floodgate.ParseAlgorithm(parts[0]); err != nil {
		return l, fmt.Errorf("--limit %q: %w", s, err)
	}
	if l.Quota, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
		return l, fmt.Errorf("--limit %q: quota %q: want an integer", s, parts[1])
	}
	if l.Window, err = time.ParseDuration(parts[2]); err != nil {
		return l, fmt.Errorf("--limit %q: window %q: want a duration such as 1s or 5m", s, parts[2])
	}
	if len(parts) == 4 {
		if l.Burst, err = strconv.ParseInt(parts[3], 10, 64); err != nil {
			return l, fmt.Errorf("--limit %q: burst %q: want an integer", s, parts[3])
		}
	}
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("--limit %q: %w", s, err)
	}
	return l, nil
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseBench(args, stderr, os.LookupEnv)
	if err != nil {
		return flagsExit(err)
	}
	target, desc, err := openTarget(ctx, &cfg)
	if err != nil {
		fmt.Fprintf(stderr, "floodgate bench: %v\n", err)
		return 1
	}
	defer target.Close()
	if cfg.redisStats != "" {
		read, closeStats, err := bench.RedisCommandStats(cfg.redisStats)
		if err != nil {
			fmt.Fprintf(stderr, "floodgate bench: %v\n", err)
			return 1
		}
		defer closeStats()
		cfg.run.RedisStats = read
	}
	if cfg.progress == "always" || (cfg.progress == "auto" && isTerminal(stdout)) {
		cfg.run.Progress = stdout
	}
	if cfg.cpuProfile != "" {
		stop, err := startCPUProfile(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "floodgate bench: %v\n", err)
			return 1
		}
		defer stop()
	}
	rep, err := bench.Run(ctx, target, cfg.run)
	if err != nil {
		fmt.Fprintf(stderr, "floodgate bench: %v\n", err)
		return 1
	}
	if cfg.json {
		out := struct {
			Target string `json:"target"`
			bench.Report
		}{desc, rep}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "floodgate bench: %v\n", err)
			return 1
		}
	} else {
		printReport(stdout, desc, rep)
	}
	if rep.Exactness != nil && !rep.Exactness.OK {
		fmt.Fprintf(stderr, "floodgate bench: admitted %d, more than the limit allows (%d)\n", rep.Exactness.Admitted, rep.Exactness.Allows)
		return 1
	}
	if rep.Decisions > 0 && rep.Errors == rep.Decisions {
		fmt.Fprintf(stderr, "floodgate bench: every decision failed; first error: %s\n", rep.FirstError)
		return 1
	}
	return 0
}

// openTarget opens the target cfg names and returns it with a description.
// For the library target it sets cfg.run.StoreCalls.
func openTarget(ctx context.Context, cfg *benchConfig) (bench.Target, string, error) {
	conns := cfg.run.Concurrency
	switch cfg.target {
	case "http":
		t, err := bench.NewHTTP(cfg.addr, cfg.run.Limit, conns)
		return t, fmt.Sprintf("http %s, limit %v", cfg.addr, cfg.run.Limit), err
	case "grpc":
		t, err := bench.NewGRPC(cfg.addr, cfg.domain, strings.Split(cfg.descriptor, ","), min(conns, 8))
		return t, fmt.Sprintf("grpc %s, domain %s, descriptor %s", cfg.addr, cfg.domain, cfg.descriptor), err
	case "redis_rate":
		opts, err := redisstore.ParseURL(cfg.store)
		if err != nil {
			return nil, "", err
		}
		if opts.Cluster || opts.MasterName != "" || len(opts.Addrs) != 1 {
			return nil, "", fmt.Errorf("--target redis_rate: --store %q: want one standalone redis://host:port", cfg.store)
		}
		return bench.NewRedisRate(opts.Addrs[0], cfg.run.Limit, conns),
			fmt.Sprintf("redis_rate (GCRA, one EVALSHA per decision) on %s, %d/%v burst %d", cfg.store, cfg.run.Limit.Quota, cfg.run.Limit.Window, cfg.run.Limit.Capacity()), nil
	}
	st, err := openStore(ctx, cfg.store)
	if err != nil {
		return nil, "", err
	}
	counting := &bench.CountingStore{Store: st}
	cfg.run.StoreCalls = counting.Calls
	var s floodgate.Store = counting
	desc := fmt.Sprintf("library on %s", cfg.store)
	if cfg.batch {
		s = batch.New(s, batchOptions(cfg.batching))
		desc += ", batched"
	}
	if cfg.cache {
		s = overlimit.New(s, overlimit.Options{})
		desc += ", over-limit cache"
	}
	return bench.NewLibrary(s, cfg.run.Limit), fmt.Sprintf("%s, limit %v", desc, cfg.run.Limit), nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func printReport(w io.Writer, desc string, r bench.Report) {
	fmt.Fprintf(w, "target       %s\n", desc)
	fmt.Fprintf(w, "load         %d workers, %d keys\n", r.Concurrency, r.Keys)
	fmt.Fprintf(w, "elapsed      %v\n", r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "decisions    %d (%.0f/s)\n", r.Decisions, r.PerSecond)
	fmt.Fprintf(w, "outcomes     allowed %d, denied %d, errors %d\n", r.Allowed, r.Denied, r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error  %s\n", r.FirstError)
	}
	l := r.Latency
	fmt.Fprintf(w, "latency      p50 %v  p90 %v  p99 %v  max %v  mean %v\n", rnd(l.P50), rnd(l.P90), rnd(l.P99), rnd(l.Max), rnd(l.Mean))
	if r.StoreCalls >= 0 {
		fmt.Fprintf(w, "round trips  %.4f per decision (%d store calls)\n", r.RoundTripsPerDecision, r.StoreCalls)
	}
	if r.RedisCommands != nil {
		names := make([]string, 0, len(r.RedisCommands))
		for k := range r.RedisCommands {
			names = append(names, k)
		}
		sort.Strings(names)
		var parts []string
		for _, k := range names {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.RedisCommands[k]))
		}
		fmt.Fprintf(w, "redis        %.4f commands per decision (%s)\n", r.RedisCommandsPerDecision, strings.Join(parts, ", "))
	}
	if e := r.Exactness; e != nil {
		verdict := "ok"
		if !e.OK {
			verdict = "OVER-ADMITTED"
		}
		fmt.Fprintf(w, "exactness    admitted %d, the limit allows %d in the elapsed time: %s\n", e.Admitted, e.Allows, verdict)
	}
}

func rnd(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond / 10)
}

// startCPUProfile starts writing a CPU profile to path; stop ends it and
// closes the file.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
