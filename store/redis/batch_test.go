package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/internal/redistest"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// TestBigBatches feeds random sequences to the store in batches of up to
// three script calls' worth of ops, on few keys, so that many ops of one
// script call, and of consecutive calls, share a key; every result must
// equal the reference's, in order.
func TestBigBatches(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo, func(t *testing.T) {
			t.Parallel()
			for seed := uint64(0); seed < 4; seed++ {
				s := newStore(t, topo)
				rng := rand.New(rand.NewPCG(seed, 7))
				ops := randomOps(rng, 1200, func() []floodgate.Limit {
					ls := make([]floodgate.Limit, 1+rng.IntN(3))
					for i := range ls {
						ls[i] = randomLimit(rng, floodgate.Algorithms[rng.IntN(len(floodgate.Algorithms))])
					}
					return ls
				})
				var ref reference
				ctx := context.Background()
				for i := 0; i < len(ops); {
					n := min(1+rng.IntN(3*redisstore.MaxOpsPerCall), len(ops)-i)
					batch := ops[i : i+n]
					want := make([]floodgate.Op, n)
					for j := range batch {
						want[j] = batch[j]
						want[j].Each = make([]floodgate.Result, len(batch[j].Limits))
						ref.decide(&want[j])
					}
					if err := s.Decide(ctx, batch); err != nil {
						t.Fatalf("ops %d..%d: %v", i, i+n, err)
					}
					for j := range batch {
						if batch[j].Result != want[j].Result {
							t.Fatalf("op %d (batch of %d, key %q limits %v cost %d now %d):\n got %+v\nwant %+v",
								i+j, n, batch[j].Key, batch[j].Limits, batch[j].Cost, batch[j].Now, batch[j].Result, want[j].Result)
						}
						for e := range batch[j].Each {
							if batch[j].Each[e] != want[j].Each[e] {
								t.Fatalf("op %d limit %d: each\n got %+v\nwant %+v", i+j, e, batch[j].Each[e], want[j].Each[e])
							}
						}
					}
					i += n
				}
			}
		})
	}
}

// commandCalls returns the calls of a command from INFO commandstats.
func commandCalls(t *testing.T, c *goredis.Client, cmd string) int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			if err != nil {
				t.Fatalf("commandstats line %q: %v", line, err)
			}
			return n
		}
	}
	return 0
}

// TestOneCallPerGroup counts script calls on a server of its own: one batch
// of n ops on distinct keys is ceil(n / MaxOpsPerCall) FCALL (or EVALSHA),
// and the server's TIME is read once per call.
func TestOneCallPerGroup(t *testing.T) {
	for _, eval := range []bool{false, true} {
		t.Run(fmt.Sprintf("eval=%v", eval), func(t *testing.T) {
			s, c := ownStore(t, eval)
			ctx := context.Background()
			cmd := "fcall"
			if eval {
				cmd = "evalsha"
			}
			l := []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 10, Window: time.Second}}
			// Load the script, so that every call below is one FCALL or EVALSHA.
			if err := s.Decide(ctx, []floodgate.Op{{Key: "warm", Limits: l, Cost: 1}}); err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{1, 2, redisstore.MaxOpsPerCall, redisstore.MaxOpsPerCall + 1, 300} {
				ops := make([]floodgate.Op, n)
				for i := range ops {
					ops[i] = floodgate.Op{Key: "n" + strconv.Itoa(n) + ":" + strconv.Itoa(i), Limits: l, Cost: 1}
				}
				calls, times := commandCalls(t, c, cmd), commandCalls(t, c, "time")
				if err := s.Decide(ctx, ops); err != nil {
					t.Fatal(err)
				}
				want := (n + redisstore.MaxOpsPerCall - 1) / redisstore.MaxOpsPerCall
				if got := commandCalls(t, c, cmd) - calls; got != want {
					t.Errorf("%d ops: %d %s, want %d", n, got, cmd, want)
				}
				if got := commandCalls(t, c, "time") - times; got != want {
					t.Errorf("%d ops: %d TIME, want %d", n, got, want)
				}
				for i := range ops {
					if !ops[i].Result.Allowed || ops[i].Result.Remaining != 9 {
						t.Fatalf("%d ops: op %d: %+v, want allowed with 9 remaining", n, i, ops[i].Result)
					}
				}
			}
		})
	}
}

