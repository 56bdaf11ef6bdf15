package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/internal/redistest"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

func TestMain(m *testing.M) {
	code := m.Run()
	redistest.StopShared()
	os.Exit(code)
}

// topologies names the servers every shared test runs against.
// topologies are where the tests that take one run: the shared standalone
// server and cluster, calling the script as a function (FCALL), and the
// standalone server calling it by EVALSHA (Options.NoFunctions).
var topologies = []string{"standalone", "cluster", "standalone-eval"}

// newStore returns a store on the shared standalone server or cluster, with
// a prefix of its own so tests do not see each other's keys.
func newStore(t testing.TB, topo string) *redisstore.Store {
	t.Helper()
	opts := redisstore.Options{Prefix: fmt.Sprintf("t%d:", rand.Uint64())}
	switch topo {
	case "standalone":
		opts.Addrs = []string{redistest.Shared(t).Addr}
	case "standalone-eval":
		opts.Addrs, opts.NoFunctions = []string{redistest.Shared(t).Addr}, true
	case "cluster":
		opts.Addrs, opts.Cluster = redistest.SharedCluster(t).Addrs(), true
	default:
		t.Fatalf("unknown topology %q", topo)
	}
	s, err := redisstore.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// reference decides ops with floodgate.Apply over Go states, as a store
// keeping state in Go does.
type reference struct {
	states map[string]floodgate.State
}

func (r *reference) decide(op *floodgate.Op) {
	if r.states == nil {
		r.states = map[string]floodgate.State{}
	}
	sts := make([]floodgate.State, len(op.Limits))
	for i, l := range op.Limits {
		sts[i] = r.states[op.Key+"|"+l.String()]
	}
	changed := floodgate.Apply(op, sts, op.Now)
	if changed {
		for i, l := range op.Limits {
			r.states[op.Key+"|"+l.String()] = sts[i]
		}
	}
	if op.Release {
		// floodgate.Apply leaves Result.Limit unset on release; the Redis
		// store names the deciding limit as Result documents.
		fixReleaseLimit(op)
	}
}

// fixReleaseLimit sets the Limit of a release's results: each limit's own,
// and for the combined result the one combine would pick.
func fixReleaseLimit(op *floodgate.Op) {
	for i := range op.Each {
		op.Each[i].Limit = op.Limits[i]
	}
	if len(op.Limits) == 1 {
		op.Result.Limit = op.Limits[0]
		return
	}
	each := make([]floodgate.Result, len(op.Limits))
	sts := make([]floodgate.State, len(op.Limits))
	_ = sts
	copy(each, op.Each)
	best := 0
	for i := 1; i < len(each); i++ {
		if each[i].Remaining < each[best].Remaining || (each[i].Remaining == each[best].Remaining && each[i].ResetAfter > each[best].ResetAfter) {
			best = i
		}
	}
	op.Result.Limit = op.Limits[best]
}

func randomLimit(rng *rand.Rand, alg floodgate.Algorithm) floodgate.Limit {
	windows := []time.Duration{time.Millisecond, 7 * time.Millisecond, time.Second, 1500 * time.Millisecond, time.Minute, time.Hour}
	l := floodgate.Limit{Algorithm: alg, Quota: 1 + rng.Int64N(12), Window: windows[rng.IntN(len(windows))]}
	if rng.IntN(3) == 0 {
		l.Quota = 1 + rng.Int64N(1000)
	}
	if (alg == floodgate.TokenBucket || alg == floodgate.GCRA) && rng.IntN(2) == 0 {
		l.Burst = 1 + rng.Int64N(20)
	}
	return l
}

// randomOps returns a sequence of ops on a few keys with instants that never
// go back, gaps from 0 to well past the windows.
func randomOps(rng *rand.Rand, n int, pick func() []floodgate.Limit) []floodgate.Op {
	now := int64(1_700_000_000_000_000) + rng.Int64N(1_000_000_000)
	keys := []string{"a", "b{x}", "c}"}
	limits := map[string][]floodgate.Limit{}
	for _, k := range keys {
		limits[k] = pick()
	}
	leases := []string{"", "", "l1", "l2", "l3"}
	ops := make([]floodgate.Op, n)
	for i := range ops {
		switch rng.IntN(10) {
		case 0:
			now += rng.Int64N(3_600_000_000)
		case 1, 2:
		case 3, 4, 5:
			now += rng.Int64N(1000)
		default:
			now += rng.Int64N(200_000)
		}
		k := keys[rng.IntN(len(keys))]
		ls := limits[k]
		cost := rng.Int64N(3)
		if rng.IntN(10) == 0 {
			cost = rng.Int64N(ls[0].Quota + 2)
		}
		op := floodgate.Op{Key: k, Limits: ls, Cost: cost, Now: now, Lease: leases[rng.IntN(len(leases))]}
		if op.Lease != "" && rng.IntN(4) == 0 {
			op.Release = true
		}
		op.Each = make([]floodgate.Result, len(ls))
		ops[i] = op
	}
	return ops
}

// differential feeds the same ops to the store (in batches of random size)
// and to the reference, and compares every result field by field.
func differential(t *testing.T, s *redisstore.Store, rng *rand.Rand, ops []floodgate.Op) {
	t.Helper()
	var ref reference
	ctx := context.Background()
	for i := 0; i < len(ops); {
		n := min(1+rng.IntN(8), len(ops)-i)
		batch := ops[i : i+n]
		want := make([]floodgate.Op, n)
		for j := range batch {
			want[j] = batch[j]
			want[j].Each = make([]floodgate.Result, len(batch[j].Limits))
			ref.decide(&want[j])
		}
		if err := s.Decide(ctx, batch); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		for j := range batch {
			got := batch[j]
			if got.Result != want[j].Result {
				t.Fatalf("op %d (key %q limits %v cost %d lease %q release %v now %d):\n got %+v\nwant %+v",
					i+j, got.Key, got.Limits, got.Cost, got.Lease, got.Release, got.Now, got.Result, want[j].Result)
			}
			for e := range got.Each {
				if got.Each[e] != want[j].Each[e] {
					t.Fatalf("op %d limit %d (%v cost %d now %d): each\n got %+v\nwant %+v",
						i+j, e, got.Limits[e], got.Cost, got.Now, got.Each[e], want[j].Each[e])
				}
			}
		}
		i += n
	}
}

func TestDifferential(t *testing.T) {
	for _, topo := range topologies {
		for _, alg := range floodgate.Algorithms {
			t.Run(topo+"/"+alg.String(), func(t *testing.T) {
				t.Parallel()
				for seed := uint64(0); seed < 6; seed++ {
					s := newStore(t, topo)
					rng := rand.New(rand.NewPCG(seed, uint64(alg)))
					ops := randomOps(rng, 300, func() []floodgate.Limit { return []floodgate.Limit{randomLimit(rng, alg)} })
					differential(t, s, rng, ops)
				}
			})
		}
		t.Run(topo+"/multi", func(t *testing.T) {
			t.Parallel()
			for seed := uint64(0); seed < 10; seed++ {
				s := newStore(t, topo)
				rng := rand.New(rand.NewPCG(seed, 99))
				ops := randomOps(rng, 300, func() []floodgate.Limit {
					ls := make([]floodgate.Limit, 2+rng.IntN(3))
					for i := range ls {
						ls[i] = randomLimit(rng, floodgate.Algorithms[rng.IntN(len(floodgate.Algorithms))])
					}
					if rng.IntN(4) == 0 {
						ls[1] = ls[0] // the same limit twice
					}
					return ls
				})
				differential(t, s, rng, ops)
			}
		})
	}
}

// TestServerClock decides without an explicit instant: the script reads
// Redis TIME.
func TestServerClock(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo, func(t *testing.T) {
			s := newStore(t, topo)
			l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 3, Window: time.Hour}
			lim := floodgate.New(s)
			allowed := 0
			for i := 0; i < 5; i++ {
				r, err := lim.Allow(context.Background(), "clock", l)
				if err != nil {
					t.Fatal(err)
				}
				if r.Allowed {
					allowed++
				}
				if r.ResetAfter <= 0 || r.ResetAfter > time.Hour {
					t.Fatalf("reset after %v, want in (0, 1h]", r.ResetAfter)
				}
			}
			if allowed != 3 {
				t.Fatalf("allowed %d of 5, want 3", allowed)
			}
		})
	}
}

