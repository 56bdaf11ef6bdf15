package breaker_test

import (
	"testing"
	"time"

	"github.com/floodgate/floodgate/internal/faultproxy"
	"github.com/floodgate/floodgate/internal/redistest"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// at is the instant of every decision of the fault tests.
var at = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func addr(a string) func(int) redisstore.Options {
	return func(int) redisstore.Options { return redisstore.Options{Addrs: []string{a}} }
}

// run loads ins, applies fault after a healthy phase, repairs it after
// outage, keeps loading for a second, and checks the decisions.
func run(t *testing.T, name string, ins []*instance, outage time.Duration, fault, repair func()) report {
	t.Helper()
	stop := make(chan struct{})
	wait := load(ins, 3, 5000, 2*time.Millisecond, at, stop)
	time.Sleep(300 * time.Millisecond)
	from := time.Now()
	fault()
	time.Sleep(outage)
	repair()
	to := time.Now()
	time.Sleep(1200 * time.Millisecond)
	close(stop)
	r := analyse(wait(), from, to)
	r.check(t, name, len(ins), from, to)
	return r
}

// TestKilledFault kills Redis under load on 4 instances and restarts it on
// the same port 1.5s later. Slow: about 4s.
func TestKilledFault(t *testing.T) {
	srv := redistest.StartServer(t)
	ins := newInstances(t, 4, addr(srv.Addr))
	run(t, "killed 1.5s", ins, 1500*time.Millisecond, srv.Kill, func() { startOn(t, srv.Port()) })
}

// TestPausedFault stops Redis with SIGSTOP for 2s under load on 4
// instances: connections stay open and nothing answers. Slow: about 4s.
func TestPausedFault(t *testing.T) {
	srv := redistest.StartServer(t)
	ins := newInstances(t, 4, addr(srv.Addr))
	run(t, "paused 2s", ins, 2*time.Second, func() {
		if err := srv.Pause(); err != nil {
			t.Fatal(err)
		}
	}, func() {
		if err := srv.Resume(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSlowFault puts a proxy between the instances and Redis: 2ms of
// delay each way first (under the deadline: the store decides), then
// 100ms (over it: the policy decides within the deadline) for 1.5s.
func TestSlowFault(t *testing.T) {
	srv := redistest.StartServer(t)
	p, err := faultproxy.Start(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetDelay(2 * time.Millisecond)
	ins := newInstances(t, 4, addr(p.Addr()))
	run(t, "slow: 100ms each way for 1.5s", ins, 1500*time.Millisecond,
		func() { p.SetDelay(100 * time.Millisecond) }, func() { p.SetDelay(2 * time.Millisecond) })
}

// TestPartitionFault black-holes the connections of one instance of two:
// it follows the policies; the other keeps deciding with the store.
func TestPartitionFault(t *testing.T) {
	srv := redistest.StartServer(t)
	p, err := faultproxy.Start(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ins := newInstances(t, 2, func(i int) redisstore.Options {
		if i == 0 {
			return redisstore.Options{Addrs: []string{p.Addr()}}
		}
		return redisstore.Options{Addrs: []string{srv.Addr}}
	})
	stop := make(chan struct{})
	waitCut := load(ins[:1], 3, 5000, 2*time.Millisecond, at, stop)
	waitOther := load(ins[1:], 3, 5000, 2*time.Millisecond, at, stop)
	time.Sleep(300 * time.Millisecond)
	from := time.Now()
	p.Blackhole(true)
	time.Sleep(1500 * time.Millisecond)
	p.Blackhole(false)
	p.Cut() // connections that lost bytes in the hole are unusable
	to := time.Now()
	time.Sleep(1200 * time.Millisecond)
	close(stop)
	analyse(waitCut(), from, to).check(t, "partitioned instance", 2, from, to)
	other := analyse(waitOther(), from, to)
	t.Logf("instance still connected: %d decisions, %d by policy, %d errors, worst %v", other.total, other.byPolicy, other.errs, other.worst)
	// A starved scheduler can push a healthy call past the deadline now and
	// then; the partition must not: at most 1% by policy, and no errors.
	if other.errs != 0 || other.byPolicy*100 > other.total {
		t.Errorf("the connected instance had %d of %d decisions by policy and %d errors, want at most 1%% and none", other.byPolicy, other.total, other.errs)
	}
}
