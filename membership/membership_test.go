package membership_test

import (
	"testing"
	"time"

	"github.com/floodgate/floodgate/internal/redistest"
	"github.com/floodgate/floodgate/membership"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// waitLive waits (bounded) until m counts want instances.
func waitLive(t *testing.T, m *membership.Membership, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for m.Live() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s counts %d live instances, want %d", m.ID(), m.Live(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMembership(t *testing.T) {
	srv := redistest.StartServer(t)
	st, err := redisstore.New(redisstore.Options{Addrs: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	opts := membership.Options{Interval: 50 * time.Millisecond, TTL: 300 * time.Millisecond, Timeout: 200 * time.Millisecond}
	ms := make([]*membership.Membership, 3)
	for i := range ms {
		ms[i] = membership.Start(st, opts)
		defer ms[i].Close()
	}
	if !ms[0].Known() {
		t.Fatal("first heartbeat did not answer")
	}
	for _, m := range ms {
		waitLive(t, m, 3)
	}
	// A closed instance leaves (the others believe the lower count after a TTL).
	ms[2].Close()
	waitLive(t, ms[0], 2)
	waitLive(t, ms[1], 2)

	// The store goes away: the last count is kept.
	srv.Kill()
	time.Sleep(3 * opts.Interval)
	for _, m := range ms[:2] {
		if m.Live() != 2 {
			t.Errorf("%s counts %d with the store down, want the last count 2", m.ID(), m.Live())
		}
	}
	ok, failed := ms[0].Stats()
	if ok == 0 || failed == 0 {
		t.Errorf("heartbeats ok %d, failed %d", ok, failed)
	}

	// An instance that never reached the store assumes Options.Assume.
	m := membership.Start(st, membership.Options{Interval: time.Hour, Timeout: 50 * time.Millisecond, Assume: 4})
	defer m.Close()
	if m.Known() || m.Live() != 4 {
		t.Errorf("never reached the store: known %v, live %d, want 4 assumed", m.Known(), m.Live())
	}
}

func TestExpiry(t *testing.T) {
	srv := redistest.StartServer(t)
	st, err := redisstore.New(redisstore.Options{Addrs: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()
	// A crashed instance (no Close) drops out after its TTL.
	if _, err := st.Heartbeat(ctx, "crashed", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	m := membership.Start(st, membership.Options{Interval: 50 * time.Millisecond})
	defer m.Close()
	if m.Live() != 2 {
		t.Fatalf("live %d, want 2", m.Live())
	}
	waitLive(t, m, 1)
	c := srv.Client()
	defer c.Close()
	ttl, err := c.PTTL(ctx, st.MembersKey()).Result()
	if err != nil || ttl <= 0 {
		t.Errorf("members key ttl %v %v, want one", ttl, err)
	}
}
