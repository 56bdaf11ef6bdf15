package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
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