// ownStore starts a server of the test's own and a store on it (calling the
// script by EVALSHA when eval), and returns the store and a client of the
// server; both are closed when the test ends.
func ownStore(t *testing.T, eval bool) (*redisstore.Store, *goredis.Client) {
	t.Helper()
	srv := redistest.StartServer(t)
	s, err := redisstore.New(redisstore.Options{Addrs: []string{srv.Addr}, NoFunctions: eval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := srv.Client()
	t.Cleanup(func() { c.Close() })
	return s, c
}

// TestNoScript flushes the server's scripts, or its functions, between
// decisions: EVALSHA fails with NOSCRIPT and the store falls back to EVAL;
// FCALL fails as the function is not found and the store loads it again.
// Each op is decided once.
func TestNoScript(t *testing.T) {
	for _, eval := range []bool{true, false} {
		t.Run(fmt.Sprintf("eval=%v", eval), func(t *testing.T) {
			s, c := ownStore(t, eval)
			ctx := context.Background()
			l := floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 10, Window: time.Second}
			for i := 0; i < 4; i++ {
				if err := c.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				if err := c.FunctionFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				ops := []floodgate.Op{
					{Key: "k", Limits: []floodgate.Limit{l}, Cost: 1, Now: 1e15},
					{Key: "k", Limits: []floodgate.Limit{l}, Cost: 1, Now: 1e15},
				}
				if err := s.Decide(ctx, ops); err != nil {
					t.Fatalf("round %d after the flush: %v", i, err)
				}
				if want := int64(10 - 2*(i+1)); ops[1].Result.Remaining != want {
					t.Fatalf("round %d: remaining %d, want %d", i, ops[1].Result.Remaining, want)
				}
			}
			if fcalls := commandCalls(t, c, "fcall"); eval != (fcalls == 0) {
				t.Errorf("%d FCALL", fcalls)
			}
		})
	}
}

// TestFunctionsRefused decides as a user whom the ACL does not let call or
// load functions: the store falls back to EVALSHA, and every op is decided
// once.
func TestFunctionsRefused(t *testing.T) {
	srv := redistest.StartServer(t)
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "ACL", "SETUSER", "limiter", "on", ">pw", "~*", "&*", "+@all", "-fcall", "-function").Err(); err != nil {
		t.Fatal(err)
	}
	s, err := redisstore.New(redisstore.Options{Addrs: []string{srv.Addr}, Username: "limiter", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Hour}}
	for i := 0; i < 3; i++ {
		ops := []floodgate.Op{{Key: "k", Limits: l, Cost: 1}, {Key: "k", Limits: l, Cost: 2}}
		if err := s.Decide(ctx, ops); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if want := int64(10 - 3*(i+1)); !ops[1].Result.Allowed || ops[1].Result.Remaining != want {
			t.Fatalf("round %d: %+v, want allowed with %d remaining", i, ops[1].Result, want)
		}
	}
	if n := commandCalls(t, c, "evalsha"); n == 0 {
		t.Error("no EVALSHA")
	}
	if n := commandCalls(t, c, "fcall"); n > 1 {
		t.Errorf("%d FCALL, want at most the first", n)
	}
}