// TestFailedOpAlone puts ops whose key holds a value of the wrong type in
// the middle of a batch: those ops fail alone (admitted or denied, as a
// cost over the quota is), and the ops around them, on other keys, are
// decided in order, with the server's clock and with explicit instants in
// the same script call. The batch goes once as it is (every op in the short
// form: the script's uniform path) and once with a peek added (its general
// path).
func TestFailedOpAlone(t *testing.T) {
	for _, topo := range topologies {
		for _, peek := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/peek=%v", topo, peek), func(t *testing.T) {
				s := newStore(t, topo)
				ctx := context.Background()
				l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Hour}
				if err := s.Client().LPush(ctx, s.Key("bad", l), "x").Err(); err != nil {
					t.Fatal(err)
				}
				defer s.Client().Del(ctx, s.Key("bad", l))
				ls := []floodgate.Limit{l}
				ops := []floodgate.Op{
					{Key: "good", Limits: ls, Cost: 1},
					{Key: "bad", Limits: ls, Cost: 1},
					{Key: "good", Limits: ls, Cost: 2},
					{Key: "timed", Limits: ls, Cost: 1, Now: 1_700_000_000_000_000},
					{Key: "good", Limits: ls, Cost: 1},
					{Key: "bad", Limits: ls, Cost: 6},
					{Key: "timed", Limits: ls, Cost: 4, Now: 1_700_000_000_000_001},
				}
				if peek {
					ops = append(ops, floodgate.Op{Key: "other", Limits: ls})
				}
				err := s.Decide(ctx, ops)
				for _, i := range []int{1, 5} {
					if err == nil || ops[i].Err == nil || !strings.Contains(ops[i].Err.Error(), "WRONGTYPE") {
						t.Fatalf("decide: %v; bad op %d err %v; want WRONGTYPE", err, i, ops[i].Err)
					}
				}
				for i, want := range map[int]int64{0: 4, 2: 2, 3: 4, 4: 1, 6: 0} {
					if ops[i].Err != nil || !ops[i].Result.Allowed || ops[i].Result.Remaining != want {
						t.Errorf("op %d: %+v, err %v; want allowed with %d remaining", i, ops[i].Result, ops[i].Err, want)
					}
				}
				if n, err := s.Client().LLen(ctx, s.Key("bad", l)).Result(); err != nil || n != 1 {
					t.Errorf("the list under the bad key: length %d, %v; want it untouched", n, err)
				}
			})
		}
	}
}

// TestNoScriptCluster flushes the scripts and functions of every cluster
// master before a batch whose ops span several slots and masters: every call
// is answered NOSCRIPT and sent again with EVAL, or answered that the
// function is not found and sent again once the library is loaded on every
// master, in one more pipeline; every op is decided once.
func TestNoScriptCluster(t *testing.T) {
	for _, eval := range []bool{true, false} {
		t.Run(fmt.Sprintf("eval=%v", eval), func(t *testing.T) {
			s, err := redisstore.New(redisstore.Options{
				Addrs: redistest.SharedCluster(t).Addrs(), Cluster: true, NoFunctions: eval,
				Prefix: fmt.Sprintf("t%d:", rand.Uint64()),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			cc := redistest.SharedCluster(t).Client()
			defer cc.Close()
			ctx := context.Background()
			l := []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Hour}}
			for round := 0; round < 3; round++ {
				err := cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
					if err := c.ScriptFlush(ctx).Err(); err != nil {
						return err
					}
					return c.FunctionFlush(ctx).Err()
				})
				if err != nil {
					t.Fatal(err)
				}
				var ops []floodgate.Op
				for k := 0; k < 20; k++ {
					for j := 0; j < 3; j++ {
						ops = append(ops, floodgate.Op{Key: "ns" + strconv.Itoa(k), Limits: l, Cost: 1})
					}
				}
				if err := s.Decide(ctx, ops); err != nil {
					t.Fatalf("round %d after the flush: %v", round, err)
				}
				for i, op := range ops {
					if want := int64(10 - 3*round - i%3 - 1); !op.Result.Allowed || op.Result.Remaining != want {
						t.Fatalf("round %d op %d (key %s): %+v, want allowed with %d remaining", round, i, op.Key, op.Result, want)
					}
				}
			}
		})
	}
}

