package rls_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	pb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rls"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

// Yearly windows (epoch-aligned 365 days) so that no window ends during a
// test, except about once in ten million runs.
const config = `
domain: test
descriptors:
  - key: ip
    rate_limit: {unit: year, requests_per_unit: 3}
  - key: ip
    value: 10.0.0.1
    rate_limit: {unlimited: true}
  - key: ip
    value: 10.0.0.66
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: api
    rate_limit: {name: api, requests_per_unit: 5, window: 8760h, algorithm: sliding_window_log}
  - key: two
    rate_limits:
      - {requests_per_unit: 100, window: 8760h}
      - {requests_per_unit: 2, unit: year}
`

func start(t testing.TB, opts rls.Options) pb.RateLimitServiceClient {
	t.Helper()
	conn := startConn(t, opts)
	return pb.NewRateLimitServiceClient(conn)
}

func startConn(t testing.TB, opts rls.Options) *grpc.ClientConn {
	t.Helper()
	set, err := rules.Parse("test.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	g, _ := rls.NewGRPCServer(rls.New(engine.New(st, engine.Static(set), nil), opts))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
		st.Close()
	})
	return conn
}

func req(domain string, hits uint32, descs ...string) *pb.RateLimitRequest {
	r := &pb.RateLimitRequest{Domain: domain, HitsAddend: hits}
	for _, d := range descs {
		var es []*rlv3.RateLimitDescriptor_Entry
		for _, kv := range strings.Split(d, ",") {
			k, v, _ := strings.Cut(kv, "=")
			es = append(es, &rlv3.RateLimitDescriptor_Entry{Key: k, Value: v})
		}
		r.Descriptors = append(r.Descriptors, &rlv3.RateLimitDescriptor{Entries: es})
	}
	return r
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestOKAndOverLimit(t *testing.T) {
	c := start(t, rls.Options{})
	for i := 1; i <= 3; i++ {
		resp, err := c.ShouldRateLimit(ctx(t), req("test", 0, "ip=10.0.0.2"))
		if err != nil {
			t.Fatal(err)
		}
		s := resp.Statuses[0]
		if resp.OverallCode != pb.RateLimitResponse_OK || len(resp.Statuses) != 1 || s.Code != pb.RateLimitResponse_OK ||
			s.CurrentLimit.GetRequestsPerUnit() != 3 || s.CurrentLimit.GetUnit() != pb.RateLimitResponse_RateLimit_YEAR ||
			s.CurrentLimit.GetUnitMultiplier() != nil || s.LimitRemaining != uint32(3-i) ||
			s.DurationUntilReset.AsDuration() <= 0 || s.DurationUntilReset.AsDuration() > 365*24*time.Hour ||
			len(resp.ResponseHeadersToAdd) != 0 {
			t.Fatalf("request %d: %v", i, resp)
		}
	}
	resp, err := c.ShouldRateLimit(ctx(t), req("test", 0, "ip=10.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	s := resp.Statuses[0]
	if resp.OverallCode != pb.RateLimitResponse_OVER_LIMIT || s.Code != pb.RateLimitResponse_OVER_LIMIT || s.LimitRemaining != 0 ||
		s.CurrentLimit.GetRequestsPerUnit() != 3 || s.DurationUntilReset.AsDuration() <= 0 {
		t.Fatalf("4th: %v", resp)
	}
}

func TestHitsAndDescriptors(t *testing.T) {
	c := start(t, rls.Options{})
	// Request-level hits_addend 2; the second descriptor overrides with 0
	// (check only), the third is unlimited, the fourth has no rule.
	r := req("test", 2, "api=a", "api=b", "ip=10.0.0.1", "nothing=x", "two=t")
	r.Descriptors[1].HitsAddend = wrapperspb.UInt64(0)
	resp, err := c.ShouldRateLimit(ctx(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if resp.OverallCode != pb.RateLimitResponse_OK || len(resp.Statuses) != 5 {
		t.Fatalf("%v", resp)
	}
	a, b := resp.Statuses[0], resp.Statuses[1]
	if a.LimitRemaining != 3 || b.LimitRemaining != 5 || a.CurrentLimit.GetName() != "api" ||
		a.CurrentLimit.GetUnit() != pb.RateLimitResponse_RateLimit_YEAR || a.CurrentLimit.GetRequestsPerUnit() != 5 {
		t.Errorf("hits: %v / %v", a, b)
	}
	for _, s := range resp.Statuses[2:4] {
		if s.Code != pb.RateLimitResponse_OK || s.CurrentLimit != nil || s.DurationUntilReset != nil || s.LimitRemaining != 0 {
			t.Errorf("unlimited / no rule: %v", s)
		}
	}
	// Two limits: the tighter (2 per year) decides: 0 remaining after 2 hits.
	if s := resp.Statuses[4]; s.LimitRemaining != 0 || s.CurrentLimit.GetRequestsPerUnit() != 2 {
		t.Errorf("two limits: %v", s)
	}
	// Request-level 0 means 1.
	resp, err = c.ShouldRateLimit(ctx(t), req("test", 0, "api=a"))
	if err != nil || resp.Statuses[0].LimitRemaining != 2 {
		t.Errorf("hits 0: %v %v", resp, err)
	}
	// Over limit on one descriptor makes the request over limit; the other
	// descriptor still counts (as in envoyproxy/ratelimit).
	resp, err = c.ShouldRateLimit(ctx(t), req("test", 3, "api=a", "api=c"))
	if err != nil || resp.OverallCode != pb.RateLimitResponse_OVER_LIMIT || resp.Statuses[0].Code != pb.RateLimitResponse_OVER_LIMIT ||
		resp.Statuses[1].Code != pb.RateLimitResponse_OK || resp.Statuses[1].LimitRemaining != 2 {
		t.Errorf("mixed: %v %v", resp, err)
	}
	// Deny.
	resp, err = c.ShouldRateLimit(ctx(t), req("test", 0, "ip=10.0.0.66"))
	if err != nil || resp.OverallCode != pb.RateLimitResponse_OVER_LIMIT || resp.Statuses[0].CurrentLimit.GetRequestsPerUnit() != 0 {
		t.Errorf("deny: %v %v", resp, err)
	}
	// Unknown domain: OK, as envoyproxy/ratelimit answers.
	resp, err = c.ShouldRateLimit(ctx(t), req("nope", 0, "ip=10.0.0.2"))
	if err != nil || resp.OverallCode != pb.RateLimitResponse_OK || resp.Statuses[0].Code != pb.RateLimitResponse_OK {
		t.Errorf("unknown domain: %v %v", resp, err)
	}
}

func TestErrors(t *testing.T) {
	c := start(t, rls.Options{MaxDescriptors: 4})
	many := req("test", 0, "a=1", "a=2", "a=3", "a=4", "a=5")
	huge := req("test", 0, "ip="+strings.Repeat("x", rls.MaxRecvMsgSize))
	override := req("test", 0, "ip=1")
	override.Descriptors[0].Limit = &rlv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1}
	bigHits := req("test", 0, "ip=1")
	bigHits.Descriptors[0].HitsAddend = wrapperspb.UInt64(floodgate.MaxCost + 1)
	for _, tc := range []struct {
		name string
		r    *pb.RateLimitRequest
		code codes.Code
	}{
		{"empty domain", req("", 0, "ip=1"), codes.InvalidArgument},
		{"no descriptors", req("test", 0), codes.InvalidArgument},
		{"empty descriptor", &pb.RateLimitRequest{Domain: "test", Descriptors: []*rlv3.RateLimitDescriptor{{}}}, codes.InvalidArgument},
		{"too many descriptors", many, codes.InvalidArgument},
		{"oversized message", huge, codes.ResourceExhausted},
		{"limit override", override, codes.InvalidArgument},
		{"huge hits", bigHits, codes.InvalidArgument},
	} {
		_, err := c.ShouldRateLimit(ctx(t), tc.r)
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	// Still answering.
	if resp, err := c.ShouldRateLimit(ctx(t), req("test", 0, "ip=10.0.0.9")); err != nil || resp.OverallCode != pb.RateLimitResponse_OK {
		t.Errorf("after errors: %v %v", resp, err)
	}
}

func TestHeaders(t *testing.T) {
	c := start(t, rls.Options{Headers: rls.DraftHeaders})
	resp, err := c.ShouldRateLimit(ctx(t), req("test", 0, "api=a", "ip=10.0.0.2", "nothing=x"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, h := range resp.ResponseHeadersToAdd {
		got[h.Key] = h.Value
	}
	if got["RateLimit-Policy"] != `"api";q=5;w=31536000, "test.ip";q=3;w=31536000` ||
		!strings.HasPrefix(got["RateLimit"], `"api";r=4;t=`) || !strings.Contains(got["RateLimit"], `, "test.ip";r=2;t=`) {
		t.Errorf("draft headers: %q", got)
	}

	c = start(t, rls.Options{Headers: rls.LegacyHeaders})
	resp, err = c.ShouldRateLimit(ctx(t), req("test", 0, "api=a", "ip=10.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	got = map[string]string{}
	for _, h := range resp.ResponseHeadersToAdd {
		got[h.Key] = h.Value
	}
	if got["X-RateLimit-Limit"] != "3" || got["X-RateLimit-Remaining"] != "2" || got["X-RateLimit-Reset"] == "" {
		t.Errorf("legacy headers: %q", got)
	}
}

func TestHealthAndReflection(t *testing.T) {
	conn := startConn(t, rls.Options{})
	for _, svc := range []string{"", "envoy.service.ratelimit.v3.RateLimitService"} {
		h, err := healthpb.NewHealthClient(conn).Check(ctx(t), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v", svc, h, err)
		}
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if !strings.Contains(strings.Join(names, " "), "envoy.service.ratelimit.v3.RateLimitService") {
		t.Errorf("reflection lists %v", names)
	}
	stream.CloseSend()
}

func TestCurrentLimit(t *testing.T) {
	for _, tc := range []struct {
		l    floodgate.Limit
		unit rules.Unit
		rpu  uint32
		u    pb.RateLimitResponse_RateLimit_Unit
		mult uint32
	}{
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Minute}, rules.Minute, 10, pb.RateLimitResponse_RateLimit_MINUTE, 0},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Minute}, 0, 10, pb.RateLimitResponse_RateLimit_MINUTE, 0},
		{floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: 10, Window: 30 * time.Second}, 0, 10, pb.RateLimitResponse_RateLimit_SECOND, 30},
		{floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 7, Window: 90 * time.Minute}, 0, 7, pb.RateLimitResponse_RateLimit_MINUTE, 90},
		{floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 7, Window: 48 * time.Hour}, 0, 7, pb.RateLimitResponse_RateLimit_DAY, 2},
		{floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 15, Window: 1500 * time.Millisecond}, 0, 10, pb.RateLimitResponse_RateLimit_SECOND, 0},
		{floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 1, Window: 500 * time.Millisecond}, 0, 2, pb.RateLimitResponse_RateLimit_SECOND, 0},
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: floodgate.MaxQuota, Window: time.Hour}, 0, 1<<32 - 1, pb.RateLimitResponse_RateLimit_HOUR, 0},
	} {
		got := rls.CurrentLimit(tc.l, tc.unit)
		if got.RequestsPerUnit != tc.rpu || got.Unit != tc.u || got.GetUnitMultiplier().GetValue() != tc.mult {
			t.Errorf("%v (unit %v): %v, want %d × %v ×%d", tc.l, tc.unit, got, tc.rpu, tc.u, tc.mult)
		}
	}
}
