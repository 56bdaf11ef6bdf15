package middleware_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/middleware"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

// discardWriter is a ResponseWriter that keeps only its header map, reset
// between requests, so that the benchmarks measure the middleware, not a
// recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

var noop = http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})

// benchServe runs b.N requests through h, cycling over keys distinct
// X-Key header values (1: one hot key).
func benchServe(b *testing.B, h http.Handler, keys int) {
	reqs := make([]*http.Request, keys)
	for i := range reqs {
		r, _ := http.NewRequest("GET", "http://example/api/x", nil)
		r.RemoteAddr = "192.0.2.1:1234"
		r.Header.Set("X-Key", "client-"+strconv.Itoa(i))
		reqs[i] = r
	}
	w := &discardWriter{h: make(http.Header, 8)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, reqs[i])
		if i++; i == keys {
			i = 0
		}
	}
}

// A limit that never denies during the benchmark, so that every request
// takes the admitted path with its headers.
var benchLimit = floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: floodgate.MaxQuota / 1024, Window: time.Second}

func BenchmarkBare(b *testing.B) { benchServe(b, noop, 1) }

func BenchmarkKeyed(b *testing.B) {
	for _, keys := range []int{1, 10000} {
		b.Run("keys="+strconv.Itoa(keys), func(b *testing.B) {
			mw, err := middleware.New(newLimiter(b), middleware.Header("X-Key"), middleware.Options{}, benchLimit)
			if err != nil {
				b.Fatal(err)
			}
			benchServe(b, mw(noop), keys)
		})
	}
}

func BenchmarkKeyedNoHeaders(b *testing.B) {
	mw, err := middleware.New(newLimiter(b), middleware.Header("X-Key"), middleware.Options{OmitHeaders: true}, benchLimit)
	if err != nil {
		b.Fatal(err)
	}
	benchServe(b, mw(noop), 1)
}

const benchRules = `
domain: bench
requests:
  descriptors:
    - entries:
        - {key: client, from: header, header: X-Key}
descriptors:
  - key: client
    rate_limit: {unit: second, requests_per_unit: 1000000000, algorithm: token_bucket}
`

func BenchmarkRules(b *testing.B) {
	set, err := rules.Parse("bench.yaml", []byte(benchRules))
	if err != nil {
		b.Fatal(err)
	}
	for _, keys := range []int{1, 10000} {
		b.Run("keys="+strconv.Itoa(keys), func(b *testing.B) {
			st := memory.New(memory.Options{})
			defer st.Close()
			mw, err := middleware.Rules(engine.New(st, engine.Static(set), nil), "bench", middleware.Options{})
			if err != nil {
				b.Fatal(err)
			}
			benchServe(b, mw(noop), keys)
		})
	}
	// The 429 path: web.remote_address admits 3 per minute from one peer.
	b.Run("denied", func(b *testing.B) { benchServe(b, newRules(b, middleware.Options{}), 1) })
}
