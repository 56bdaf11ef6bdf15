package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/floodgate/floodgate/bench"
	"github.com/floodgate/floodgate/internal/proctest"
	"github.com/floodgate/floodgate/internal/redistest"
)

// The yardstick servers as processes, asked over gRPC as floodgate bench
// asks them: the Envoy-style one admits its quota per key and window, the
// do-nothing one everything.
func TestBenchServer(t *testing.T) {
	srv := redistest.StartServer(t)
	for _, tt := range []struct {
		args  []string
		admit int
	}{
		{[]string{"--kind", "envoy", "--store", "redis://" + srv.Addr, "--quota", "5", "--unit", "hour"}, 5},
		{[]string{"--kind", "noop"}, 12},
	} {
		p := proctest.Start(t, proctest.Options{Args: append([]string{"bench-server"}, tt.args...), Wait: []string{"grpc"}})
		g, err := bench.NewGRPC(p.Addr("grpc"), "d", []string{"user={key}"}, 1)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		key := fmt.Sprint(rand.Uint64())
		admitted := 0
		for range 12 {
			ok, err := g.Decide(ctx, key, 1)
			if err != nil {
				t.Fatalf("%q: %v", tt.args, err)
			}
			if ok {
				admitted++
			}
		}
		cancel()
		g.Close()
		if admitted != tt.admit {
			t.Errorf("%q: admitted %d of 12, want %d", tt.args, admitted, tt.admit)
		}
		if code, err := p.Stop(); code != 0 || err != nil {
			t.Errorf("%q: stopped with %d, %v", tt.args, code, err)
		}
	}
}
