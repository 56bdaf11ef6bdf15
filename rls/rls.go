// Package rls serves Envoy's RateLimitService v3
// (envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit) over an
// [engine.Engine], so that Envoy's global rate-limit filter, Istio and Envoy
// Gateway can use floodgate in place of envoyproxy/ratelimit.
//
// # Requests
//
// The domain and at least one descriptor are required (InvalidArgument
// otherwise), at most [Options.MaxDescriptors] descriptors of at most
// [Options.MaxEntries] entries each. A descriptor's cost is its hits_addend
// when set (0 checks without counting), else the request's hits_addend, where
// 0 (the default) means 1, as in envoyproxy/ratelimit. A descriptor's limit
// override and is_negative_hits are not supported (InvalidArgument).
//
// # Responses
//
// One status per descriptor: code, current_limit, limit_remaining and
// duration_until_reset for descriptors the store decided; only the code for
// descriptors without a rule, unlimited or replaced (an unknown domain is
// OK, as envoyproxy/ratelimit answers). current_limit is the deciding
// limit: its requests_per_unit and unit when it was written with a unit;
// for a window written as a duration, the largest Envoy unit that divides
// it with unit_multiplier (30s: 30 × SECOND), or, for windows that are not
// whole seconds, the nearest unit ([rules.UnitFor]) with the quota scaled to
// it. A requests_per_unit 0 rule answers OVER_LIMIT with requests_per_unit
// 0. Numbers above 2^32-1 are clamped.
//
// With [Options.Headers], response_headers_to_add carries the IETF draft-10
// RateLimit-Policy and RateLimit fields, or the legacy X-RateLimit-Limit,
// X-RateLimit-Remaining and X-RateLimit-Reset.
//
// # Errors
//
// InvalidArgument for a bad request, ResourceExhausted for a message over
// [MaxRecvMsgSize] (from gRPC itself), Unavailable when the store cannot
// decide.
package rls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	pb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rules"
)

// Defaults of [Options].
const (
	// DefaultMaxDescriptors is the default of Options.MaxDescriptors.
	DefaultMaxDescriptors = 64
	// DefaultMaxEntries is the default of Options.MaxEntries.
	DefaultMaxEntries = 32
	// MaxRecvMsgSize is the largest request message [NewGRPCServer] accepts,
	// in bytes.
	MaxRecvMsgSize = 1 << 20
)

// HeaderMode says which headers a response asks Envoy to add.
type HeaderMode uint8

const (
	// NoHeaders adds none (the default).
	NoHeaders HeaderMode = iota
	// DraftHeaders adds RateLimit-Policy and RateLimit as the IETF draft
	// draft-ietf-httpapi-ratelimit-headers-10 defines them.
	DraftHeaders
	// LegacyHeaders adds X-RateLimit-Limit, X-RateLimit-Remaining and
	// X-RateLimit-Reset.
	LegacyHeaders
)

// ParseHeaderMode parses "none", "draft" or "legacy".
func ParseHeaderMode(s string) (HeaderMode, error) {
	switch s {
	case "", "none":
		return NoHeaders, nil
	case "draft":
		return DraftHeaders, nil
	case "legacy":
		return LegacyHeaders, nil
	}
	return 0, fmt.Errorf("rls: header mode %q: want none, draft or legacy", s)
}

// Options configures a [Server]. The zero value is usable.
type Options struct {
	// Headers selects the response_headers_to_add. Default NoHeaders.
	Headers HeaderMode
	// MaxDescriptors is the most descriptors one request may carry. Default
	// DefaultMaxDescriptors.
	MaxDescriptors int
	// MaxEntries is the most entries one descriptor may carry. Default
	// DefaultMaxEntries.
	MaxEntries int
	// Logger receives warnings for store errors. Default: none.
	Logger *slog.Logger
}

// Server implements Envoy's RateLimitService over an engine. Create it with
// [New]; the zero value is not usable. It is safe for concurrent use.
type Server struct {
	pb.UnimplementedRateLimitServiceServer
	eng  *engine.Engine
	opts Options
}

var _ pb.RateLimitServiceServer = (*Server)(nil)

