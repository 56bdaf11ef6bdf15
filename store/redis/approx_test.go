package redis_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
	"github.com/floodgate/floodgate/internal/redistest"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// TestSyncCounters checks the remote operation of approximate counting on a
// standalone server and a cluster: deltas add up, a read (delta 0) creates
// nothing, counters expire at the given instant, and the server's clock
// comes back.
func TestSyncCounters(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo, func(t *testing.T) {
			s := newStore(t, topo)
			ctx := context.Background()
			l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 100, Window: 10 * time.Second}
			start := time.Now().UnixMicro() / 10_000_000 * 10_000_000
			expire := start + 30_000_000
			batch := []approx.Counter{
				{Key: "a", Limit: l, Start: start, Delta: 3, ExpireAt: expire},
				{Key: "b{x}", Limit: l, Start: start, Delta: 5, ExpireAt: expire},
				{Key: "c", Limit: l, Start: start},
			}
			before := time.Now().UnixMicro()
			now, err := s.SyncCounters(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			if d := now - before; d < -time.Second.Microseconds() || d > time.Second.Microseconds() {
				t.Errorf("server time %d is %dµs from the local clock", now, d)
			}
			want := []int64{3, 5, 0}
			for i := range batch {
				if batch[i].Total != want[i] {
					t.Errorf("%s: total %d, want %d", batch[i].Key, batch[i].Total, want[i])
				}
			}
			batch[0].Delta, batch[1].Delta = 4, 0
			if _, err := s.SyncCounters(ctx, batch); err != nil {
				t.Fatal(err)
			}
			want = []int64{7, 5, 0}
			for i := range batch {
				if batch[i].Total != want[i] {
					t.Errorf("second sync: %s: total %d, want %d", batch[i].Key, batch[i].Total, want[i])
				}
			}
			cl := s.Client()
			if n := cl.Exists(ctx, s.CounterKey(batch[2])).Val(); n != 0 {
				t.Errorf("a read created %s", s.CounterKey(batch[2]))
			}
			at := cl.PExpireTime(ctx, s.CounterKey(batch[0])).Val()
			if at != time.Duration(expire/1000)*time.Millisecond {
				t.Errorf("expiry %v, want %dms", at, expire/1000)
			}
			if k, strict := s.CounterKey(batch[0]), s.Key("a", l); k == strict {
				t.Errorf("counter key %q is the strict state's key", k)
			}
			if _, err := s.SyncCounters(ctx, nil); err != nil {
				t.Errorf("empty sync: %v", err)
			}
		})
	}
}

// TestSyncCountersBatches syncs 1,200 counters on distinct keys: on a
// standalone server that is three script calls (512 counters at most per
// call), on a cluster about one per slot; every total is right, and again
// after the script cache is flushed (NOSCRIPT, then EVAL). A counter whose
// key holds another type fails the sync.
func TestSyncCountersBatches(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo, func(t *testing.T) {
			s := newStore(t, topo)
			ctx := context.Background()
			l := floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: 100, Window: 10 * time.Second}
			start := time.Now().UnixMicro() / 10_000_000 * 10_000_000
			batch := make([]approx.Counter, 1200)
			for i := range batch {
				batch[i] = approx.Counter{Key: "k" + strconv.Itoa(i), Limit: l, Start: start, Delta: int64(i%3 + 1), ExpireAt: start + 30_000_000}
			}
			var evals func() int
			if topo == "standalone" {
				c := goredis.NewClient(&goredis.Options{Addr: redistest.Shared(t).Addr})
				defer c.Close()
				evals = func() int { return commandCalls(t, c, "evalsha") + commandCalls(t, c, "eval") }
			}
			for round := 1; round <= 2; round++ {
				if round == 2 {
					flushScripts(t, s)
				}
				var before int
				if evals != nil {
					before = evals()
				}
				if _, err := s.SyncCounters(ctx, batch); err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if evals != nil {
					// Round 2: three EVALSHA answered NOSCRIPT, then three EVAL.
					if got, want := evals()-before, 3*round; got != want {
						t.Errorf("round %d: %d script calls, want %d", round, got, want)
					}
				}
				for i := range batch {
					if want := int64(round * (i%3 + 1)); batch[i].Total != want {
						t.Fatalf("round %d: counter %d: total %d, want %d", round, i, batch[i].Total, want)
					}
				}
			}
			bad := approx.Counter{Key: "bad", Limit: l, Start: start, Delta: 1, ExpireAt: start + 30_000_000}
			if err := s.Client().LPush(ctx, s.CounterKey(bad), "x").Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.SyncCounters(ctx, append(batch[:3:3], bad)); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
				t.Errorf("sync with a key of another type: %v, want a WRONGTYPE error", err)
			}
		})
	}
}

// flushScripts empties the script cache of every server of s.
func flushScripts(t *testing.T, s *redisstore.Store) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch c := s.Client().(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, m *goredis.Client) error { return m.ScriptFlush(ctx).Err() })
	default:
		err = c.ScriptFlush(ctx).Err()
	}
	if err != nil {
		t.Fatal(err)
	}
}
