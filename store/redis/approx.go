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

// syncScript syncs the counters KEYS[i]: it adds ARGV[2i-1] to each and
// sets its expiry to the instant ARGV[2i] (ms since the epoch, server
// clock), or only reads the counter when ARGV[2i-1] is 0 (so that a read
// never creates a key without an expiry). It returns each counter's value,
// or for a counter whose command failed (a key of another type) the error
// as a string; the other counters are synced all the same.
const syncScript = `
local out = {}
for i = 1, #KEYS do
  local k, d = KEYS[i], tonumber(ARGV[2 * i - 1])
  local v
  if d > 0 then
    v = redis.pcall('INCRBY', k, d)
    if type(v) == 'number' then redis.call('PEXPIREAT', k, ARGV[2 * i]) end
  else
    v = redis.pcall('GET', k)
    if v == false then v = 0 elseif type(v) == 'string' then v = tonumber(v) or ('not a counter: ' .. v) end
  end
  if type(v) == 'table' then v = v.err or 'error' end
  out[i] = v
end
return out
`

// maxCountersPerCall is the most counters one sync script call carries.
const maxCountersPerCall = 512

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
	return s.counterKey(escapeKey(c.Key), c)
}

func (s *Store) counterKey(escaped string, c approx.Counter) string {
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
// server involved) of script calls, each syncing up to maxCountersPerCall
// counters of one cluster slot (INCRBY and PEXPIREAT, or GET for a read),
// and a TIME whose reply is returned as now. A call whose script is not
// cached yet (NOSCRIPT) is sent again with EVAL, which cannot have counted
// twice: NOSCRIPT means nothing ran.
func (s *Store) SyncCounters(ctx context.Context, batch []approx.Counter) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("redis: sync of %d counters: %w", len(batch), floodgate.ErrClosed)
	}
	calls := s.groupCounters(batch)
	pipe := s.client.Pipeline()
	timeCmd := pipe.Time(ctx)
	for i := range calls {
		calls[i].cmd = pipe.EvalSha(ctx, syncSHA, calls[i].keys, calls[i].args...)
	}
	_, _ = pipe.Exec(ctx)
	var retry []int
	for i := range calls {
		if isNoScript(calls[i].cmd.Err()) {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		pipe := s.client.Pipeline()
		for _, i := range retry {
			calls[i].cmd = pipe.Eval(ctx, syncScript, calls[i].keys, calls[i].args...)
		}
		_, _ = pipe.Exec(ctx)
	}
	t, err := timeCmd.Result()
	if err != nil {
		return 0, fmt.Errorf("redis: sync of %d counters: time: %w", len(batch), err)
	}
	for _, c := range calls {
		vals, err := c.cmd.Slice()
		if err == nil && len(vals) != len(c.index) {
			err = fmt.Errorf("%d values for %d counters", len(vals), len(c.index))
		}
		if err != nil {
			return 0, fmt.Errorf("redis: sync of %d counters: %w", len(batch), err)
		}
		for j, v := range vals {
			n, ok := v.(int64)
			if !ok {
				return 0, fmt.Errorf("redis: sync of %d counters: counter %q: %v", len(batch), c.keys[j], v)
			}
			batch[c.index[j]].Total = n
		}
	}
	return t.UnixMicro(), nil
}

// counterCall is one sync script call: counters of one slot.
type counterCall struct {
	index []int // the counters' places in the batch
	keys  []string
	args  []any
	cmd   *goredis.Cmd
}

// groupCounters packs batch into script calls of counters that share a
// cluster slot (see [grouper]), at most maxCountersPerCall each.
func (s *Store) groupCounters(batch []approx.Counter) []counterCall {
	var calls []counterCall
	g := s.grouper()
	for i := range batch {
		c := &batch[i]
		escaped := escapeKey(c.Key)
		ci, ok := g.current(escaped)
		if !ok || len(calls[ci].index) >= maxCountersPerCall {
			ci = len(calls)
			calls = append(calls, counterCall{})
			g.start(escaped, ci)
		}
		cc := &calls[ci]
		cc.index = append(cc.index, i)
		cc.keys = append(cc.keys, s.counterKey(escaped, *c))
		cc.args = append(cc.args, c.Delta, ceilMillis(c.ExpireAt))
	}
	return calls
}

func ceilMillis(us int64) int64 { return (us + 999) / 1000 }