// New returns a server deciding with eng.
func New(eng *engine.Engine, opts Options) *Server {
	if opts.MaxDescriptors <= 0 {
		opts.MaxDescriptors = DefaultMaxDescriptors
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{eng: eng, opts: opts}
}

// NewGRPCServer returns a gRPC server serving s, the standard health service
// (grpc.health.v1.Health, whose overall status and the RateLimitService's
// are SERVING) and server reflection, with [ServerOptions]. extra options
// are appended. The health server is returned so that a caller can report
// NOT_SERVING while shutting down.
func NewGRPCServer(s *Server, extra ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	g := grpc.NewServer(append(ServerOptions(), extra...)...)
	pb.RegisterRateLimitServiceServer(g, s)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(pb.RateLimitService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	return g, hs
}

// StreamWorkers is the number of goroutines [ServerOptions] keep to run
// requests. A request that finds them all busy (waiting on the store) runs
// in a goroutine of its own, as without workers.
const StreamWorkers = 256

// ServerOptions are the gRPC server options of [NewGRPCServer]: messages of
// at most [MaxRecvMsgSize], and [StreamWorkers] goroutines that run the
// requests one after another. A goroutine per request, grpc-go's default,
// grows a fresh stack for every request that goes through the engine and
// the store (copying it twice or three times), which cost about a seventh
// of the server's CPU under load.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxRecvMsgSize), grpc.NumStreamWorkers(StreamWorkers)}
}

// ShouldRateLimit decides one request. See the package documentation for
// the answer and the errors.
func (s *Server) ShouldRateLimit(ctx context.Context, req *pb.RateLimitRequest) (*pb.RateLimitResponse, error) {
	descs, hits, err := s.convert(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	sts, overall, err := s.eng.Decide(ctx, req.GetDomain(), descs, hits)
	if err != nil {
		if errors.Is(err, floodgate.ErrInvalid) {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		s.opts.Logger.Warn("store cannot decide", "domain", req.GetDomain(), "err", err)
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	resp := &pb.RateLimitResponse{
		OverallCode: code(overall),
		Statuses:    make([]*pb.RateLimitResponse_DescriptorStatus, len(sts)),
	}
	for i := range sts {
		resp.Statuses[i] = descriptorStatus(&sts[i])
	}
	if s.opts.Headers != NoHeaders {
		for _, h := range formatHeaders(s.opts.Headers, sts) {
			resp.ResponseHeadersToAdd = append(resp.ResponseHeadersToAdd, &corev3.HeaderValue{Key: h.Name, Value: h.Value})
		}
	}
	return resp, nil
}

// convert checks a request and returns its descriptors and hits.
func (s *Server) convert(req *pb.RateLimitRequest) ([][]rules.Entry, []int64, error) {
	if req.GetDomain() == "" {
		return nil, nil, errors.New("rls: rate limit domain must not be empty")
	}
	ds := req.GetDescriptors()
	switch {
	case len(ds) == 0:
		return nil, nil, errors.New("rls: rate limit descriptor list must not be empty")
	case len(ds) > s.opts.MaxDescriptors:
		return nil, nil, fmt.Errorf("rls: %d descriptors: at most %d per request", len(ds), s.opts.MaxDescriptors)
	}
	reqHits := int64(req.GetHitsAddend())
	if reqHits == 0 {
		reqHits = 1
	}
	descs := make([][]rules.Entry, len(ds))
	hits := make([]int64, len(ds))
	for i, d := range ds {
		es := d.GetEntries()
		switch {
		case len(es) == 0:
			return nil, nil, fmt.Errorf("rls: descriptor %d has no entries", i)
		case len(es) > s.opts.MaxEntries:
			return nil, nil, fmt.Errorf("rls: descriptor %d: %d entries: at most %d", i, len(es), s.opts.MaxEntries)
		case d.GetLimit() != nil:
			return nil, nil, fmt.Errorf("rls: descriptor %d: limit overrides are not supported", i)
		case d.GetIsNegativeHits():
			return nil, nil, fmt.Errorf("rls: descriptor %d: is_negative_hits is not supported", i)
		}
		entries := make([]rules.Entry, len(es))
		for j, e := range es {
			entries[j] = rules.Entry{Key: e.GetKey(), Value: e.GetValue()}
		}
		descs[i] = entries
		hits[i] = reqHits
		if h := d.GetHitsAddend(); h != nil {
			if h.GetValue() > floodgate.MaxCost {
				return nil, nil, fmt.Errorf("rls: descriptor %d: hits_addend %d: at most %d", i, h.GetValue(), int64(floodgate.MaxCost))
			}
			hits[i] = int64(h.GetValue())
		}
	}
	return descs, hits, nil
}

func code(c engine.Code) pb.RateLimitResponse_Code {
	switch c {
	case engine.OK:
		return pb.RateLimitResponse_OK
	case engine.OverLimit:
		return pb.RateLimitResponse_OVER_LIMIT
	}
	return pb.RateLimitResponse_UNKNOWN
}

// descriptorStatus converts one status.
func descriptorStatus(st *engine.Status) *pb.RateLimitResponse_DescriptorStatus {
	ds := &pb.RateLimitResponse_DescriptorStatus{Code: code(st.Code)}
	switch {
	case st.Decided:
		ds.CurrentLimit = CurrentLimit(st.Result.Limit, st.Unit)
		if st.Match.Rule != nil && st.Match.Rule.Name != "" {
			ds.CurrentLimit.Name = st.Match.Rule.Name
		}
		ds.LimitRemaining = clamp32(st.Result.Remaining)
		ds.DurationUntilReset = durationpb.New(st.Result.ResetAfter)
	case st.Match.Deny && !st.Match.Replaced:
		ds.CurrentLimit = &pb.RateLimitResponse_RateLimit{RequestsPerUnit: 0}
		if st.Match.Rule.Name != "" {
			ds.CurrentLimit.Name = st.Match.Rule.Name
		}
	}
	return ds
}

// envoyUnits maps the rules' units to Envoy's enum, largest first.
var envoyUnits = []struct {
	u rules.Unit
	e pb.RateLimitResponse_RateLimit_Unit
}{
	{rules.Year, pb.RateLimitResponse_RateLimit_YEAR},
	{rules.Month, pb.RateLimitResponse_RateLimit_MONTH},
	{rules.Week, pb.RateLimitResponse_RateLimit_WEEK},
	{rules.Day, pb.RateLimitResponse_RateLimit_DAY},
	{rules.Hour, pb.RateLimitResponse_RateLimit_HOUR},
	{rules.Minute, pb.RateLimitResponse_RateLimit_MINUTE},
	{rules.Second, pb.RateLimitResponse_RateLimit_SECOND},
}

func envoyUnit(u rules.Unit) pb.RateLimitResponse_RateLimit_Unit {
	for _, eu := range envoyUnits {
		if eu.u == u {
			return eu.e
		}
	}
	return pb.RateLimitResponse_RateLimit_UNKNOWN
}

// CurrentLimit expresses l in Envoy's terms. unit is the Envoy unit l was
// written with, or 0 when it was written with a window: then the largest
// unit dividing the window is used with a unit_multiplier (a 30s window is
// 30 × SECOND, 90m is 90 × MINUTE), and a window that is not whole seconds
// gets the nearest unit ([rules.UnitFor]) with the quota scaled to that unit
// and rounded (at least 1). For token_bucket and gcra, requests_per_unit is
// the refill rate (Quota per Window), not the burst.
func CurrentLimit(l floodgate.Limit, unit rules.Unit) *pb.RateLimitResponse_RateLimit {
	if unit != 0 && unit.Duration() == l.Window {
		return &pb.RateLimitResponse_RateLimit{RequestsPerUnit: clamp32(l.Quota), Unit: envoyUnit(unit)}
	}
	for _, eu := range envoyUnits {
		d := eu.u.Duration()
		if l.Window%d == 0 {
			rl := &pb.RateLimitResponse_RateLimit{RequestsPerUnit: clamp32(l.Quota), Unit: eu.e}
			if m := l.Window / d; m != 1 {
				rl.UnitMultiplier = wrapperspb.UInt32(clamp32(int64(m)))
			}
			return rl
		}
	}
	u, _ := rules.UnitFor(l.Window)
	q := math.Round(float64(l.Quota) * float64(u.Duration()) / float64(l.Window))
	return &pb.RateLimitResponse_RateLimit{RequestsPerUnit: clamp32(max(int64(q), 1)), Unit: envoyUnit(u)}
}

func clamp32(n int64) uint32 {
	switch {
	case n < 0:
		return 0
	case n > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(n)
}

// ceilSeconds returns d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d-1)/time.Second) + 1
}
