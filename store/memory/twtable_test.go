package memory

import (
	"math/rand/v2"
	"testing"
)

// TestTwTable drives the table with random inserts, updates, removals and
// sweeps (with ids crowded into few home slots, so probe runs wrap) and
// checks it against a Go map.
func TestTwTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, idSpace := range []uint64{40, 1000, 1 << 62} {
		var tab twTable
		ref := map[uint64][2]int64{}
		for step := range 100_000 {
			id := nonZero(rng.Uint64N(idSpace) << (64 - 10)) // ids share their top bits
			switch op := rng.IntN(10); {
			case op < 5:
				exp, n := rng.Int64N(1000), rng.Int64N(10)
				if i := tab.find(id); i >= 0 {
					tab.slots[i].exp, tab.slots[i].n = exp, n
				} else {
					tab.insert(id, exp, n)
				}
				ref[id] = [2]int64{exp, n}
			case op < 9:
				if i := tab.find(id); i >= 0 {
					tab.removeAt(i)
				}
				delete(ref, id)
			default:
				now := rng.Int64N(200)
				want := 0
				for k, v := range ref {
					if v[0] <= now {
						delete(ref, k)
						want++
					}
				}
				if got := tab.sweep(now); got != want {
					t.Fatalf("step %d: sweep removed %d, want %d", step, got, want)
				}
			}
			if tab.count != len(ref) {
				t.Fatalf("step %d: count %d, want %d", step, tab.count, len(ref))
			}
			if step%97 == 0 {
				for k, v := range ref {
					i := tab.find(k)
					if i < 0 || tab.slots[i].exp != v[0] || tab.slots[i].n != v[1] {
						t.Fatalf("step %d: id %x lost or wrong (index %d)", step, k, i)
					}
				}
			}
		}
	}
}
