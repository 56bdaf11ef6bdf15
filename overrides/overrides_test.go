package overrides_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/overrides"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

var thousand = []floodgate.Limit{{Algorithm: floodgate.TokenBucket, Quota: 1000, Window: time.Minute}}

// clock is a settable time for expiries.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// Two tables on one backend, as two instances on one Redis: an override put
// through one applies in the other within its polling interval; a delete
// too; an expired one stops applying at once and is removed.
func TestTables(t *testing.T) {
	ctx := context.Background()
	b := overrides.NewMemory()
	clk := &clock{t: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)}
	opts := overrides.Options{Interval: 20 * time.Millisecond, Now: clk.now}
	a, other := overrides.Open(ctx, b, opts), overrides.Open(ctx, b, opts)
	defer a.Close()
	defer other.Close()
	if _, ok := a.Lookup("api", "api|api_key=k1"); ok {
		t.Fatal("an override in an empty table")
	}
	o := overrides.Override{Domain: "api", Key: "api|api_key=k1", Rule: "api.api_key", Limits: thousand, SetAt: clk.now()}
	if err := a.Put(ctx, o); err != nil {
		t.Fatal(err)
	}
	if l, ok := a.Lookup("api", o.Key); !ok || len(l) != 1 || l[0] != thousand[0] {
		t.Fatalf("right after Put, the same table: %v %v", l, ok)
	}
	took := waitFor(t, "the other table sees the override", func() bool { _, ok := other.Lookup("api", o.Key); return ok })
	t.Logf("seen by the other table after %v (interval 20ms)", took)
	if _, ok := other.Lookup("web", o.Key); ok {
		t.Error("an override of domain api applies in domain web")
	}
	if list := other.List(); len(list) != 1 || list[0].Rule != "api.api_key" || !list[0].SetAt.Equal(clk.now()) {
		t.Errorf("list %+v", list)
	}
	if found, err := other.Delete(ctx, "api", o.Key); err != nil || !found {
		t.Fatalf("delete: %v %v", found, err)
	}
	waitFor(t, "the first table sees the delete", func() bool { _, ok := a.Lookup("api", o.Key); return !ok })
	if found, err := a.Delete(ctx, "api", o.Key); err != nil || found {
		t.Errorf("a second delete: %v %v, want not found", found, err)
	}

	o.Expires = clk.now().Add(time.Hour)
	if err := a.Put(ctx, o); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other table sees the expiring override", func() bool { _, ok := other.Lookup("api", o.Key); return ok })
	clk.add(time.Hour)
	if _, ok := a.Lookup("api", o.Key); ok {
		t.Error("an expired override applies")
	}
	// Kept in the backend for CleanupGrace, for instances whose clocks run
	// behind; then removed.
	time.Sleep(60 * time.Millisecond)
	if fields, _, _ := b.Overrides(ctx); len(fields) != 1 {
		t.Errorf("an override expired for less than the grace: %d in the backend, want it kept", len(fields))
	}
	clk.add(overrides.CleanupGrace)
	waitFor(t, "the expired override is removed from the backend", func() bool {
		fields, _, _ := b.Overrides(ctx)
		return len(fields) == 0
	})
	if list := other.List(); len(list) != 0 {
		waitFor(t, "the other table drops the expired override", func() bool { return len(other.List()) == 0 })
	}
}

func TestBadOverrides(t *testing.T) {
	ctx := context.Background()
	b := overrides.NewMemory()
	tab := overrides.Open(ctx, b, overrides.Options{Interval: time.Hour})
	defer tab.Close()
	for _, o := range []overrides.Override{
		{Key: "k", Limits: thousand},
		{Domain: "api", Limits: thousand},
		{Domain: "api", Key: "k"},
		{Domain: "api", Key: "k", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow}}},
	} {
		if err := tab.Put(ctx, o); err == nil {
			t.Errorf("Put(%+v): no error", o)
		}
	}
	// A field that does not decode is skipped, the others are read.
	if err := b.PutOverride(ctx, "api\x1fjunk", "{not json"); err != nil {
		t.Fatal(err)
	}
	if err := tab.Put(ctx, overrides.Override{Domain: "api", Key: "good", Limits: thousand}); err != nil {
		t.Fatal(err)
	}
	if list := tab.List(); len(list) != 1 || list[0].Key != "good" {
		t.Errorf("list %+v, want the good override only", list)
	}
}

