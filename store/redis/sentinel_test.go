package redis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/internal/redistest"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// TestSentinel decides through Sentinel, kills the master, and decides again
// once Sentinel has promoted the replica: the store follows the failover,
// and the script, which the new master has never seen, runs by EVAL after
// EVALSHA's NOSCRIPT.
func TestSentinel(t *testing.T) {
	st := redistest.StartSentinel(t)
	url := "redis-sentinel://" + st.MasterName + "@" + strings.Join(st.SentinelAddrs(), ",")
	opts, err := redisstore.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	s, err := redisstore.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1000, Window: floodgate.MaxWindow}
	decide := func() (floodgate.Op, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		ops := []floodgate.Op{{Key: "sentinel", Limits: []floodgate.Limit{l}, Cost: 1}}
		err := s.Decide(ctx, ops)
		return ops[0], err
	}
	for i := 0; i < 5; i++ {
		if _, err := decide(); err != nil {
			t.Fatalf("decision %d through Sentinel: %v", i, err)
		}
	}
	// Let the replica catch up, so the count survives the failover.
	rc := st.Replica.Client()
	defer rc.Close()
	mc := st.Master.Client()
	if err := mc.Wait(ctx, 1, time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	mc.Close()

	st.Master.Kill()
	start := time.Now()
	var op floodgate.Op
	for {
		op, err = decide()
		if err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("no decision 30s after the master was killed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("decisions resumed %v after the master was killed", time.Since(start).Round(time.Millisecond))
	if role, err := rc.Do(ctx, "ROLE").Slice(); err != nil || role[0] != "master" {
		t.Fatalf("replica role after failover: %v %v", role, err)
	}
	if op.Result.Remaining != 1000-6 {
		t.Errorf("after failover: remaining %d, want %d (state replicated before the kill)", op.Result.Remaining, 1000-6)
	}
}
