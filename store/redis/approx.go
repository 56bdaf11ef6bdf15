package redis

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
)

// syncScript adds ARGV[1] to the counter KEYS[1] and sets its expiry to the
// instant ARGV[2] (ms since the epoch, server clock), or only reads the
// counter when ARGV[1] is 0 (so that a read never creates a key without an
// expiry). It returns the counter's value.
const syncScript = `
local d = tonumber(ARGV[1])
if d > 0 then
  local v = redis.call('INCRBY', KEYS[1], d)
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  return v
end
return tonumber(redis.call('GET', KEYS[1]) or '0')
`

var syncSHA = func() string {
	h := sha1.Sum([]byte(syncScript))
	return hex.EncodeToString(h[:])
}()

var _ approx.Remote = (*Store)(nil)

// CounterKey returns the Redis key of an approximate counter:
// prefix{key}:a:alg:window ms:quota:window start ms. It shares the key's
// hash tag, so a key's counters live in the same cluster slot as its strict
// state, and the ":a:" keeps them apart from that state.
func (s *Store) CounterKey(c approx.Counter) string {
	escaped := escapeKey(c.Key)
	b := make([]byte, 0, len(s.prefix)+len(escaped)+60)
	b = append(b, s.prefix...)
	b = append(b, '{')
	b = append(b, escaped...)
	b = append(b, "}:a:"...)
	if int(c.Limit.Algorithm) < len(algNames) {
		b = append(b, algNames[c.Limit.Algorithm]...)
	}
	b = append(b, ':')
	b = strconv.AppendInt(b, c.Limit.Window.Milliseconds(), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, c.Limit.Quota, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, c.Start/1000, 10)
	return string(b)
}

// SyncCounters implements [approx.Remote]: one pipeline (one round trip per
// server involved) of one small script per counter, INCRBY and PEXPIREAT
// (or GET for a read), and a TIME whose reply is returned as now. A counter
// whose script is not cached yet (NOSCRIPT) is sent again with EVAL, which
// cannot have counted it twice: NOSCRIPT means nothing ran.
func (s *Store) SyncCounters(ctx context.Context, batch []approx.Counter) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("redis: sync of %d counters: %w", len(batch), floodgate.ErrClosed)
	}
	keys := make([]string, len(batch))
	for i := range batch {
		keys[i] = s.CounterKey(batch[i])
	}
	cmds := make([]*goredis.Cmd, len(batch))
	pipe := s.client.Pipeline()
	timeCmd := pipe.Time(ctx)
	for i := range batch {
		c := &batch[i]
		cmds[i] = pipe.EvalSha(ctx, syncSHA, keys[i:i+1], c.Delta, ceilMillis(c.ExpireAt))
	}
	_, _ = pipe.Exec(ctx)
	var retry []int
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		pipe := s.client.Pipeline()
		for _, i := range retry {
			c := &batch[i]
			cmds[i] = pipe.Eval(ctx, syncScript, keys[i:i+1], c.Delta, ceilMillis(c.ExpireAt))
		}
		_, _ = pipe.Exec(ctx)
	}
	t, err := timeCmd.Result()
	if err != nil {
		return 0, fmt.Errorf("redis: sync of %d counters: time: %w", len(batch), err)
	}
	for i, cmd := range cmds {
		v, err := cmd.Int64()
		if err != nil {
			return 0, fmt.Errorf("redis: sync of %d counters: counter %q: %w", len(batch), keys[i], err)
		}
		batch[i].Total = v
	}
	return t.UnixMicro(), nil
}

func ceilMillis(us int64) int64 { return (us + 999) / 1000 }
