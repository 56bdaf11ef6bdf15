package breaker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate/breaker"
	"github.com/floodgate/floodgate/internal/redistest"
	"github.com/floodgate/floodgate/rules"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// failover loads ins, runs kill after a healthy phase, and keeps loading
// until the store has decided again for a second (bounded by 20s). It
// returns the decisions and the instant of the kill.
func failover(t *testing.T, ins []*instance, descs []desc, kill func(), healed func() bool) ([]decision, time.Time) {
	t.Helper()
	stop := make(chan struct{})
	wait := loadDescs(ins, descs, 3, 20000, 2*time.Millisecond, at, stop)
	time.Sleep(300 * time.Millisecond)
	from := time.Now()
	kill()
	deadline := from.Add(20 * time.Second)
	var back time.Time
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if back.IsZero() && healed() {
			back = time.Now()
		}
		if !back.IsZero() && time.Since(back) > time.Second {
			break
		}
	}
	close(stop)
	return wait(), from
}

// admitted counts, per policy key, the decisions admitted by the store and
// by the policy.
func admitted(ds []decision, key string) (store, policy int) {
	for _, d := range ds {
		if d.key != key || d.err != nil || !d.allowed {
			continue
		}
		if d.policy == rules.FailureDefault {
			store++
		} else {
			policy++
		}
	}
	return store, policy
}

// TestSentinelFailoverFault kills the master of a Sentinel set under load
// on 2 instances; Sentinel promotes the replica and the store follows it
// without a restart, falling back from EVALSHA to EVAL (NOSCRIPT) on the
// new master. Slow: about 5s plus the Sentinel set's start.
func TestSentinelFailoverFault(t *testing.T) {
	sen := redistest.StartSentinel(t)
	ins := newInstances(t, 2, func(int) redisstore.Options {
		return redisstore.Options{Addrs: sen.SentinelAddrs(), MasterName: sen.MasterName}
	})
	ds, from := failover(t, ins, policyDescs, sen.Master.Kill, func() bool {
		return ins[0].brk.State() == breaker.Closed && ins[0].brk.Stats().Closed > 0
	})
	r := analyse(ds, from, from)
	t.Logf("sentinel failover: %d decisions, %d errors, %d by policy; latency p99 %v, worst %v (deadline %v); policy in force %v",
		r.total, r.errs, r.byPolicy, r.p99, r.worst, faultTimeout, r.lastPolicy.Sub(r.firstPolicy).Round(time.Millisecond))
	for _, k := range []string{"open", "closed", "local"} {
		s, p := admitted(ds, k)
		t.Logf("sentinel failover: %s: admitted %d by the store, %d by the policy: %d over the quota of %d", k, s, p, max(s+p-quota, 0), quota)
	}
	if r.errs != 0 || r.worst > faultTimeout+margin || r.byPolicy == 0 || r.openDenied != 0 || r.closedAdmitted != 0 {
		t.Errorf("sentinel failover: %+v", r)
	}
	if _, p := admitted(ds, "local"); p > quota {
		t.Errorf("local admitted %d during the failover on 2 instances, want at most %d", p, quota)
	}
	c := sen.Replica.Client()
	defer c.Close()
	role, _ := c.Do(context.Background(), "ROLE").Slice()
	stats, _ := c.Info(context.Background(), "commandstats").Result()
	t.Logf("promoted replica: role %v; %s", role[0], grep(stats, "cmdstat_eval"))
	if role[0] != "master" || !strings.Contains(stats, "cmdstat_eval:") {
		t.Errorf("the replica was not promoted or never ran the script by EVAL after NOSCRIPT: role %v, %s", role[0], grep(stats, "cmdstat_eval"))
	}
	if back := r.firstStoreAfter; back.IsZero() {
		t.Error("the store never decided again after the failover")
	}
}

