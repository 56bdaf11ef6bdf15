package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/floodgate/floodgate/internal/proctest"
)

// rlsConfig uses yearly windows (365 days, aligned to the Unix epoch) so that
// no window ends during a test, except about once in ten million runs.
const rlsConfig = `
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: year, requests_per_unit: 3}
  - key: remote_address
    value: 192.0.2.66
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: api_key
    rate_limit: {name: api, requests_per_unit: 10, window: 8784h, algorithm: sliding_window_log}
`

// serveRLS starts floodgate serve with rlsConfig and a gRPC client to it.
func serveRLS(t *testing.T, args ...string) (*proctest.Process, *grpc.ClientConn) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(cfg, []byte(rlsConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	p := proctest.Start(t, proctest.Options{
		Args: append([]string{"serve", "--config", cfg}, args...),
		Wait: []string{"http", "grpc"},
	})
	conn, err := grpc.NewClient(p.Addr("grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return p, conn
}

func rlsReq(domain string, hits uint32, descs ...string) *pb.RateLimitRequest {
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

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRLSProcess(t *testing.T) {
	p, conn := serveRLS(t)
	c := pb.NewRateLimitServiceClient(conn)
	const year = 365 * 24 * time.Hour

	// OK, three times, then OVER_LIMIT: every field.
	for i := 1; i <= 4; i++ {
		resp, err := c.ShouldRateLimit(callCtx(t), rlsReq("edge", 0, "remote_address=10.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		want, remaining := pb.RateLimitResponse_OK, uint32(3-i)
		if i == 4 {
			want, remaining = pb.RateLimitResponse_OVER_LIMIT, 0
		}
		s := resp.GetStatuses()
		if resp.OverallCode != want || len(s) != 1 || s[0].Code != want || s[0].LimitRemaining != remaining ||
			s[0].CurrentLimit.GetRequestsPerUnit() != 3 || s[0].CurrentLimit.GetUnit() != pb.RateLimitResponse_RateLimit_YEAR ||
			s[0].CurrentLimit.GetUnitMultiplier() != nil || s[0].CurrentLimit.GetName() != "" ||
			s[0].DurationUntilReset.AsDuration() <= 0 || s[0].DurationUntilReset.AsDuration() > year ||
			len(resp.ResponseHeadersToAdd) != 0 || len(resp.RequestHeadersToAdd) != 0 || resp.RawBody != nil {
			t.Fatalf("request %d: %v", i, resp)
		}
	}

	// hits_addend at request level, overridden per descriptor; several
	// descriptors; a descriptor with no rule; an extended window (8784h) reported as
	// 366 × DAY; a deny.
	r := rlsReq("edge", 4, "api_key=a", "api_key=b", "nothing=x")
	r.Descriptors[1].HitsAddend = wrapperspb.UInt64(7)
	resp, err := c.ShouldRateLimit(callCtx(t), r)
	if err != nil {
		t.Fatal(err)
	}
	s := resp.GetStatuses()
	if resp.OverallCode != pb.RateLimitResponse_OK || len(s) != 3 || s[0].LimitRemaining != 6 || s[1].LimitRemaining != 3 ||
		s[0].CurrentLimit.GetName() != "api" || s[0].CurrentLimit.GetUnit() != pb.RateLimitResponse_RateLimit_DAY ||
		s[0].CurrentLimit.GetUnitMultiplier().GetValue() != 366 || s[0].CurrentLimit.GetRequestsPerUnit() != 10 ||
		s[2].Code != pb.RateLimitResponse_OK || s[2].CurrentLimit != nil || s[2].DurationUntilReset != nil {
		t.Errorf("hits and descriptors: %v", resp)
	}
	resp, err = c.ShouldRateLimit(callCtx(t), rlsReq("edge", 0, "api_key=a", "remote_address=192.0.2.66"))
	if err != nil || resp.OverallCode != pb.RateLimitResponse_OVER_LIMIT || resp.Statuses[0].Code != pb.RateLimitResponse_OK ||
		resp.Statuses[0].LimitRemaining != 5 || resp.Statuses[1].Code != pb.RateLimitResponse_OVER_LIMIT {
		t.Errorf("deny: %v %v", resp, err)
	}

	// Unknown domain: OK, as envoyproxy/ratelimit answers.
	resp, err = c.ShouldRateLimit(callCtx(t), rlsReq("nowhere", 0, "remote_address=10.0.0.1"))
	if err != nil || resp.OverallCode != pb.RateLimitResponse_OK || resp.Statuses[0].Code != pb.RateLimitResponse_OK {
		t.Errorf("unknown domain: %v %v", resp, err)
	}

	// Bad requests: errors, and the server still answers afterwards.
	many := make([]string, 100)
	for i := range many {
		many[i] = "api_key=k"
	}
	for _, tc := range []struct {
		name string
		r    *pb.RateLimitRequest
		code codes.Code
	}{
		{"empty descriptors", rlsReq("edge", 0), codes.InvalidArgument},
		{"empty domain", rlsReq("", 0, "api_key=a"), codes.InvalidArgument},
		{"100 descriptors", rlsReq("edge", 0, many...), codes.InvalidArgument},
		{"2 MB value", rlsReq("edge", 0, "api_key="+strings.Repeat("v", 2<<20)), codes.ResourceExhausted},
	} {
		if _, err := c.ShouldRateLimit(callCtx(t), tc.r); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	// A large value within the message limit is hashed into the store key.
	resp, err = c.ShouldRateLimit(callCtx(t), rlsReq("edge", 0, "api_key="+strings.Repeat("v", 512<<10)))
	if err != nil || resp.OverallCode != pb.RateLimitResponse_OK || resp.Statuses[0].LimitRemaining != 9 {
		t.Errorf("512 kB value: %v %v", resp, err)
	}

	// Health and reflection.
	for _, svc := range []string{"", "envoy.service.ratelimit.v3.RateLimitService"} {
		h, err := healthpb.NewHealthClient(conn).Check(callCtx(t), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v", svc, h, err)
		}
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "envoy.service.ratelimit.v3.RateLimitService"}}); err != nil {
		t.Fatal(err)
	}
	if rr, err := stream.Recv(); err != nil || len(rr.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection: %v %v", rr, err)
	}
	stream.CloseSend()

	// The HTTP side: POST /json and GET /readyz.
	post := func(body string) (int, *pb.RateLimitResponse) {
		t.Helper()
		resp, err := client.Post(p.URL("/json"), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out pb.RateLimitResponse
		if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusTooManyRequests {
			if err := protojson.Unmarshal(b, &out); err != nil {
				t.Fatalf("/json answer %s: %v", b, err)
			}
		}
		return resp.StatusCode, &out
	}
	code, out := post(`{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.2"}]}],"hits_addend":3}`)
	if code != http.StatusOK || out.OverallCode != pb.RateLimitResponse_OK || out.Statuses[0].LimitRemaining != 0 {
		t.Errorf("/json OK: %d %v", code, out)
	}
	code, out = post(`{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.2"}]}]}`)
	if code != http.StatusTooManyRequests || out.OverallCode != pb.RateLimitResponse_OVER_LIMIT {
		t.Errorf("/json over limit: %d %v", code, out)
	}
	for _, bad := range []string{`{"domain":`, `{"domain":"edge","descriptors":[]}`, `{"domain":"edge","nope":1}`} {
		if code, _ := post(bad); code != http.StatusBadRequest {
			t.Errorf("/json %s: %d, want 400", bad, code)
		}
	}
	ready, err := client.Get(p.URL("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	ready.Body.Close()
	if ready.StatusCode != http.StatusOK {
		t.Errorf("/readyz: %s, want 200", ready.Status)
	}

	// floodgate check, as a process, against the same server.
	out1, errOut, code1 := proctest.Run(t, nil, "check", "--addr", p.Addr("grpc"), "--domain", "edge", "--descriptor", "remote_address=10.0.0.3", "--hits", "2")
	if code1 != 0 || !strings.HasPrefix(out1, "OK\n") || !strings.Contains(out1, "remaining 1") {
		t.Errorf("check: exit %d\n%s%s", code1, out1, errOut)
	}
	out1, errOut, code1 = proctest.Run(t, nil, "check", "--addr", p.Addr("grpc"), "--domain", "edge", "--descriptor", "remote_address=10.0.0.3", "--hits", "2")
	if code1 != 1 || !strings.HasPrefix(out1, "OVER_LIMIT\n") {
		t.Errorf("check over limit: exit %d\n%s%s", code1, out1, errOut)
	}
	_, errOut, code1 = proctest.Run(t, nil, "check", "--addr", p.Addr("grpc"), "--domain", "", "--descriptor", "a=b")
	if code1 != 2 || errOut == "" {
		t.Errorf("check without a domain: exit %d %q", code1, errOut)
	}
}

// TestServeNoRules: without --config and without the sample file in the
// working directory, serve starts with no rules, admits every descriptor,
// and is ready (POST /v1/check needs no rules).
func TestServeNoRules(t *testing.T) {
	p := proctest.Start(t, proctest.Options{Args: []string{"serve"}, Wait: []string{"http", "grpc"}})
	if !strings.Contains(p.Stderr(), "no rules") {
		t.Errorf("no log line says there are no rules:\n%s", p.Stderr())
	}
	resp, err := client.Get(p.URL("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz with no rules: %s, want 200", resp.Status)
	}
	out, errOut, code := proctest.Run(t, nil, "check", "--addr", p.Addr("grpc"), "--domain", "edge", "--descriptor", "remote_address=1")
	if code != 0 || !strings.HasPrefix(out, "OK\n") {
		t.Errorf("check with no rules: exit %d\n%s%s", code, out, errOut)
	}
}
