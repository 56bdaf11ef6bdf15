package rls_test

import (
	"context"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	pb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/floodgate/floodgate/bench/envoybaseline"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rls"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

const benchConfig = `
domain: bench
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 1000000000}
`

// benchKeys is the number of distinct client addresses the load cycles
// through.
const benchKeys = 10000

// BenchmarkGRPC measures ShouldRateLimit over loopback TCP: floodgate on the
// memory store (one descriptor, 10,000 client addresses, every request
// admitted), and a do-nothing service on the same grpc-go as the floor, at
// concurrency 1, 16 and 64 over one client connection. It reports
// decisions/s and the p50 and p99 latency of a call.
//
//	go test -run '^$' -bench BenchmarkGRPC -benchtime 20000x -count 1 ./rls
func BenchmarkGRPC(b *testing.B) {
	set, err := rules.Parse("bench.yaml", []byte(benchConfig))
	if err != nil {
		b.Fatal(err)
	}
	for _, srv := range []string{"floodgate", "noop"} {
		for _, conc := range []int{1, 16, 64} {
			b.Run(srv+"/c="+strconv.Itoa(conc), func(b *testing.B) {
				st := memory.New(memory.Options{})
				defer st.Close()
				var g *grpc.Server
				if srv == "noop" {
					g = grpc.NewServer()
					pb.RegisterRateLimitServiceServer(g, envoybaseline.Noop{})
				} else {
					g, _ = rls.NewGRPCServer(rls.New(engine.New(st, engine.Static(set), nil), rls.Options{}))
				}
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				go g.Serve(ln)
				defer g.Stop()
				conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				c := pb.NewRateLimitServiceClient(conn)
				reqs := make([]*pb.RateLimitRequest, benchKeys)
				for i := range reqs {
					reqs[i] = &pb.RateLimitRequest{Domain: "bench", Descriptors: []*rlv3.RateLimitDescriptor{{
						Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)}},
					}}}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				// Warm up the connection.
				if _, err := c.ShouldRateLimit(ctx, reqs[0]); err != nil {
					b.Fatal(err)
				}
				lat := make([]time.Duration, b.N)
				var wg sync.WaitGroup
				var failed error
				var mu sync.Mutex
				b.ResetTimer()
				start := time.Now()
				for w := range conc {
					wg.Go(func() {
						for i := w; i < b.N; i += conc {
							t0 := time.Now()
							resp, err := c.ShouldRateLimit(ctx, reqs[i%benchKeys])
							lat[i] = time.Since(t0)
							if err != nil || resp.OverallCode != pb.RateLimitResponse_OK {
								mu.Lock()
								failed = err
								mu.Unlock()
								return
							}
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				if failed != nil {
					b.Fatal(failed)
				}
				slices.Sort(lat)
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}
