package envoybaseline_test

import (
	"context"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	pb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/floodgate/floodgate/bench/envoybaseline"
	"github.com/floodgate/floodgate/internal/redistest"
)

func request(hits uint32, values ...string) *pb.RateLimitRequest {
	req := &pb.RateLimitRequest{Domain: "d", HitsAddend: hits}
	for _, v := range values {
		req.Descriptors = append(req.Descriptors, &rlv3.RateLimitDescriptor{Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: "user", Value: v}}})
	}
	return req
}

// The fixed window of envoyproxy/ratelimit: a key per descriptor and window
// start on the server's clock, INCRBY hits, EXPIRE the unit, over limit past
// the quota.
func TestServer(t *testing.T) {
	srv := redistest.StartServer(t)
	c := srv.Client()
	defer c.Close()
	now := time.Unix(1_700_000_010, 0) // 30s into a minute
	s, err := envoybaseline.New(c, envoybaseline.Options{Quota: 3, Unit: pb.RateLimitResponse_RateLimit_MINUTE, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	codes := func(resp *pb.RateLimitResponse) []pb.RateLimitResponse_Code {
		var cs []pb.RateLimitResponse_Code
		for _, st := range resp.Statuses {
			cs = append(cs, st.Code)
		}
		return cs
	}
	resp, err := s.ShouldRateLimit(ctx, request(2, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.OverallCode != pb.RateLimitResponse_OK || resp.Statuses[0].LimitRemaining != 1 ||
		resp.Statuses[0].DurationUntilReset.AsDuration() != 30*time.Second || resp.Statuses[0].CurrentLimit.RequestsPerUnit != 3 {
		t.Errorf("first request: %v", resp)
	}
	resp, err = s.ShouldRateLimit(ctx, request(0, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.OverallCode != pb.RateLimitResponse_OK {
		t.Errorf("second request (3 of 3): %v", codes(resp))
	}
	resp, err = s.ShouldRateLimit(ctx, request(1, "a", "c"))
	if err != nil {
		t.Fatal(err)
	}
	if got := codes(resp); resp.OverallCode != pb.RateLimitResponse_OVER_LIMIT || got[0] != pb.RateLimitResponse_OVER_LIMIT || got[1] != pb.RateLimitResponse_OK {
		t.Errorf("third request: %v %v, want OVER_LIMIT for a only", resp.OverallCode, got)
	}
	key := "d_user_a_1699999980"
	if n, err := c.Get(ctx, key).Int(); err != nil || n != 4 {
		t.Errorf("GET %s: %d, %v; want 4", key, n, err)
	}
	if ttl, err := c.TTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
		t.Errorf("TTL %s: %v, %v; want up to a minute", key, ttl, err)
	}
	if _, err := s.ShouldRateLimit(ctx, request(1)); err == nil {
		t.Error("no descriptors: no error")
	}
	if _, err := envoybaseline.New(c, envoybaseline.Options{Unit: pb.RateLimitResponse_RateLimit_WEEK}); err == nil {
		t.Error("unit week: no error")
	}
}

func TestNoop(t *testing.T) {
	resp, err := envoybaseline.Noop{}.ShouldRateLimit(context.Background(), request(1, "a", "b"))
	if err != nil || resp.OverallCode != pb.RateLimitResponse_OK || len(resp.Statuses) != 2 {
		t.Errorf("Noop: %v, %v", resp, err)
	}
}
