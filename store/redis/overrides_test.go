package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/internal/redistest"
	"github.com/floodgate/floodgate/overrides"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// storePair returns two stores on one server (or cluster) with one prefix,
// as two instances sharing Redis.
func storePair(t *testing.T, topo string) (*redisstore.Store, *redisstore.Store) {
	t.Helper()
	opts := redisstore.Options{Prefix: fmt.Sprintf("p%d:", rand.Uint64())}
	if topo == "cluster" {
		opts.Addrs, opts.Cluster = redistest.SharedCluster(t).Addrs(), true
	} else {
		opts.Addrs = []string{redistest.Shared(t).Addr}
	}
	var out [2]*redisstore.Store
	for i := range out {
		s, err := redisstore.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out[i] = s
	}
	return out[0], out[1]
}

// Overrides written through one store are read through another on the same
// server, with the version moving on every write and delete.
func TestOverridesBackend(t *testing.T) {
	for _, topo := range []string{"standalone", "cluster"} {
		t.Run(topo, func(t *testing.T) {
			a, b := storePair(t, topo)
			ctx := context.Background()
			if v, err := b.OverridesVersion(ctx); err != nil || v != "" {
				t.Fatalf("version of no overrides: %q, %v", v, err)
			}
			ta := overrides.Open(ctx, a, overrides.Options{Interval: 20 * time.Millisecond})
			defer ta.Close()
			tb := overrides.Open(ctx, b, overrides.Options{Interval: 20 * time.Millisecond})
			defer tb.Close()
			lim := []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 50, Window: time.Second, Burst: 5}}
			key := "api|api_key={odd}\\key"
			if err := ta.Put(ctx, overrides.Override{Domain: "api", Key: key, Limits: lim, Reason: "test"}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				if l, ok := tb.Lookup("api", key); ok {
					if len(l) != 1 || l[0] != lim[0] {
						t.Fatalf("read back %v, want %v", l, lim)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the other store's table never saw the override")
				}
				time.Sleep(5 * time.Millisecond)
			}
			fields, v1, err := b.Overrides(ctx)
			if err != nil || len(fields) != 1 || v1 == "" {
				t.Fatalf("overrides %v, version %q, %v; want one, and a version", fields, v1, err)
			}
			if found, err := b.DeleteOverride(ctx, "api\x1fnone", ""); err != nil || found {
				t.Errorf("deleting a missing override: %v %v", found, err)
			}
			if found, err := b.DeleteOverride(ctx, "api\x1f"+key, "another value"); err != nil || found {
				t.Errorf("deleting an override whose value changed: %v %v, want not deleted", found, err)
			}
			if v, _ := a.OverridesVersion(ctx); v != v1 {
				t.Errorf("version moved from %q to %q without a write", v1, v)
			}
			if found, err := tb.Delete(ctx, "api", key); err != nil || !found {
				t.Fatalf("delete: %v %v", found, err)
			}
			if v, _ := a.OverridesVersion(ctx); v == v1 || v == "" {
				t.Errorf("version after a delete: %q, want a new one (was %q)", v, v1)
			}
		})
	}
}

// Reset deletes every Redis key of the key's state, the log's and the
// leases' second keys included, for a key with the characters that are
// escaped, and no other key.
func TestResetKeys(t *testing.T) {
	for _, topo := range []string{"standalone", "cluster"} {
		t.Run(topo, func(t *testing.T) {
			s := newStore(t, topo)
			ctx := context.Background()
			limits := []floodgate.Limit{
				{Algorithm: floodgate.SlidingWindowLog, Quota: 5, Window: time.Minute},
				{Algorithm: floodgate.Concurrency, Quota: 5, Window: time.Minute},
				{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Minute},
			}
			key, other := `tenant{a}\b`, `tenant{a}\c`
			for _, k := range []string{key, other} {
				ops := []floodgate.Op{{Key: k, Limits: limits, Cost: 1, Lease: "l1"}}
				if err := s.Decide(ctx, ops); err != nil {
					t.Fatal(err)
				}
			}
			var names []string
			for _, l := range limits {
				names = append(names, s.Key(key, l))
			}
			names = append(names, s.Key(key, limits[0])+":sum", s.Key(key, limits[1])+":units")
			c := s.Client()
			exists := func(names []string) int64 {
				t.Helper()
				var n int64
				for _, k := range names {
					x, err := c.Exists(ctx, k).Result()
					if err != nil {
						t.Fatal(err)
					}
					n += x
				}
				return n
			}
			if n := exists(names); n != int64(len(names)) {
				t.Fatalf("%d of the %d keys %s exist before the reset", n, len(names), strings.Join(names, " "))
			}
			if err := s.Reset(ctx, key, limits); err != nil {
				t.Fatal(err)
			}
			if n := exists(names); n != 0 {
				t.Errorf("%d keys left after the reset", n)
			}
			if n := exists([]string{s.Key(other, limits[2])}); n != 1 {
				t.Error("another key's state went with the reset")
			}
		})
	}
}

// The shared audit log numbers entries across stores on one server, keeps
// the newest, and answers newest first.
func TestSharedAudit(t *testing.T) {
	for _, topo := range []string{"standalone", "cluster"} {
		t.Run(topo, func(t *testing.T) {
			a, b := storePair(t, topo)
			ctx := context.Background()
			for i, s := range []*redisstore.Store{a, b, a, b} {
				seq, err := s.AppendAudit(ctx, fmt.Sprintf(`{"n":%d}`, i), 3)
				if err != nil || seq != int64(i+1) {
					t.Fatalf("append %d: seq %d, %v", i, seq, err)
				}
			}
			seqs, entries, err := a.Audit(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 3 || seqs[0] != 4 || entries[0] != `{"n":3}` || seqs[2] != 2 {
				t.Errorf("audit: %v %v, want the newest 3, newest first", seqs, entries)
			}
		})
	}
}
