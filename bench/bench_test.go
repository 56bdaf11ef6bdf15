package bench_test

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/batch"
	"github.com/floodgate/floodgate/bench"
	"github.com/floodgate/floodgate/internal/proctest"
	"github.com/floodgate/floodgate/internal/redistest"
	"github.com/floodgate/floodgate/overlimit"
	"github.com/floodgate/floodgate/store/memory"
)

func TestMain(m *testing.M) {
	code := m.Run()
	redistest.StopShared()
	os.Exit(code)
}

func TestHistogram(t *testing.T) {
	var h, a, b bench.Histogram
	for i := 1; i <= 10000; i++ {
		d := time.Duration(i) * time.Microsecond
		h.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		want := time.Duration(q*10000) * time.Microsecond
		got := h.Quantile(q)
		if got < want || float64(got) > float64(want)*1.02 {
			t.Errorf("q%.2f = %v, want %v within 2%%", q, got, want)
		}
		if a.Quantile(q) != got {
			t.Errorf("merged q%.2f = %v, want %v", q, a.Quantile(q), got)
		}
	}
	if h.Max() != 10*time.Millisecond || h.Count() != 10000 {
		t.Errorf("max %v count %d", h.Max(), h.Count())
	}
}

func TestAllows(t *testing.T) {
	from := time.Unix(1_700_000_040, 0) // on a whole minute
	cases := []struct {
		l    floodgate.Limit
		e    time.Duration
		want int64
	}{
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Minute}, 59 * time.Second, 10},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Minute}, 60 * time.Second, 20},
		{floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 60, Window: time.Minute, Burst: 5}, 10 * time.Second, 15},
		{floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 60, Window: time.Minute, Burst: 5}, 10 * time.Second, 15},
		{floodgate.Limit{Algorithm: floodgate.SlidingWindowLog, Quota: 7, Window: time.Second}, 2500 * time.Millisecond, 21},
	}
	for _, c := range cases {
		if got := bench.Allows(c.l, from, from.Add(c.e)); got != c.want {
			t.Errorf("%v over %v: %d, want %d", c.l, c.e, got, c.want)
		}
	}
}

// TestLibrary runs briefly in process on the memory store, batched and
// cached, with many keys, then on one key with the exactness check.
func TestLibrary(t *testing.T) {
	ctx := context.Background()
	lim := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 50, Window: time.Hour}
	c := &bench.CountingStore{Store: memory.New(memory.Options{})}
	st := overlimit.New(batch.New(c, batch.Options{}), overlimit.Options{})
	target := bench.NewLibrary(st, lim)
	defer target.Close()

	rep, err := bench.Run(ctx, target, bench.Config{Requests: 20000, Duration: 30 * time.Second, Concurrency: 8, Keys: 1000, Zipf: true, Limit: lim, StoreCalls: c.Calls})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Decisions != 20000 || rep.Errors != 0 || rep.Allowed+rep.Denied != 20000 || rep.Exactness != nil {
		t.Errorf("report %+v", rep)
	}
	if rep.Latency.P50 <= 0 || rep.Latency.P50 > rep.Latency.P99 || rep.Latency.P99 > rep.Latency.Max {
		t.Errorf("latency %+v", rep.Latency)
	}
	if rep.RoundTripsPerDecision < 0 || rep.RoundTripsPerDecision > 1 {
		t.Errorf("round trips per decision %v", rep.RoundTripsPerDecision)
	}

	rep, err = bench.Run(ctx, target, bench.Config{Requests: 5000, Duration: 30 * time.Second, Concurrency: 16, Limit: lim, StoreCalls: c.Calls})
	if err != nil {
		t.Fatal(err)
	}
	e := rep.Exactness
	if e == nil || !e.OK || e.Admitted != lim.Quota {
		t.Errorf("exactness %+v, want %d admitted", e, lim.Quota)
	}
	t.Logf("one hot key: %d decisions, %d store calls", rep.Decisions, rep.StoreCalls)
	if rep.StoreCalls*10 > rep.Decisions {
		t.Errorf("%d store calls for %d decisions on one hot key", rep.StoreCalls, rep.Decisions)
	}
}

// TestHTTP runs against a real floodgate serve process.
func TestHTTP(t *testing.T) {
	p := proctest.Serve(t, "--store", "memory")
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 100, Window: time.Hour}
	target, err := bench.NewHTTP(p.URL(""), lim, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	rep, err := bench.Run(context.Background(), target, bench.Config{Requests: 1000, Duration: time.Minute, Concurrency: 8, Limit: lim})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 0 || rep.Decisions != 1000 {
		t.Fatalf("report %+v", rep)
	}
	e := rep.Exactness
	// Unless the run crossed the top of an hour, exactly the quota passes.
	if e == nil || !e.OK || (e.Allows == lim.Quota && e.Admitted != lim.Quota) {
		t.Errorf("exactness %+v", e)
	}
}

// rls is a minimal RateLimitService: a fixed window of quota per hour per
// descriptor value, counted in a memory store.
type rls struct {
	rlsv3.UnimplementedRateLimitServiceServer
	lim *floodgate.Limiter
	l   floodgate.Limit
}

func (s *rls) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	key := req.Domain
	for _, e := range req.Descriptors[0].Entries {
		key += "|" + e.Key + "=" + e.Value
	}
	r, err := s.lim.AllowN(ctx, key, int64(max(req.HitsAddend, 1)), s.l)
	if err != nil {
		return nil, err
	}
	code := rlsv3.RateLimitResponse_OK
	if !r.Allowed {
		code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	return &rlsv3.RateLimitResponse{OverallCode: code}, nil
}

func TestGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 30, Window: time.Hour}
	srv := grpc.NewServer()
	st := memory.New(memory.Options{})
	defer st.Close()
	rlsv3.RegisterRateLimitServiceServer(srv, &rls{lim: floodgate.New(st), l: lim})
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	defer wg.Wait()
	defer srv.Stop()

	target, err := bench.NewGRPC(ln.Addr().String(), "test", []string{"user={key}"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	rep, err := bench.Run(context.Background(), target, bench.Config{Requests: 500, Duration: time.Minute, Concurrency: 4, Limit: lim})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 0 || rep.Exactness == nil || rep.Exactness.Admitted != lim.Quota {
		t.Errorf("report %+v, exactness %+v", rep, rep.Exactness)
	}
}
