package approx

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
)

// unused is a remote that no test here reaches: these tests look at the
// local table only (the remote's own tests use Redis).
type unused struct{ t *testing.T }

func (u unused) SyncCounters(context.Context, []Counter) (int64, error) {
	u.t.Error("the remote was called")
	return 0, errors.New("unused")
}

// TestTableFullLeavesNothing fills a shard's shared entries and all but one
// of its own, then decides an op of two limits on a new key of that shard:
// its first limit takes the last own entry, its second finds no room, and
// the op fails with ErrTableFull. The entry made for the first limit holds
// nothing and goes at the next collect, instead of holding its place until
// the same key and limit come back.
func TestTableFullLeavesNothing(t *testing.T) {
	s, err := New(unused{t}, Options{SyncInterval: -1, MaxKeys: 4 * shardCount})
	if err != nil {
		t.Fatal(err)
	}
	const key = "new"
	sh := s.shardOf(key)
	hour := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 10, Window: time.Hour}
	now := time.Now().UnixMicro()
	for i := 0; len(sh.m) < s.perShard-1; i++ {
		e := &entry{cur: window{start: now / 3_600_000_000 * 3_600_000_000}, prev: window{start: noWindow}}
		sh.m[entryKey{"other" + string(rune('a'+i)), hour}] = e
	}
	for i := range maxSharedLimits {
		l := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: int64(100 + i), Window: time.Hour}
		sh.shared[l] = &entry{cur: window{start: now / 3_600_000_000 * 3_600_000_000}, prev: window{start: noWindow}}
	}
	before := len(sh.m)
	second := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 7, Window: time.Hour}
	ops := []floodgate.Op{{Key: key, Limits: []floodgate.Limit{hour, second}, Cost: 1, Now: now}}
	if err := s.Decide(context.Background(), ops); !errors.Is(err, ErrTableFull) {
		t.Fatalf("decide: %v, want ErrTableFull", err)
	}
	if len(sh.m) != before+1 {
		t.Fatalf("own entries %d, want %d (the first limit's)", len(sh.m), before+1)
	}
	s.collect(now)
	if _, ok := sh.m[entryKey{key, hour}]; ok || len(sh.m) != before {
		t.Errorf("after collect: %d own entries, the failed op's still there: %v; want %d and gone", len(sh.m), ok, before)
	}
}