// TestKeyRefused decides as a user whom the ACL lets run FCALL on some keys
// only: an op on another key fails with NOPERM, as it would by EVALSHA, and
// the store goes on calling the function for the others.
func TestKeyRefused(t *testing.T) {
	srv := redistest.StartServer(t)
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "ACL", "SETUSER", "limiter", "on", ">pw", "~ok:{good}*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	s, err := redisstore.New(redisstore.Options{Addrs: []string{srv.Addr}, Username: "limiter", Password: "pw", Prefix: "ok:"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Hour}}
	for i, key := range []string{"good", "bad", "good"} {
		ops := []floodgate.Op{{Key: key, Limits: l, Cost: 1}}
		err := s.Decide(ctx, ops)
		if key == "bad" {
			if err == nil || !strings.Contains(err.Error(), "NOPERM") {
				t.Fatalf("op %d on %q: %v, want NOPERM", i, key, err)
			}
			continue
		}
		if err != nil || !ops[0].Result.Allowed {
			t.Fatalf("op %d on %q: %+v, %v", i, key, ops[0].Result, err)
		}
	}
	if n := commandCalls(t, c, "evalsha") + commandCalls(t, c, "eval"); n != 0 {
		t.Errorf("%d EVALSHA or EVAL, want none", n)
	}
}

