package middleware_test

import (
	"net/http"
	"sync"
	"testing"

	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/middleware"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

// Two uploads in flight per client; and one request per minute per client
// on /once, so that a request can be admitted by the upload rule and denied
// by the other.
const inflightRules = `
domain: up
requests:
  descriptors:
    - entries:
        - {key: uploads, from: client_ip}
    - path: /once
      entries:
        - {key: once, from: client_ip}
descriptors:
  - key: uploads
    rate_limit: {requests_per_unit: 2, window: 10m, algorithm: concurrency}
  - key: once
    rate_limit: {requests_per_unit: 1, unit: minute}
`

// A concurrency rule limits requests in flight: a third concurrent request
// is denied while two are being served, and each lease comes back when its
// handler returns, or at once when another descriptor denies the request.
func TestRulesInFlight(t *testing.T) {
	set, err := rules.Parse("up.yaml", []byte(inflightRules))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	mw, err := middleware.Rules(engine.New(st, engine.Static(set), nil), "up", middleware.Options{})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	finish := make(chan struct{})
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-finish
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	const peer = "192.0.2.7:1234"
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for range 2 {
		wg.Go(func() { codes <- serveFrom(h, peer, "/slow").Code })
		<-entered
	}
	if got := serveFrom(h, peer, "/fast").Code; got != http.StatusTooManyRequests {
		t.Fatalf("a third request while two are in flight: %d, want 429", got)
	}
	if got := serveFrom(h, "192.0.2.8:1234", "/fast").Code; got != http.StatusNoContent {
		t.Fatalf("another client's request: %d, want 204", got)
	}
	close(finish)
	wg.Wait()
	for range 2 {
		if c := <-codes; c != http.StatusNoContent {
			t.Errorf("a slow request: %d", c)
		}
	}
	// Both leases are back: two requests pass one after the other, more
	// than the limit of two in flight would allow if they were not released.
	for i := range 5 {
		if got := serveFrom(h, peer, "/fast").Code; got != http.StatusNoContent {
			t.Fatalf("request %d after the slow ones ended: %d, want 204", i, got)
		}
	}
	// /once admits one request a minute: the second is denied by that rule
	// although the upload rule admitted it, and its lease is given back.
	if got := serveFrom(h, peer, "/once").Code; got != http.StatusNoContent {
		t.Fatalf("first /once: %d", got)
	}
	for i := range 3 {
		if got := serveFrom(h, peer, "/once").Code; got != http.StatusTooManyRequests {
			t.Fatalf("/once again (%d): %d, want 429", i, got)
		}
	}
	if got := serveFrom(h, peer, "/fast").Code; got != http.StatusNoContent {
		t.Errorf("after three requests denied by another rule: %d, want 204 (their leases released)", got)
	}
}
