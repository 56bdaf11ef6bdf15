package redistest

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestClusterFailover kills a master of a cluster with one replica per
// master and a 1s node timeout, and checks that the replica is promoted
// automatically, reporting how long it took. Slow: about 3s plus the start.
func TestClusterFailover(t *testing.T) {
	begin := time.Now()
	c := StartCluster(t, 3, 1, NodeTimeout(time.Second))
	t.Logf("cluster of 3 masters and 3 replicas started and in sync in %v", time.Since(begin).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	victim, via := c.Nodes[0], c.Nodes[1]
	replica, err := c.ReplicaOf(ctx, victim, via)
	if err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	killed := time.Now()
	var last string
	for {
		nodes, err := c.View(ctx, via)
		if err != nil {
			t.Fatal(err)
		}
		var line []string
		promoted := false
		for _, n := range nodes {
			if n.Addr == victim.Addr || n.Addr == replica.Addr {
				line = append(line, n.Addr+" "+strings.Join(n.Flags, ","))
			}
			if n.Addr == replica.Addr && n.Has("master") && len(n.Slots) > 0 {
				promoted = true
			}
		}
		if s := strings.Join(line, "; "); s != last {
			t.Logf("%v after the kill: %s", time.Since(killed).Round(10*time.Millisecond), s)
			last = s
		}
		if promoted {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replica %s of the killed master %s not promoted after %v", replica.Addr, victim.Addr, time.Since(killed))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
