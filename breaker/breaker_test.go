package breaker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/breaker"
	"github.com/floodgate/floodgate/store/memory"
)

// switchable decides with a memory store, or fails every op while down.
type switchable struct {
	floodgate.Store
	down  atomic.Bool
	calls atomic.Int64
}

var errDown = errors.New("connection refused")

func (s *switchable) Decide(ctx context.Context, ops []floodgate.Op) error {
	s.calls.Add(1)
	if s.down.Load() {
		for i := range ops {
			ops[i].Err = errDown
		}
		return errDown
	}
	return s.Store.Decide(ctx, ops)
}

func ops() []floodgate.Op {
	return []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1000, Window: time.Minute}}, Cost: 1}}
}

func TestCircuit(t *testing.T) {
	mem := memory.New(memory.Options{})
	inner := &switchable{Store: mem}
	var changes []string
	b := breaker.New(inner, breaker.Options{Failures: 3, Cooldown: 50 * time.Millisecond,
		OnStateChange: func(_ string, from, to breaker.State) { changes = append(changes, from.String()+">"+to.String()) }})
	defer b.Close()
	ctx := context.Background()

	if err := b.Decide(ctx, ops()); err != nil || b.State() != breaker.Closed {
		t.Fatalf("healthy store: err %v, state %v", err, b.State())
	}
	inner.down.Store(true)
	for i := 0; i < 3; i++ {
		if err := b.Decide(ctx, ops()); !errors.Is(err, errDown) {
			t.Fatalf("call %d on a down store: err %v, want %v", i, err, errDown)
		}
	}
	if b.State() != breaker.Open || b.Ready() {
		t.Fatalf("after 3 failures: state %v, want open", b.State())
	}
	before := inner.calls.Load()
	o := ops()
	if err := b.Decide(ctx, o); !errors.Is(err, breaker.ErrOpen) || !errors.Is(o[0].Err, breaker.ErrOpen) {
		t.Fatalf("open circuit: err %v, op err %v, want ErrOpen", err, o[0].Err)
	}
	if inner.calls.Load() != before {
		t.Fatal("open circuit called the store")
	}

	// After the cooldown one probe passes; it fails, so the circuit reopens.
	deadline := time.Now().Add(5 * time.Second)
	for b.Decide(ctx, ops()) == breaker.ErrOpen && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if b.State() != breaker.Open || inner.calls.Load() != before+1 {
		t.Fatalf("failed probe: state %v, store calls %d, want open and 1", b.State(), inner.calls.Load()-before)
	}

	// The store is back: the next probe closes the circuit.
	inner.down.Store(false)
	for b.Decide(ctx, ops()) != nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if b.State() != breaker.Closed {
		t.Fatalf("after a good probe: state %v, want closed", b.State())
	}
	want := []string{"closed>open", "open>half_open", "half_open>open", "open>half_open", "half_open>closed"}
	if len(changes) != len(want) {
		t.Fatalf("state changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("state changes %v, want %v", changes, want)
		}
	}
	st := b.Stats()
	if st.Opened != 2 || st.HalfOpened != 2 || st.Closed != 1 || st.Failures != 4 || st.Rejected == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestSuccessResetsRun(t *testing.T) {
	inner := &switchable{Store: memory.New(memory.Options{})}
	b := breaker.New(inner, breaker.Options{Failures: 2})
	defer b.Close()
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		inner.down.Store(i%2 == 0)
		_ = b.Decide(ctx, ops())
	}
	if b.State() != breaker.Closed {
		t.Fatalf("alternating failures: state %v, want closed", b.State())
	}
}

