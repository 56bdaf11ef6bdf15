package approx_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
)

// BenchmarkDecide measures the local decision path, with the background
// sync running against the shared Redis every 100ms: one hot key, and
// 10,000 keys, from parallel goroutines.
func BenchmarkDecide(b *testing.B) {
	l := []floodgate.Limit{{Algorithm: floodgate.SlidingWindow, Quota: 1 << 30, Window: time.Minute}}
	for _, keys := range []int{1, 10000} {
		b.Run("keys="+strconv.Itoa(keys), func(b *testing.B) {
			s, err := approx.New(newRemote(b), approx.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			names := make([]string, keys)
			for i := range names {
				names[i] = "key:" + strconv.Itoa(i)
			}
			var seq atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(seq.Add(1)) * 7919
				ops := []floodgate.Op{{Limits: l, Cost: 1}}
				for pb.Next() {
					ops[0].Key = names[i%keys]
					ops[0].Result = floodgate.Result{}
					if err := s.Decide(context.Background(), ops); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.StopTimer()
			st := s.Stats()
			b.ReportMetric(float64(st.Syncs), "syncs")
		})
	}
}