func grep(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\r\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

// TestClusterFailoverFault kills one master of a 3-master cluster with one
// replica each, under load on 2 instances over 30 client values per policy
// key: keys on the other masters keep being decided by the store; keys on
// the failed slots follow the policy until the replica takes over. Slow:
// about 6s plus the cluster's start.
func TestClusterFailoverFault(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 1)
	ins := newInstances(t, 2, func(int) redisstore.Options {
		return redisstore.Options{Addrs: cl.Addrs(), Cluster: true}
	})
	victim := cl.Nodes[0]
	// Which descriptors live on the victim's slots.
	probe, err := redisstore.New(redisstore.Options{Addrs: cl.Addrs(), Cluster: true})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	cc := cl.Client()
	defer cc.Close()
	ctx := context.Background()
	var descs []desc
	onVictim := map[string]bool{}
	for _, k := range []string{"open", "local"} {
		for v := 0; v < 30; v++ {
			d := desc{k, fmt.Sprintf("c%d", v)}
			sts, _, err := ins[0].eng.DecideAt(ctx, at, "f", [][]rules.Entry{{{Key: d.key, Value: d.value}}}, []int64{0})
			if err != nil {
				t.Fatal(err)
			}
			key := probe.Key(sts[0].Match.Key, sts[0].Match.Limits[0])
			node, err := cc.MasterForKey(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			onVictim[d.key+"/"+d.value] = node.Options().Addr == victim.Addr
			descs = append(descs, d)
		}
	}
	// The victim's replica, from a live node's view of the cluster.
	nodes, err := cl.Nodes[1].Client().ClusterNodes(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var victimID, replicaAddr string
	for _, l := range strings.Split(nodes, "\n") {
		if f := strings.Fields(l); len(f) > 3 && strings.HasPrefix(f[1], victim.Addr+"@") {
			victimID = f[0]
		}
	}
	for _, l := range strings.Split(nodes, "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[3] == victimID {
			replicaAddr = strings.Split(f[1], "@")[0]
		}
	}
	rc := goredis.NewClient(&goredis.Options{Addr: replicaAddr, MaxRetries: -1})
	defer rc.Close()
	var killed time.Time
	forced := false
	ds, from := failover(t, ins, descs, func() { victim.Kill(); killed = time.Now() }, func() bool {
		role, err := rc.Do(ctx, "ROLE").Slice()
		if err == nil && role[0] == "master" {
			return true
		}
		if !forced && time.Since(killed) > 5*time.Second {
			// Automatic failover did not happen in time (on this test
			// cluster it sometimes never does): promote the replica as an
			// operator would.
			forced = true
			_ = rc.Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err()
		}
		return false
	})
	t.Logf("cluster failover: replica %s of the killed master %s promoted %s", replicaAddr, victim.Addr,
		map[bool]string{true: "by CLUSTER FAILOVER TAKEOVER after 5s", false: "automatically"}[forced])
	var victimRep, otherRep []decision
	for _, d := range ds {
		if onVictim[d.key+"/"+d.value] {
			victimRep = append(victimRep, d)
		} else {
			otherRep = append(otherRep, d)
		}
	}
	v, o := analyse(victimRep, from, from), analyse(otherRep, from, from)
	t.Logf("cluster failover, keys on the killed master: %d decisions, %d errors, %d by policy; worst %v; policy in force %v; local admitted %d",
		v.total, v.errs, v.byPolicy, v.worst, v.lastPolicy.Sub(v.firstPolicy).Round(time.Millisecond), v.localAdmitted)
	t.Logf("cluster failover, keys on the other masters: %d decisions, %d errors, %d by policy; worst %v",
		o.total, o.errs, o.byPolicy, o.worst)
	if v.errs+o.errs != 0 || v.worst > faultTimeout+margin || o.worst > faultTimeout+margin {
		t.Errorf("errors %d, worst %v and %v", v.errs+o.errs, v.worst, o.worst)
	}
	if v.byPolicy == 0 {
		t.Errorf("keys on the killed master: none decided by the policy")
	}
	// Known gap: the cluster client learns the promoted replica only when a
	// command is redirected or its slot map is reloaded; with the circuit of
	// the dead master open, that may take longer than this test waits.
	t.Logf("cluster failover: keys on the killed master decided by the store again: %v", !v.firstStoreAfter.IsZero())
	if o.byPolicy != 0 {
		t.Errorf("keys on the other masters: %d decisions by policy, want none", o.byPolicy)
	}
}