// The engine decides a descriptor with an override under the override's
// limits, and the others under their rule's.
func TestEngine(t *testing.T) {
	set, err := rules.Parse("o.yaml", []byte(`
domain: api
descriptors:
  - key: api_key
    rate_limit: {requests_per_unit: 2, unit: hour}
  - key: free
    rate_limit: {unlimited: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tab := overrides.Open(ctx, overrides.NewMemory(), overrides.Options{})
	defer tab.Close()
	st := memory.New(memory.Options{})
	defer st.Close()
	e := engine.NewWithOptions(st, engine.Static(set), engine.Options{Overrides: tab})
	entries := func(k, v string) [][]rules.Entry { return [][]rules.Entry{{{Key: k, Value: v}}} }
	admitted := func(v string, n int) int {
		got := 0
		for range n {
			sts, code, err := e.Decide(ctx, "api", entries("api_key", v), nil)
			if err != nil {
				t.Fatal(err)
			}
			if code == engine.OK {
				got++
			}
			if v == "vip" && !sts[0].Match.Override {
				t.Errorf("vip decided without Match.Override")
			}
		}
		return got
	}
	m, _ := e.Match("api", entries("api_key", "vip")[0])
	if err := tab.Put(ctx, overrides.Override{Domain: "api", Key: m.Key, Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 5, Window: time.Hour}}}); err != nil {
		t.Fatal(err)
	}
	if got := admitted("vip", 8); got != 5 {
		t.Errorf("vip with an override of 5 an hour: %d of 8 admitted", got)
	}
	if got := admitted("plain", 8); got != 2 {
		t.Errorf("plain under the rule's 2 an hour: %d of 8 admitted", got)
	}
	if m, _ := e.Match("api", entries("api_key", "vip")[0]); !m.Override || m.Limits[0].Quota != 5 {
		t.Errorf("Match: %+v", m)
	}
	// An override never gives limits to an unlimited rule.
	free, _ := e.Match("api", entries("free", "x")[0])
	if err := tab.Put(ctx, overrides.Override{Domain: "api", Key: free.Key, Limits: thousand}); err != nil {
		t.Fatal(err)
	}
	if m, _ := e.Match("api", entries("free", "x")[0]); m.Override || !m.Unlimited || !strings.HasPrefix(free.Key, "api|") {
		t.Errorf("unlimited rule with an override: %+v", m)
	}
}

// BenchmarkLookup: the cost a decision pays, with no override, and with
// 1,000 overrides, for a key without one and a key with one.
func BenchmarkLookup(b *testing.B) {
	ctx := context.Background()
	empty := overrides.Open(ctx, overrides.NewMemory(), overrides.Options{Interval: time.Hour})
	defer empty.Close()
	full := overrides.Open(ctx, overrides.NewMemory(), overrides.Options{Interval: time.Hour})
	defer full.Close()
	for i := range 1000 {
		if err := full.Put(ctx, overrides.Override{Domain: "api", Key: "api|api_key=k" + strconv.Itoa(i), Limits: thousand}); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		tab  *overrides.Table
		key  string
	}{{"none", empty, "api|api_key=k7"}, {"miss", full, "api|api_key=other"}, {"hit", full, "api|api_key=k7"}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.tab.Lookup("api", c.key)
			}
		})
	}
}

// An override renewed between an instance's read and its cleanup is not
// removed: the cleanup deletes only the value it read.
func TestCleanupSparesRenewed(t *testing.T) {
	ctx := context.Background()
	b := overrides.NewMemory()
	if err := b.PutOverride(ctx, "api\x1fk", "old"); err != nil {
		t.Fatal(err)
	}
	if err := b.PutOverride(ctx, "api\x1fk", "renewed"); err != nil {
		t.Fatal(err)
	}
	if found, err := b.DeleteOverride(ctx, "api\x1fk", "old"); err != nil || found {
		t.Errorf("compare-and-delete of a renewed value: %v %v, want not deleted", found, err)
	}
	if found, _ := b.DeleteOverride(ctx, "api\x1fk", "renewed"); !found {
		t.Error("compare-and-delete of the value read: not deleted")
	}
}

// Under an approximate store, an override the approximate store could not
// count (a token bucket) is ignored: the rule's own limits apply.
func TestApproximateOverrideIgnored(t *testing.T) {
	set, err := rules.Parse("a.yaml", []byte(`
domain: api
descriptors:
  - key: region
    consistency: approximate
    rate_limit: {requests_per_unit: 3, unit: hour}
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tab := overrides.Open(ctx, overrides.NewMemory(), overrides.Options{})
	defer tab.Close()
	st, apx := memory.New(memory.Options{}), memory.New(memory.Options{})
	defer st.Close()
	defer apx.Close()
	e := engine.NewWithOptions(st, engine.Static(set), engine.Options{Overrides: tab, Approximate: apx, OnStoreError: rules.FailOpen})
	desc := [][]rules.Entry{{{Key: "region", Value: "eu"}}}
	m, _ := e.Match("api", desc[0])
	if err := tab.Put(ctx, overrides.Override{Domain: "api", Key: m.Key, Limits: thousand}); err != nil {
		t.Fatal(err)
	}
	sts, _, err := e.Decide(ctx, "api", desc, nil)
	if err != nil {
		t.Fatalf("an approximate rule with a token bucket override: %v", err)
	}
	if sts[0].Match.Override || sts[0].Match.Limits[0].Quota != 3 {
		t.Errorf("match %+v: want the rule's own limit", sts[0].Match)
	}
	// A sliding window override applies.
	sw := []floodgate.Limit{{Algorithm: floodgate.SlidingWindow, Quota: 50, Window: time.Minute}}
	if err := tab.Put(ctx, overrides.Override{Domain: "api", Key: m.Key, Limits: sw}); err != nil {
		t.Fatal(err)
	}
	if sts, _, _ := e.Decide(ctx, "api", desc, nil); !sts[0].Match.Override || sts[0].Match.Limits[0].Quota != 50 {
		t.Errorf("a sliding window override of an approximate rule: %+v", sts[0].Match)
	}
}
