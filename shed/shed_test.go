package shed_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate/shed"
)

func newShedder(t *testing.T, opts shed.Options) *shed.Shedder {
	t.Helper()
	s, err := shed.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// With capacity 10 and the defaults, sheddable requests get 5 slots,
// normal ones 9, critical ones all 10; each class is shed only at its own
// threshold, and a release makes room again.
func TestThresholds(t *testing.T) {
	s := newShedder(t, shed.Options{Capacity: 10})
	take := func(p shed.Priority, n int) int {
		got := 0
		for range n {
			if s.Acquire(p) {
				got++
			}
		}
		return got
	}
	if got := take(shed.Sheddable, 8); got != 5 {
		t.Fatalf("sheddable on an idle shedder: %d of 8 admitted, want 5", got)
	}
	if got := take(shed.Normal, 8); got != 4 {
		t.Fatalf("normal at 5 in flight: %d of 8 admitted, want 4 (up to 9)", got)
	}
	if got := take(shed.Sheddable, 1) + take(shed.Normal, 1); got != 0 {
		t.Fatalf("sheddable or normal at 9 in flight: %d admitted", got)
	}
	if got := take(shed.Critical, 3); got != 1 {
		t.Fatalf("critical at 9 in flight: %d of 3 admitted, want the reserved 1", got)
	}
	st := s.Stats()
	if st.InFlight != 10 || st.Capacity != 10 ||
		st.Admitted[shed.Sheddable] != 5 || st.Admitted[shed.Normal] != 4 || st.Admitted[shed.Critical] != 1 ||
		st.Shed[shed.Sheddable] != 4 || st.Shed[shed.Normal] != 5 || st.Shed[shed.Critical] != 2 {
		t.Errorf("stats %+v", st)
	}
	for range 6 {
		s.Release()
	}
	if got := take(shed.Sheddable, 3); got != 1 {
		t.Errorf("sheddable at 4 in flight: %d of 3 admitted, want 1", got)
	}
	if got := take(shed.Priority(9), 10); got != 4 {
		t.Errorf("an unknown priority at 5 in flight: %d admitted, want 4, as normal", got)
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []shed.Options{
		{Capacity: 0},
		{Capacity: 10, NormalAt: 1.5},
		{Capacity: 10, NormalAt: -0.1},
		{Capacity: 10, SheddableAt: 0.95},
		{Capacity: 10, SheddableAt: 0.6, NormalAt: 0.5},
		{Capacity: 10, RetryAfter: -time.Second},
	} {
		if _, err := shed.New(o); err == nil {
			t.Errorf("New(%+v): no error", o)
		}
	}
	// A small capacity still admits every class once.
	s := newShedder(t, shed.Options{Capacity: 1})
	for _, p := range shed.Priorities() {
		if s.Limit(p) != 1 {
			t.Errorf("capacity 1: %v limit %d, want 1", p, s.Limit(p))
		}
	}
	// Small capacities: each share rounded down, at least one slot, and one
	// slot kept above a share below 1.
	for _, c := range []struct{ capacity, sheddable, normal int64 }{
		{2, 1, 1}, {3, 1, 2}, {5, 2, 4}, {7, 3, 6}, {10, 5, 9}, {11, 5, 9}, {20, 10, 18},
	} {
		s := newShedder(t, shed.Options{Capacity: int(c.capacity)})
		if s.Limit(shed.Sheddable) != c.sheddable || s.Limit(shed.Normal) != c.normal || s.Limit(shed.Critical) != c.capacity {
			t.Errorf("capacity %d: limits %d %d %d, want %d %d %d", c.capacity,
				s.Limit(shed.Sheddable), s.Limit(shed.Normal), s.Limit(shed.Critical), c.sheddable, c.normal, c.capacity)
		}
	}
	if s := newShedder(t, shed.Options{Capacity: 4, SheddableAt: 1, NormalAt: 1}); s.Limit(shed.Sheddable) != 4 || s.Limit(shed.Normal) != 4 {
		t.Errorf("shares of 1: limits %d %d, want the whole capacity", s.Limit(shed.Sheddable), s.Limit(shed.Normal))
	}
	s = newShedder(t, shed.Options{Capacity: 100, SheddableAt: 0.25, NormalAt: 0.75})
	if s.Limit(shed.Sheddable) != 25 || s.Limit(shed.Normal) != 75 || s.Limit(shed.Critical) != 100 {
		t.Errorf("limits %d %d %d, want 25 75 100", s.Limit(shed.Sheddable), s.Limit(shed.Normal), s.Limit(shed.Critical))
	}
	for _, c := range []struct {
		in   string
		want shed.Priority
		ok   bool
	}{{"critical", shed.Critical, true}, {" Sheddable ", shed.Sheddable, true}, {"NORMAL", shed.Normal, true}, {"urgent", shed.Normal, false}} {
		p, err := shed.ParsePriority(c.in)
		if p != c.want || (err == nil) != c.ok {
			t.Errorf("ParsePriority(%q) = %v, %v", c.in, p, err)
		}
	}
}

// Many goroutines of every class: the load never goes over capacity and
// every slot comes back.
func TestConcurrent(t *testing.T) {
	s := newShedder(t, shed.Options{Capacity: 8})
	var peak atomic.Int64
	var now atomic.Int64
	var wg sync.WaitGroup
	for g := range 12 {
		p := shed.Priorities()[g%3]
		wg.Go(func() {
			for range 2000 {
				if !s.Acquire(p) {
					continue
				}
				n := now.Add(1)
				if n > s.Limit(shed.Critical) {
					t.Errorf("%d in flight, capacity %d", n, s.Limit(shed.Critical))
				}
				for {
					m := peak.Load()
					if n <= m || peak.CompareAndSwap(m, n) {
						break
					}
				}
				runtime.Gosched() // hold the slot a moment
				now.Add(-1)
				s.Release()
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if st.InFlight != 0 {
		t.Errorf("%d in flight after every release", st.InFlight)
	}
	var total int64
	for _, p := range shed.Priorities() {
		total += st.Admitted[p] + st.Shed[p]
	}
	if total != 12*2000 {
		t.Errorf("%d requests counted, want %d", total, 12*2000)
	}
	t.Logf("peak %d in flight of 8; stats %+v", peak.Load(), st)
	if st.Shed[shed.Sheddable] == 0 && peak.Load() < s.Limit(shed.Sheddable) {
		t.Logf("the load never reached the sheddable threshold: the run proves little")
	}
}

// The middleware serves what it admits, answers the rest 503 with
// Retry-After and a problem body, and frees the slot when the handler
// returns.
func TestMiddleware(t *testing.T) {
	s := newShedder(t, shed.Options{Capacity: 2, SheddableAt: 0.5, NormalAt: 0.5, RetryAfter: 1500 * time.Millisecond})
	mw, err := s.Middleware(shed.Header("X-Priority", shed.Normal))
	if err != nil {
		t.Fatal(err)
	}
	entered, finish := make(chan struct{}), make(chan struct{})
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-finish
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	get := func(path, priority string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", path, nil)
		if priority != "" {
			r.Header.Set("X-Priority", priority)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	done := make(chan int)
	go func() { done <- get("/slow", "").Code }()
	<-entered
	// One normal request in flight of a normal limit of 1.
	w := get("/fast", "normal")
	var problem struct {
		Status int
		Detail string
	}
	if err := json.Unmarshal(w.Body.Bytes(), &problem); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "2" ||
		w.Header().Get("Content-Type") != "application/problem+json" || problem.Status != 503 || problem.Detail == "" {
		t.Errorf("a normal request at the normal limit: %d, Retry-After %q, %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if got := get("/fast", "sheddable").Code; got != http.StatusServiceUnavailable {
		t.Errorf("a sheddable request: %d, want 503", got)
	}
	if got := get("/fast", "critical").Code; got != http.StatusNoContent {
		t.Errorf("a critical request with the reserve free: %d, want 204", got)
	}
	close(finish)
	if c := <-done; c != http.StatusNoContent {
		t.Errorf("the slow request: %d", c)
	}
	if got := get("/fast", "bogus").Code; got != http.StatusNoContent {
		t.Errorf("an unknown priority on an idle shedder: %d, want 204 as normal", got)
	}
	if st := s.Stats(); st.InFlight != 0 {
		t.Errorf("%d in flight after every request ended", st.InFlight)
	}
	if _, err := s.Middleware(nil); err == nil {
		t.Error("Middleware(nil): no error")
	}
}

// A handler that panics still frees its slot (net/http recovers the panic).
// A Release without an Acquire panics and leaves the count alone.
func TestReleaseWithoutAcquire(t *testing.T) {
	s := newShedder(t, shed.Options{Capacity: 1})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("no panic")
			}
		}()
		s.Release()
	}()
	if st := s.Stats(); st.InFlight != 0 {
		t.Errorf("in flight %d after a refused release", st.InFlight)
	}
	if !s.Acquire(shed.Critical) || s.Acquire(shed.Critical) {
		t.Error("capacity 1 after a refused release: want exactly one slot")
	}
}

func TestMiddlewarePanic(t *testing.T) {
	s := newShedder(t, shed.Options{Capacity: 1})
	mw, _ := s.Middleware(shed.Header("X-Priority", shed.Critical))
	srv := httptest.NewServer(mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })))
	defer srv.Close()
	for range 3 {
		if resp, err := srv.Client().Get(srv.URL); err == nil {
			resp.Body.Close()
		}
	}
	if st := s.Stats(); st.InFlight != 0 || st.Shed[shed.Critical] != 0 {
		t.Errorf("after panicking handlers: %+v", st)
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	s, _ := shed.New(shed.Options{Capacity: 1 << 20})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if s.Acquire(shed.Normal) {
				s.Release()
			}
		}
	})
}
