// Package envoybaseline holds two yardstick servers of Envoy's
// RateLimitService v3 API, for benchmarks only: [Server], which limits the
// way envoyproxy/ratelimit does (per descriptor, INCRBY and EXPIRE of a
// fixed-window key named from the client's clock, sent in one pipeline per
// request, no script), and [Noop], which answers OK without looking at the
// request: the floor of any rate-limit service on the same grpc-go.
//
// Neither is a rate limiter to deploy: Server has one limit for every
// descriptor and none of floodgate's rules, and its fixed window is counted
// against each instance's own clock.
package envoybaseline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	pb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Noop answers every request OK, one OK status per descriptor. The zero
// value is ready to use and safe for concurrent use.
type Noop struct {
	pb.UnimplementedRateLimitServiceServer
}

// ShouldRateLimit implements pb.RateLimitServiceServer.
func (Noop) ShouldRateLimit(_ context.Context, req *pb.RateLimitRequest) (*pb.RateLimitResponse, error) {
	resp := &pb.RateLimitResponse{OverallCode: pb.RateLimitResponse_OK, Statuses: make([]*pb.RateLimitResponse_DescriptorStatus, len(req.Descriptors))}
	for i := range resp.Statuses {
		resp.Statuses[i] = &pb.RateLimitResponse_DescriptorStatus{Code: pb.RateLimitResponse_OK}
	}
	return resp, nil
}

// Options configure a [Server].
type Options struct {
	// Quota is the requests allowed per Unit for every descriptor. Default
	// 1,000,000,000 (everything admitted).
	Quota uint32
	// Unit is the window: one second, minute, hour or day, as in
	// envoyproxy/ratelimit. Default pb.RateLimitResponse_RateLimit_SECOND.
	Unit pb.RateLimitResponse_RateLimit_Unit
	// Now is the clock the window keys are named from. Default time.Now:
	// the client's clock, as envoyproxy/ratelimit does.
	Now func() time.Time
}

// Server limits every descriptor to Options.Quota per Options.Unit with a
// per-request pipeline of INCRBY and EXPIRE per descriptor, as
// envoyproxy/ratelimit's Redis cache does. It is safe for concurrent use.
// Create it with [New].
type Server struct {
	pb.UnimplementedRateLimitServiceServer
	client  goredis.UniversalClient
	quota   uint32
	unit    pb.RateLimitResponse_RateLimit_Unit
	seconds int64
	now     func() time.Time
}

// New returns a Server counting in client, which the caller closes.
func New(client goredis.UniversalClient, opts Options) (*Server, error) {
	if opts.Quota == 0 {
		opts.Quota = 1_000_000_000
	}
	if opts.Unit == pb.RateLimitResponse_RateLimit_UNKNOWN {
		opts.Unit = pb.RateLimitResponse_RateLimit_SECOND
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var seconds int64
	switch opts.Unit {
	case pb.RateLimitResponse_RateLimit_SECOND:
		seconds = 1
	case pb.RateLimitResponse_RateLimit_MINUTE:
		seconds = 60
	case pb.RateLimitResponse_RateLimit_HOUR:
		seconds = 3600
	case pb.RateLimitResponse_RateLimit_DAY:
		seconds = 86400
	default:
		return nil, fmt.Errorf("envoybaseline: unit %v: want second, minute, hour or day", opts.Unit)
	}
	return &Server{client: client, quota: opts.Quota, unit: opts.Unit, seconds: seconds, now: opts.Now}, nil
}

// Register registers s on g.
func (s *Server) Register(g *grpc.Server) { pb.RegisterRateLimitServiceServer(g, s) }

// ShouldRateLimit implements pb.RateLimitServiceServer: one pipeline of
// INCRBY key hits and EXPIRE key unit per descriptor, then OVER_LIMIT for
// the descriptors whose count passed the quota. Hits are the request's
// hits_addend (1 when 0), as in envoyproxy/ratelimit.
func (s *Server) ShouldRateLimit(ctx context.Context, req *pb.RateLimitRequest) (*pb.RateLimitResponse, error) {
	if len(req.Descriptors) == 0 {
		return nil, errors.New("envoybaseline: no descriptors in the request")
	}
	hits := int64(req.HitsAddend)
	if hits == 0 {
		hits = 1
	}
	now := s.now().Unix()
	start := now / s.seconds * s.seconds
	suffix := "_" + strconv.FormatInt(start, 10)
	pipe := s.client.Pipeline()
	incr := make([]*goredis.IntCmd, len(req.Descriptors))
	var b strings.Builder
	for i, d := range req.Descriptors {
		b.Reset()
		b.WriteString(req.Domain)
		for _, e := range d.Entries {
			b.WriteByte('_')
			b.WriteString(e.Key)
			b.WriteByte('_')
			b.WriteString(e.Value)
		}
		b.WriteString(suffix)
		key := b.String()
		incr[i] = pipe.IncrBy(ctx, key, hits)
		pipe.Expire(ctx, key, time.Duration(s.seconds)*time.Second)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("envoybaseline: redis pipeline: %w", err)
	}
	resp := &pb.RateLimitResponse{OverallCode: pb.RateLimitResponse_OK, Statuses: make([]*pb.RateLimitResponse_DescriptorStatus, len(req.Descriptors))}
	reset := time.Duration(start+s.seconds-now) * time.Second
	for i := range req.Descriptors {
		n := incr[i].Val()
		st := &pb.RateLimitResponse_DescriptorStatus{
			Code:               pb.RateLimitResponse_OK,
			CurrentLimit:       &pb.RateLimitResponse_RateLimit{RequestsPerUnit: s.quota, Unit: s.unit},
			DurationUntilReset: durationpb.New(reset),
		}
		if n > int64(s.quota) {
			st.Code = pb.RateLimitResponse_OVER_LIMIT
			resp.OverallCode = pb.RateLimitResponse_OVER_LIMIT
		} else {
			st.LimitRemaining = s.quota - uint32(n)
		}
		resp.Statuses[i] = st
	}
	return resp, nil
}
