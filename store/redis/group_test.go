package redis

import (
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate"
)

// BenchmarkGroup measures the client side of packing a batch of 32
// single-limit ops on distinct keys into script calls (keys, arguments),
// without Redis: one call on a standalone server, about one per op on a
// cluster, where the keys fall in different slots. No connection is made.
//
//	go test ./store/redis -run '^$' -bench Group -benchmem
func BenchmarkGroup(b *testing.B) {
	l := []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1000, Window: time.Second}}
	ops := make([]floodgate.Op, 32)
	for i := range ops {
		ops[i] = floodgate.Op{Key: "user:" + strconv.Itoa(i), Limits: l, Cost: 1}
	}
	for _, c := range []struct {
		name   string
		client goredis.UniversalClient
	}{
		{"standalone", goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})},
		{"cluster", goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})},
	} {
		b.Run(c.name, func(b *testing.B) {
			defer c.client.Close()
			s := &Store{client: c.client, prefix: DefaultPrefix}
			b.ReportAllocs()
			for b.Loop() {
				for _, call := range s.group(ops) {
					_ = call.argv()
				}
			}
		})
	}
}
