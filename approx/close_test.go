package approx_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
)

// TestCloseFlushesEveryAdmission: decisions racing with Close are either
// refused with ErrClosed or pushed by Close's final sync; none is admitted
// and then forgotten.
func TestCloseFlushesEveryAdmission(t *testing.T) {
	remote := newRemote(t)
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1 << 40, Window: time.Hour}
	now := base(l.Window)
	for run := range 20 {
		key := fmt.Sprint("k", run)
		s, err := approx.New(remote, approx.Options{SyncInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for i := 0; i < 100000; i++ {
					ops := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{l}, Cost: 1, Now: now}}
					err := s.Decide(context.Background(), ops)
					if errors.Is(err, floodgate.ErrClosed) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					if ops[0].Result.Allowed {
						admitted.Add(1)
					}
				}
			})
		}
		// Close once decisions are under way (or after a second at most).
		for start := time.Now(); admitted.Load() < 100 && time.Since(start) < time.Second; {
			time.Sleep(time.Millisecond)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		batch := []approx.Counter{{Key: key, Limit: l, Start: now}}
		if _, err := remote.SyncCounters(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		if got, want := batch[0].Total, admitted.Load(); got != want {
			t.Fatalf("run %d: remote counts %d, %d admitted", run, got, want)
		}
	}
}