// TestLoadOnTheCallsMaster flushes the functions of a cluster's masters and
// stops one of them (SIGSTOP): an op on another master's key loads the
// library there alone and is decided; the stopped master is not waited for.
func TestLoadOnTheCallsMaster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	cc := cl.Client()
	defer cc.Close()
	ctx := context.Background()
	if err := cc.ForEachMaster(ctx, func(ctx context.Context, m *goredis.Client) error {
		return m.FunctionFlush(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}
	s, err := redisstore.New(redisstore.Options{Addrs: cl.Addrs(), Cluster: true, ReadTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Hour}
	// Two keys on different masters.
	addr := func(key string) string {
		m, err := cc.MasterForKey(ctx, s.Key(key, l))
		if err != nil {
			t.Fatal(err)
		}
		return m.Options().Addr
	}
	a, other := "a", ""
	for i := 0; other == ""; i++ {
		if k := "k" + strconv.Itoa(i); addr(k) != addr(a) {
			other = k
		}
	}
	var stopped *redistest.Server
	for _, n := range cl.Nodes {
		if n.Addr == addr(other) {
			stopped = n
		}
	}
	if err := stopped.Pause(); err != nil {
		t.Fatal(err)
	}
	ops := []floodgate.Op{{Key: a, Limits: []floodgate.Limit{l}, Cost: 1}}
	err = s.Decide(ctx, ops)
	if rerr := stopped.Resume(); rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil || !ops[0].Result.Allowed || ops[0].Result.Remaining != 9 {
		t.Fatalf("op on a running master while another is stopped: %+v, %v", ops[0].Result, err)
	}
	ops = []floodgate.Op{{Key: other, Limits: []floodgate.Limit{l}, Cost: 1}}
	if err := s.Decide(ctx, ops); err != nil || ops[0].Result.Remaining != 9 {
		t.Fatalf("op on the resumed master: %+v, %v", ops[0].Result, err)
	}
}

// TestDownAtCreation creates the store with nothing listening, then decides:
// New succeeds, Decide fails with an error.
func TestDownAtCreation(t *testing.T) {
	s, err := redisstore.New(redisstore.Options{URL: "redis://127.0.0.1:1", DialTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ops := []floodgate.Op{{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 1, Window: time.Second}}, Cost: 1}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Decide(ctx, ops); err == nil || ops[0].Err == nil {
		t.Fatalf("decide with Redis down: err %v, op err %v; want errors", err, ops[0].Err)
	}
}

// TestInvalid checks that invalid ops get ErrInvalid and valid ones in the
// same batch are decided.
func TestInvalid(t *testing.T) {
	s := newStore(t, "standalone")
	good := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second}
	ops := []floodgate.Op{
		{Key: "", Limits: []floodgate.Limit{good}, Cost: 1},
		{Key: "k", Limits: []floodgate.Limit{good}, Cost: -1},
		{Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 0, Window: time.Second}}, Cost: 1},
		{Key: "k", Limits: []floodgate.Limit{good}, Cost: 1},
	}
	err := s.Decide(context.Background(), ops)
	if err == nil {
		t.Fatal("want an error")
	}
	for i := 0; i < 3; i++ {
		if !errorsIs(ops[i].Err, floodgate.ErrInvalid) {
			t.Errorf("op %d: err %v, want ErrInvalid", i, ops[i].Err)
		}
	}
	if ops[3].Err != nil || !ops[3].Result.Allowed {
		t.Errorf("valid op: %+v %v", ops[3].Result, ops[3].Err)
	}
}

