package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/floodgate/floodgate"
)

// Target is what a run sends decisions to. Decide must be safe for
// concurrent use.
type Target interface {
	// Decide asks for one decision of cost for key and reports whether it
	// was allowed. An error means no decision was made.
	Decide(ctx context.Context, key string, cost int64) (allowed bool, err error)
	// Close releases the target's resources.
	Close() error
}

// CountingStore counts the calls made to a [floodgate.Store]: placed right
// above the store that talks to the network, its count is the number of
// round trips. It is safe for concurrent use when its Store is.
type CountingStore struct {
	floodgate.Store
	calls atomic.Int64
}

// Decide implements [floodgate.Store] and counts the call.
func (c *CountingStore) Decide(ctx context.Context, ops []floodgate.Op) error {
	c.calls.Add(1)
	return c.Store.Decide(ctx, ops)
}

// Calls returns the number of Decide calls so far.
func (c *CountingStore) Calls() int64 { return c.calls.Load() }

// Library decides in process with a [floodgate.Store] under one limit.
type Library struct {
	store floodgate.Store
	limit []floodgate.Limit
}

// NewLibrary returns a target deciding with store under limit. Close closes
// the store.
func NewLibrary(store floodgate.Store, limit floodgate.Limit) *Library {
	return &Library{store: store, limit: []floodgate.Limit{limit}}
}

// Decide implements [Target].
func (l *Library) Decide(ctx context.Context, key string, cost int64) (bool, error) {
	ops := [1]floodgate.Op{{Key: key, Limits: l.limit, Cost: cost}}
	if err := l.store.Decide(ctx, ops[:]); err != nil {
		return false, err
	}
	return ops[0].Result.Allowed, nil
}

// Close implements [Target].
func (l *Library) Close() error { return l.store.Close() }

// HTTP asks floodgate's HTTP API, POST /v1/check, with an inline limit.
type HTTP struct {
	url    string
	client *http.Client
	limit  json.RawMessage
}

// NewHTTP returns a target posting to base + "/v1/check" (base such as
// "http://127.0.0.1:8080") with limit, keeping up to conns connections
// open.
func NewHTTP(base string, limit floodgate.Limit, conns int) (*HTTP, error) {
	spec := map[string]any{"algorithm": limit.Algorithm.String(), "quota": limit.Quota, "window": limit.Window.String()}
	if limit.Burst != 0 {
		spec["burst"] = limit.Burst
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("bench: http limit: %w", err)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
	}
	return &HTTP{
		url:    strings.TrimSuffix(base, "/") + "/v1/check",
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		limit:  raw,
	}, nil
}

// Decide implements [Target]: 200 is allowed, 429 denied, anything else an
// error.
func (h *HTTP) Decide(ctx context.Context, key string, cost int64) (bool, error) {
	body, err := json.Marshal(struct {
		Key   string          `json:"key"`
		Cost  int64           `json:"cost"`
		Limit json.RawMessage `json:"limit"`
	}{key, cost, h.limit})
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return false, err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusTooManyRequests:
		return false, nil
	}
	return false, fmt.Errorf("bench: POST %s: %s: %s", h.url, resp.Status, bytes.TrimSpace(b))
}

// Close implements [Target].
func (h *HTTP) Close() error {
	h.client.CloseIdleConnections()
	return nil
}

// GRPC asks an Envoy RateLimitService v3 server (ShouldRateLimit) with one
// descriptor per request.
type GRPC struct {
	conns   []*grpc.ClientConn
	clients []rlsv3.RateLimitServiceClient
	next    atomic.Uint64
	domain  string
	entries [][2]string
}

// NewGRPC returns a target asking the server at addr (host:port, plain
// text) in domain, with a descriptor made of entries ("key=value" pairs);
// "{key}" in a value is replaced by each request's key. It opens conns
// connections and spreads requests over them.
func NewGRPC(addr, domain string, entries []string, conns int) (*GRPC, error) {
	g := &GRPC{domain: domain}
	for _, e := range entries {
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("bench: descriptor entry %q: want key=value", e)
		}
		g.entries = append(g.entries, [2]string{k, v})
	}
	if len(g.entries) == 0 {
		return nil, fmt.Errorf("bench: no descriptor entries")
	}
	for range max(conns, 1) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("bench: grpc %s: %w", addr, err)
		}
		g.conns = append(g.conns, cc)
		g.clients = append(g.clients, rlsv3.NewRateLimitServiceClient(cc))
	}
	return g, nil
}

// Decide implements [Target]: OK is allowed, OVER_LIMIT denied.
func (g *GRPC) Decide(ctx context.Context, key string, cost int64) (bool, error) {
	d := &commonrl.RateLimitDescriptor{Entries: make([]*commonrl.RateLimitDescriptor_Entry, len(g.entries))}
	for i, e := range g.entries {
		d.Entries[i] = &commonrl.RateLimitDescriptor_Entry{Key: e[0], Value: strings.ReplaceAll(e[1], "{key}", key)}
	}
	c := g.clients[g.next.Add(1)%uint64(len(g.clients))]
	resp, err := c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: g.domain, Descriptors: []*commonrl.RateLimitDescriptor{d}, HitsAddend: uint32(cost)})
	if err != nil {
		return false, err
	}
	switch resp.OverallCode {
	case rlsv3.RateLimitResponse_OK:
		return true, nil
	case rlsv3.RateLimitResponse_OVER_LIMIT:
		return false, nil
	}
	return false, fmt.Errorf("bench: grpc answer %v", resp.OverallCode)
}

// Close implements [Target].
func (g *GRPC) Close() error {
	for _, cc := range g.conns {
		cc.Close()
	}
	return nil
}

// RedisRate is the yardstick: go-redis/redis_rate (GCRA, one EVALSHA per
// decision) on the same Redis, with rate Quota per Window and burst Burst
// (Quota when zero).
type RedisRate struct {
	client *goredis.Client
	lim    *redis_rate.Limiter
	limit  redis_rate.Limit
}

// NewRedisRate returns the yardstick target on the Redis at addr
// (host:port), with a pool of conns connections.
func NewRedisRate(addr string, limit floodgate.Limit, conns int) *RedisRate {
	c := goredis.NewClient(&goredis.Options{Addr: addr, PoolSize: conns, MaxRetries: -1})
	return &RedisRate{
		client: c,
		lim:    redis_rate.NewLimiter(c),
		limit:  redis_rate.Limit{Rate: int(limit.Quota), Burst: int(limit.Capacity()), Period: limit.Window},
	}
}

// Decide implements [Target].
func (r *RedisRate) Decide(ctx context.Context, key string, cost int64) (bool, error) {
	res, err := r.lim.AllowN(ctx, key, r.limit, int(cost))
	if err != nil {
		return false, err
	}
	return res.Allowed > 0, nil
}

// Close implements [Target].
func (r *RedisRate) Close() error { return r.client.Close() }
