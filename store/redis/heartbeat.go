package redis

import (
	"context"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// heartbeat records KEYS[1]'s member ARGV[1] as alive for ARGV[2]
// microseconds from the server's clock (0: removes it), drops the members
// whose time is up, and returns how many are left. Members are scored by
// their expiry instant.
var heartbeat = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ttl > 0 then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  local ms = math.ceil(ttl / 1000)
  if redis.call('PTTL', KEYS[1]) < ms then
    redis.call('PEXPIRE', KEYS[1], ms)
  end
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZCARD', KEYS[1])
`)

// MembersKey returns the key of the sorted set [Store.Heartbeat] keeps.
func (s *Store) MembersKey() string { return s.prefix + "{membership}:live" }

// Heartbeat records that instance id is alive for ttl, by the Redis
// server's clock, and returns how many instances are alive (id included).
// A ttl of zero or less removes id. Instances are the members of one sorted
// set ([Store.MembersKey]) scored by their expiry; the set itself expires
// when no heartbeat renews it. It implements membership.Heartbeater.
func (s *Store) Heartbeat(ctx context.Context, id string, ttl time.Duration) (int, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("redis: heartbeat of %q: store closed", id)
	}
	n, err := heartbeat.Run(ctx, s.client, []string{s.MembersKey()}, id, max(ttl.Microseconds(), 0)).Int()
	if err != nil {
		return 0, fmt.Errorf("redis: heartbeat of %q: %w", id, err)
	}
	return n, nil
}