// TestTTL runs every algorithm, then scans the database: every key has a
// time to live.
func TestTTL(t *testing.T) {
	srv := redistest.StartServer(t)
	s, err := redisstore.New(redisstore.Options{Addrs: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lim := floodgate.New(s)
	ctx := context.Background()
	for _, alg := range floodgate.Algorithms {
		l := floodgate.Limit{Algorithm: alg, Quota: 3, Window: time.Minute}
		for i := 0; i < 5; i++ {
			if _, err := lim.AllowN(ctx, fmt.Sprintf("ttl-%d", i%2), int64(i%3), l); err != nil {
				t.Fatal(err)
			}
		}
		if alg == floodgate.Concurrency {
			ls, err := lim.Acquire(ctx, "ttl-lease", l, 1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := lim.Release(ctx, ls); err != nil {
				t.Fatal(err)
			}
			if _, err := lim.Acquire(ctx, "ttl-lease", l, 2); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Explicit instants (the test path) get a time to live too.
	ops := []floodgate.Op{{Key: "ttl-explicit", Limits: []floodgate.Limit{{Algorithm: floodgate.SlidingWindowLog, Quota: 3, Window: time.Second}}, Cost: 1, Now: 1e15}}
	if err := s.Decide(ctx, ops); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 8 {
		t.Fatalf("only %d keys written: %q", len(keys), keys)
	}
	for _, k := range keys {
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 {
			t.Errorf("key %q has no time to live (PTTL %v)", k, ttl)
		}
		if ttl > 11*time.Minute {
			t.Errorf("key %q: PTTL %v, longer than its state lives", k, ttl)
		}
	}
}

// TestKeys uses keys with braces, backslashes and binary bytes, on the
// cluster: every op stays in one slot, and distinct keys stay distinct.
func TestKeys(t *testing.T) {
	s := newStore(t, "cluster")
	lim := floodgate.New(s)
	ctx := context.Background()
	keys := []string{"{", "}", "{}", "}{", "a{b}c", `\(`, "\\", "\x00\xff\n", strings.Repeat("k", floodgate.MaxKeyLen), "{user:42}"}
	limits := []floodgate.Limit{
		{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Minute},
		{Algorithm: floodgate.SlidingWindowLog, Quota: 5, Window: time.Minute},
		{Algorithm: floodgate.Concurrency, Quota: 5, Window: time.Minute},
	}
	for round := 0; round < 3; round++ {
		for _, k := range keys {
			r, err := lim.Allow(ctx, k, limits...)
			if err != nil {
				t.Fatalf("key %q: %v", k, err)
			}
			if r.Allowed != (round < 2) {
				t.Fatalf("key %q round %d: allowed %v", k, round, r.Allowed)
			}
		}
	}
}

func TestKeyName(t *testing.T) {
	s, err := redisstore.New(redisstore.Options{Addrs: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		key  string
		l    floodgate.Limit
		want string
	}{
		{"user:42", floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 100, Window: time.Minute, Burst: 20}, "floodgate:{user:42}:tb:60000:100:20"},
		{"a{b}", floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Second}, `floodgate:{a\(b\)}:fw:1000:10`},
	} {
		if got := s.Key(c.key, c.l); got != c.want {
			t.Errorf("Key(%q, %v) = %q, want %q", c.key, c.l, got, c.want)
		}
	}
	if _, err := redisstore.New(redisstore.Options{Addrs: []string{"x:1"}, Prefix: "a{b}"}); err == nil {
		t.Error("prefix with braces accepted")
	}
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		url  string
		want redisstore.Options
	}{
		{"redis://localhost", redisstore.Options{Addrs: []string{"localhost:6379"}}},
		{"redis://u:p%40ss@127.0.0.1:7000/3", redisstore.Options{Addrs: []string{"127.0.0.1:7000"}, Username: "u", Password: "p@ss", DB: 3}},
		{"redis://:secret@h:1", redisstore.Options{Addrs: []string{"h:1"}, Password: "secret"}},
		{"redis-cluster://a:1,b:2,c:3", redisstore.Options{Addrs: []string{"a:1", "b:2", "c:3"}, Cluster: true}},
		{"redis-sentinel://mymaster@s1:26379,s2", redisstore.Options{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster"}},
		{"redis-sentinel://u:p@mymaster@s1:1/2", redisstore.Options{Addrs: []string{"s1:1"}, MasterName: "mymaster", Username: "u", Password: "p", DB: 2}},
		{"redis://[::1]:6380", redisstore.Options{Addrs: []string{"[::1]:6380"}}},
	} {
		got, err := redisstore.ParseURL(c.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", c.url, err)
			continue
		}
		c.want.URL = c.url
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ParseURL(%q) =\n %+v\nwant %+v", c.url, got, c.want)
		}
	}
	tlsOpts, err := redisstore.ParseURL("rediss://h:6380")
	if err != nil || tlsOpts.TLS == nil || tlsOpts.TLS.ServerName != "h" {
		t.Errorf("rediss: %+v %v", tlsOpts, err)
	}
	for _, c := range []struct{ url, part string }{
		{"localhost:6379", "no scheme"},
		{"http://h:1", `unknown scheme "http"`},
		{"redis://h:x", `bad port "x"`},
		{"redis://h:0", `bad port "0"`},
		{"redis://h:1/db", `database "db"`},
		{"redis://a:1,b:2", "2 hosts"},
		{"redis-cluster://a:1/1", "cluster has only database 0"},
		{"redis-sentinel://s1:1", "no master name"},
		{"redis-cluster://a:1,,b:2", "empty host"},
		{"redis://", "no host"},
		{"redis://h:1?x=1", "query"},
		{"redis://u:topsecret@h:x", "bad port"},
	} {
		_, err := redisstore.ParseURL(c.url)
		if err == nil || !strings.Contains(err.Error(), c.part) {
			t.Errorf("ParseURL(%q): err %v, want one naming %q", c.url, err, c.part)
		}
		if err != nil && strings.Contains(err.Error(), "topsecret") {
			t.Errorf("ParseURL(%q): error shows the password: %v", c.url, err)
		}
	}
}

var _ goredis.UniversalClient

// Passwords may hold '/', '?', '#' and '@' unencoded: the user information
// ends at the last '@', and errors never show any part of the password.
func TestParseURLSpecialPassword(t *testing.T) {
	for _, c := range []struct {
		url  string
		want redisstore.Options
	}{
		{"redis://:pa/ss@h:1/2", redisstore.Options{Addrs: []string{"h:1"}, Password: "pa/ss", DB: 2}},
		{"redis://u:p?s#s@h", redisstore.Options{Addrs: []string{"h:6379"}, Username: "u", Password: "p?s#s"}},
		{"redis://u:p@s/s@[::1]", redisstore.Options{Addrs: []string{"[::1]:6379"}, Username: "u", Password: "p@s/s"}},
		{"redis-sentinel://u:p/w@m@h1,h2", redisstore.Options{Addrs: []string{"h1:26379", "h2:26379"}, MasterName: "m", Username: "u", Password: "p/w"}},
	} {
		got, err := redisstore.ParseURL(c.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", c.url, err)
			continue
		}
		c.want.URL = c.url
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ParseURL(%q) =\n %+v\nwant %+v", c.url, got, c.want)
		}
	}
	for _, u := range []string{
		"redis://u:top/secret@h:x",
		"redis://u:top?secret@h:x",
		"redis://u:top@secret@h:x",
		"redis://:top#secret@h:1?x=1",
		"redis-sentinel://u:top@secret@m@h:x",
	} {
		_, err := redisstore.ParseURL(u)
		if err == nil {
			t.Errorf("ParseURL(%q): no error", u)
			continue
		}
		if strings.Contains(err.Error(), "top") || strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURL(%q): error shows the password: %v", u, err)
		}
	}
}

// TestWindowExpiry decides on the server's clock, through several windows of
// 200 ms, under a fixed window and a sliding window counter: ops of one
// limit each (the uniform call), an op of one limit beside one of both (the
// general call, where the first takes its short path), and an op under a
// fixed window and a sliding log (one string key, read by GET). After each round that
// stayed within one window, every key lives until its state expires (the end
// of the window; of the next one for the sliding counter) and at most 10 ms
// longer. A write that kept a key's time to live from an earlier window would
// leave it expiring too early; one that set it anew each time would pass too,
// only slower (BenchmarkDecideBatchWarm).
func TestWindowExpiry(t *testing.T) {
	const w = 200 * time.Millisecond
	fw := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1_000_000, Window: w}
	sw := floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: 1_000_000, Window: w}
	log := floodgate.Limit{Algorithm: floodgate.SlidingWindowLog, Quota: 1_000_000, Window: w}
	calls := [][]floodgate.Op{
		{{Key: "alone", Limits: []floodgate.Limit{fw}}, {Key: "alone", Limits: []floodgate.Limit{sw}}},
		{{Key: "short", Limits: []floodgate.Limit{fw}}, {Key: "both", Limits: []floodgate.Limit{fw, sw}}},
		// One string-state key: read by GET, not MGET.
		{{Key: "lone", Limits: []floodgate.Limit{fw, log}}},
	}
	keys := map[string]floodgate.Limit{}
	for _, call := range calls {
		for _, op := range call {
			for _, l := range op.Limits {
				if l.Algorithm != floodgate.SlidingWindowLog {
					keys[op.Key+"/"+l.Algorithm.String()] = l
				}
			}
		}
	}
	for _, eval := range []bool{false, true} {
		t.Run(fmt.Sprintf("eval=%v", eval), func(t *testing.T) {
			s, c := ownStore(t, eval)
			ctx := context.Background()
			micros := func() int64 {
				tm, err := c.Time(ctx).Result()
				if err != nil {
					t.Fatal(err)
				}
				return tm.UnixMicro()
			}
			checked := 0
			deadline := time.Now().Add(10 * time.Second)
			for round := 0; round < 40 && (checked < 10 || round < 15) && time.Now().Before(deadline); round++ {
				time.Sleep(17 * time.Millisecond)
				before := micros()
				for _, call := range calls {
					ops := make([]floodgate.Op, len(call))
					for i, op := range call {
						ops[i] = floodgate.Op{Key: op.Key, Limits: op.Limits, Cost: 1}
					}
					if err := s.Decide(ctx, ops); err != nil {
						t.Fatal(err)
					}
					for _, op := range ops {
						if op.Err != nil || !op.Result.Allowed {
							t.Fatalf("round %d: op %q: %+v, err %v", round, op.Key, op.Result, op.Err)
						}
					}
				}
				after := micros()
				win := w.Microseconds()
				if before/win != after/win {
					continue // the round crossed into the next window
				}
				end := (before/win + 1) * win / 1000 // ms
				for name, l := range keys {
					key, _, _ := strings.Cut(name, "/")
					at, err := c.PExpireTime(ctx, s.Key(key, l)).Result()
					if err != nil {
						t.Fatal(err)
					}
					want := end
					if l.Algorithm == floodgate.SlidingWindow {
						want += w.Milliseconds()
					}
					if got := at.Milliseconds(); got < want || got > want+10 {
						t.Errorf("round %d: key %s expires at %d ms, want %d (+10)", round, name, got, want)
					}
				}
				checked++
			}
			if checked < 5 {
				t.Fatalf("only %d rounds stayed within a window", checked)
			}
		})
	}
}

