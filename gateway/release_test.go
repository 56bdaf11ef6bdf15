package gateway_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/gateway"
	"github.com/floodgate/floodgate/middleware"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

// slowRelease takes 2ms to release a lease, as a store across a network
// does.
type slowRelease struct{ floodgate.Store }

func (s slowRelease) Decide(ctx context.Context, ops []floodgate.Op) error {
	for _, op := range ops {
		if op.Release {
			time.Sleep(2 * time.Millisecond)
			break
		}
	}
	return s.Store.Decide(ctx, ops)
}

// A client that sends one request at a time, each on a new connection,
// never finds its own previous request still holding the only slot: the
// gateway sends the end of a response only after the lease is released.
func TestSequentialRequestsReleaseFirst(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	defer up.Close()
	set, err := rules.Parse("one.yaml", []byte(`
domain: gw
requests:
  descriptors:
    - entries:
        - {key: inflight, from: client_ip}
descriptors:
  - key: inflight
    rate_limit: {requests_per_unit: 1, window: 1m, algorithm: concurrency}
`))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	defer st.Close()
	mw, err := middleware.Rules(engine.New(slowRelease{st}, engine.Static(set), nil), "gw", middleware.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(up.URL, gateway.Options{Middleware: mw})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: wait}
	denied := 0
	for range 30 {
		resp, err := c.Get(srv.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			denied++
		}
	}
	if denied != 0 {
		t.Errorf("%d of 30 sequential requests denied by a limit of 1 in flight", denied)
	}
}