func TestInvalidAndCancelledAreNotFailures(t *testing.T) {
	inner := &switchable{Store: memory.New(memory.Options{})}
	b := breaker.New(inner, breaker.Options{Failures: 1})
	defer b.Close()
	bad := []floodgate.Op{{Key: "", Limits: ops()[0].Limits, Cost: 1}}
	if err := b.Decide(context.Background(), bad); !errors.Is(err, floodgate.ErrInvalid) {
		t.Fatalf("invalid op: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	inner.down.Store(true)
	_ = b.Decide(ctx, ops())
	if b.State() != breaker.Closed {
		t.Fatalf("state %v after an invalid op and a cancelled call, want closed", b.State())
	}
}

// slow blocks until its context ends.
type slow struct{ floodgate.Store }

func (slow) Decide(ctx context.Context, ops []floodgate.Op) error {
	<-ctx.Done()
	for i := range ops {
		ops[i].Err = ctx.Err()
	}
	return ctx.Err()
}

func TestDeadline(t *testing.T) {
	b := breaker.New(slow{}, breaker.Options{Timeout: 20 * time.Millisecond})
	start := time.Now()
	err := b.Decide(context.Background(), ops())
	if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d > time.Second {
		t.Fatalf("slow store: err %v after %v, want a deadline error after about 20ms", err, d)
	}
	if b.Stats().Timeouts != 1 {
		t.Errorf("timeouts %d, want 1", b.Stats().Timeouts)
	}
}

// byKey fails the ops whose key is in down.
type byKey struct {
	floodgate.Store
	down map[string]bool
}

func (s *byKey) Decide(ctx context.Context, ops []floodgate.Op) error {
	var first error
	for i := range ops {
		if s.down[ops[i].Key] {
			ops[i].Err = errDown
			first = errDown
			continue
		}
		if err := s.Store.Decide(ctx, ops[i:i+1]); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func TestShards(t *testing.T) {
	mem := memory.New(memory.Options{})
	defer mem.Close()
	inner := &byKey{Store: mem, down: map[string]bool{"a": true}}
	b := breaker.New(inner, breaker.Options{Failures: 2, Cooldown: time.Hour, Shard: func(k string) string { return k }})
	lim := ops()[0].Limits
	mixed := func() []floodgate.Op {
		return []floodgate.Op{{Key: "a", Limits: lim, Cost: 1}, {Key: "b", Limits: lim, Cost: 1}}
	}
	for i := 0; i < 3; i++ {
		_ = b.Decide(context.Background(), mixed())
	}
	if got := b.Shards(); got["a"] != breaker.Open || got["b"] != breaker.Closed || b.State() != breaker.Open {
		t.Fatalf("shards %v, state %v: want a open, b closed", got, b.State())
	}
	o := mixed()
	err := b.Decide(context.Background(), o)
	if !errors.Is(err, breaker.ErrOpen) || !errors.Is(o[0].Err, breaker.ErrOpen) || o[1].Err != nil || !o[1].Result.Allowed {
		t.Fatalf("mixed call with a open: err %v, ops %+v", err, o)
	}
}

// TestFailover moves a failed shard's keys to another shard, as a Redis
// Cluster does when it promotes a replica: refreshes are asked for only
// while a circuit is open (on opening and on each probe), the keys follow
// the new shard name at once, and the circuit left behind is retired.
func TestFailover(t *testing.T) {
	mem := memory.New(memory.Options{})
	defer mem.Close()
	var owner atomic.Value // the shard of k1 and k2 after a refresh
	owner.Store("m1")
	var current atomic.Value // the shard of k1 and k2 in the client's map
	current.Store("m1")
	shard := func(k string) string {
		if k == "k1" || k == "k2" {
			return current.Load().(string)
		}
		return "m0"
	}
	// The client sends each op to its key's shard in its map; m1 is dead.
	inner := &byShard{Store: mem, shard: shard, down: "m1"}
	var refreshes atomic.Int64
	var pending atomic.Bool
	var changes []string
	b := breaker.New(inner, breaker.Options{
		Failures: 2, Cooldown: 20 * time.Millisecond,
		Shard: shard,
		// Like go-redis's ReloadState, the refresh lands in the background:
		// after the call that asked for it.
		Refresh: func() { refreshes.Add(1); pending.Store(true) },
		OnStateChange: func(shard string, from, to breaker.State) {
			changes = append(changes, shard+":"+from.String()+">"+to.String())
		},
	})
	lim := ops()[0].Limits
	call := func(keys ...string) []floodgate.Op {
		o := make([]floodgate.Op, len(keys))
		for i, k := range keys {
			o[i] = floodgate.Op{Key: k, Limits: lim, Cost: 1}
		}
		if pending.Swap(false) {
			current.Store(owner.Load())
		}
		_ = b.Decide(context.Background(), o)
		return o
	}
	for i := 0; i < 10; i++ {
		call("k0")
	}
	if refreshes.Load() != 0 {
		t.Fatalf("%d refreshes while every circuit is closed, want 0", refreshes.Load())
	}
	call("k1", "k0")
	call("k2", "k0")
	if got := b.Shards(); got["m1"] != breaker.Open || got["m0"] != breaker.Closed || refreshes.Load() != 1 {
		t.Fatalf("after 2 failures on m1: shards %v, %d refreshes; want m1 open, m0 closed, 1 refresh", got, refreshes.Load())
	}
	// Still failed: each probe asks for a refresh, which finds m1 again.
	for deadline := time.Now().Add(5 * time.Second); refreshes.Load() < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("%d refreshes after 5s of probes, want 3", refreshes.Load())
		}
		time.Sleep(5 * time.Millisecond)
		if o := call("k1"); o[0].Err == nil {
			t.Fatal("a key of the failed shard was decided")
		}
	}
	if got := b.Shards(); got["m1"] == breaker.Closed {
		t.Fatalf("shards %v: m1 closed while down", got)
	}
	// The replica takes over: the next refresh maps k1 and k2 to m2.
	owner.Store("m2")
	deadline := time.Now().Add(5 * time.Second)
	for {
		o := call("k1")
		if o[0].Err == nil && o[0].Result.Allowed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("k1 not decided 5s after the failover: %v", o[0].Err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if o := call("k2"); o[0].Err != nil {
		t.Fatalf("k2 after the failover: %v", o[0].Err)
	}
	got := b.Shards()
	if _, ok := got["m1"]; ok || got["m2"] != breaker.Closed || b.State() != breaker.Closed || !b.Ready() {
		t.Fatalf("after the failover: shards %v, state %v; want m1 retired, m2 closed", got, b.State())
	}
	if st := b.Stats(); st.Retired != 1 || st.Opened < 1 {
		t.Errorf("stats %+v: want 1 retired", st)
	}
	if last := changes[len(changes)-1]; !strings.HasPrefix(last, "m1:") || !strings.HasSuffix(last, ">closed") {
		t.Errorf("changes %v: want m1's retirement last", changes)
	}
	n := refreshes.Load()
	for i := 0; i < 10; i++ {
		call("k1", "k0")
	}
	if refreshes.Load() != n {
		t.Errorf("%d refreshes after the failover with every circuit closed", refreshes.Load()-n)
	}
}

// byShard fails the ops whose key's shard is down.
type byShard struct {
	floodgate.Store
	shard func(string) string
	down  string
}

func (s *byShard) Decide(ctx context.Context, ops []floodgate.Op) error {
	var first error
	for i := range ops {
		if s.shard(ops[i].Key) == s.down {
			ops[i].Err = errDown
			first = errDown
			continue
		}
		if err := s.Store.Decide(ctx, ops[i:i+1]); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// TestOneStallCountsOnce times out many concurrent calls in one stall:
// they count as one failure of the run, so the circuit stays closed; a
// run of calls that each start after the previous one failed opens it.
func TestOneStallCountsOnce(t *testing.T) {
	b := breaker.New(slow{}, breaker.Options{Timeout: 20 * time.Millisecond, Failures: 3, Cooldown: time.Hour})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = b.Decide(context.Background(), ops()) }()
	}
	wg.Wait()
	if st := b.Stats(); b.State() != breaker.Closed || st.Failures != 8 {
		t.Fatalf("after 8 concurrent timeouts: state %v, stats %+v; want closed, 8 failures", b.State(), st)
	}
	for i := 0; i < 2; i++ {
		_ = b.Decide(context.Background(), ops())
	}
	if b.State() != breaker.Open {
		t.Fatalf("after the stall and 2 more timeouts in a row: state %v, want open", b.State())
	}
}