// TestAheadThenServerClock writes a fixed window's state at an explicit
// instant an hour ahead of the server's clock, then decides on the server's
// clock in the same call and in a call of its own, on the uniform and the
// general path, by FCALL and EVALSHA: the later op finds the state (its
// window started ahead of the clock), and the key must still live until that
// state expires rather than keep the first write's shorter time to live. A
// sliding log's and a lease's keys written ahead live as long too.
func TestAheadThenServerClock(t *testing.T) {
	fw := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 1000, Window: time.Second}
	sl := floodgate.Limit{Algorithm: floodgate.SlidingWindowLog, Quota: 1000, Window: time.Second}
	for _, eval := range []bool{false, true} {
		t.Run(fmt.Sprintf("eval=%v", eval), func(t *testing.T) {
			s, c := ownStore(t, eval)
			ctx := context.Background()
			tm, err := c.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			ahead := tm.UnixMicro() + time.Hour.Microseconds()
			w := fw.Window.Microseconds()
			end := (ahead/w + 1) * w / 1000 // ms: the end of the window ahead
			decide := func(ops ...floodgate.Op) {
				t.Helper()
				if err := s.Decide(ctx, ops); err != nil {
					t.Fatal(err)
				}
				for _, op := range ops {
					if op.Err != nil || !op.Result.Allowed {
						t.Fatalf("op %q: %+v, err %v", op.Key, op.Result, op.Err)
					}
				}
			}
			one := []floodgate.Limit{fw}
			decide(floodgate.Op{Key: "apart", Limits: one, Cost: 1, Now: ahead})
			decide(floodgate.Op{Key: "apart", Limits: one, Cost: 1})
			decide(floodgate.Op{Key: "together", Limits: one, Cost: 1, Now: ahead}, floodgate.Op{Key: "together", Limits: one, Cost: 1})
			decide(floodgate.Op{Key: "general", Limits: one, Cost: 1, Now: ahead}, floodgate.Op{Key: "general", Limits: []floodgate.Limit{fw, sl}, Cost: 1})
			for _, key := range []string{"apart", "together", "general"} {
				at, err := c.PExpireTime(ctx, s.Key(key, fw)).Result()
				if err != nil {
					t.Fatal(err)
				}
				if got := at.Milliseconds(); got < end {
					t.Errorf("key %q expires at %d ms, %d ms before its state (%d ms)", key, got, end-got, end)
				}
			}
			// A sliding log's event and a lease taken ahead: their keys live
			// until the event leaves the window, the lease expires.
			cc := floodgate.Limit{Algorithm: floodgate.Concurrency, Quota: 10, Window: time.Second}
			decide(floodgate.Op{Key: "log", Limits: []floodgate.Limit{sl}, Cost: 1, Now: ahead},
				floodgate.Op{Key: "lease", Limits: []floodgate.Limit{cc}, Cost: 1, Lease: "l1", Now: ahead})
			for _, k := range []struct {
				name string
				l    floodgate.Limit
			}{{"log", sl}, {"lease", cc}} {
				keys, err := c.Keys(ctx, "*"+k.name+"*").Result()
				if err != nil {
					t.Fatal(err)
				}
				if len(keys) != 2 {
					t.Fatalf("keys of %q: %q, want 2", k.name, keys)
				}
				want := (ahead + k.l.Window.Microseconds()) / 1000
				for _, key := range keys {
					at, err := c.PExpireTime(ctx, key).Result()
					if err != nil {
						t.Fatal(err)
					}
					if got := at.Milliseconds(); got < want {
						t.Errorf("key %q expires at %d ms, %d ms before its state (%d ms)", key, got, want-got, want)
					}
				}
			}
		})
	}
}