// TestManyLimitsInOneCall puts an op with more limits than the short form
// can number before single-limit ops: those ops, whose limits get numbers
// past the short form's range, are sent in the long form and decided the
// same.
func TestManyLimitsInOneCall(t *testing.T) {
	s := newStore(t, "standalone")
	ctx := context.Background()
	many := make([]floodgate.Limit, 1100)
	for i := range many {
		many[i] = floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: int64(10 + i), Window: time.Hour}
	}
	one := []floodgate.Limit{{Algorithm: floodgate.GCRA, Quota: 5, Window: time.Hour}}
	ops := []floodgate.Op{
		{Key: "many", Limits: many, Cost: 1},
		{Key: "one", Limits: one, Cost: 1},
		{Key: "one", Limits: one, Cost: 2, Now: 0},
	}
	if err := s.Decide(ctx, ops); err != nil {
		t.Fatal(err)
	}
	if r := ops[0].Result; !r.Allowed || r.Remaining != 9 {
		t.Errorf("op with %d limits: %+v, want allowed with 9 remaining", len(many), r)
	}
	for i, want := range []int64{4, 2} {
		if r := ops[1+i].Result; !r.Allowed || r.Remaining != want {
			t.Errorf("op %d: %+v, want allowed with %d remaining", 1+i, r, want)
		}
	}
}

// TestTextState reads states in the text form earlier versions wrote ("T",
// "T:N", "T:N:P") as the same states, and writes them back packed.
func TestTextState(t *testing.T) {
	s := newStore(t, "standalone")
	ctx := context.Background()
	const now = int64(1_700_000_000_000_000)
	cases := []struct {
		l  floodgate.Limit
		st floodgate.State
	}{
		{floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Hour}, floodgate.State{T: now - now%3_600_000_000, N: 4}},
		{floodgate.Limit{Algorithm: floodgate.SlidingWindow, Quota: 10, Window: time.Hour}, floodgate.State{T: now - now%3_600_000_000, N: 2, P: 6}},
		{floodgate.Limit{Algorithm: floodgate.TokenBucket, Quota: 10, Window: time.Hour}, floodgate.State{T: now - 1000, N: 5 * 360_000_000}},
		{floodgate.Limit{Algorithm: floodgate.GCRA, Quota: 10, Window: time.Hour}, floodgate.State{T: now + 3*360_000_000}},
	}
	for _, c := range cases {
		t.Run(c.l.Algorithm.String(), func(t *testing.T) {
			text := fmt.Sprintf("%d:%d:%d", c.st.T, c.st.N, c.st.P)
			switch c.l.Algorithm {
			case floodgate.GCRA:
				text = fmt.Sprintf("%d", c.st.T)
			case floodgate.FixedWindow, floodgate.TokenBucket:
				text = fmt.Sprintf("%d:%d", c.st.T, c.st.N)
			}
			key := s.Key("text", c.l)
			if err := s.Client().Set(ctx, key, text, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			ops := []floodgate.Op{{Key: "text", Limits: []floodgate.Limit{c.l}, Cost: 1, Now: now}}
			want := ops[0]
			ref := reference{states: map[string]floodgate.State{"text|" + c.l.String(): c.st}}
			ref.decide(&want)
			for round := 0; round < 2; round++ {
				if err := s.Decide(ctx, ops); err != nil {
					t.Fatal(err)
				}
				if ops[0].Result != want.Result {
					t.Fatalf("round %d, state %q: got %+v, want %+v", round, text, ops[0].Result, want.Result)
				}
				raw, err := s.Client().Get(ctx, key).Result()
				if err != nil {
					t.Fatal(err)
				}
				if raw[0] != 1 {
					t.Fatalf("round %d: state written as %q, want the packed form", round, raw)
				}
				want = ops[0]
				ref.decide(&want)
			}
		})
	}
}
