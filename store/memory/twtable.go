package memory

import "math/bits"

// twTable holds the fixed-size entries (FixedWindow, TokenBucket, GCRA) of
// one shard: an open-addressing hash table with linear probing, no pointers,
// 24 bytes a slot, kept between half and three quarters full. Unlike a Go
// map it updates a found entry in place, without a second lookup.
type twTable struct {
	slots []twSlot
	count int
}

// twSlot is one entry; id 0 marks an empty slot (entry ids are never 0).
type twSlot struct {
	id  uint64
	exp int64 // the state is fresh from this instant on
	n   int64
}

const minTableSize = 8

// nonZero maps the id 0 to 1, so that 0 can mark empty slots.
func nonZero(id uint64) uint64 {
	if id == 0 {
		return 1
	}
	return id
}

// home returns the slot an id hashes to.
func (t *twTable) home(id uint64) int {
	hi, _ := bits.Mul64(id, uint64(len(t.slots)))
	return int(hi)
}

// find returns the index of id's slot, or -1.
func (t *twTable) find(id uint64) int {
	if len(t.slots) == 0 {
		return -1
	}
	i := t.home(id)
	for {
		s := &t.slots[i]
		if s.id == id {
			return i
		}
		if s.id == 0 {
			return -1
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

// insert adds id, which must not be present.
func (t *twTable) insert(id uint64, exp, n int64) {
	if (t.count+1)*4 > len(t.slots)*3 {
		t.grow()
	}
	i := t.home(id)
	for t.slots[i].id != 0 {
		if i++; i == len(t.slots) {
			i = 0
		}
	}
	t.slots[i] = twSlot{id: id, exp: exp, n: n}
	t.count++
}

func (t *twTable) grow() {
	old := t.slots
	t.slots = make([]twSlot, max(minTableSize, len(old)+len(old)/2))
	t.count = 0
	for _, s := range old {
		if s.id != 0 {
			t.insert(s.id, s.exp, s.n)
		}
	}
}

// removeAt empties slot i, shifting back the entries of its probe run so
// that every entry stays reachable from its home slot.
func (t *twTable) removeAt(i int) {
	n := len(t.slots)
	j := i
	for {
		if j++; j == n {
			j = 0
		}
		if t.slots[j].id == 0 {
			break
		}
		k := t.home(t.slots[j].id)
		// The entry at j may move to the hole at i only if its home is not
		// cyclically within (i, j].
		if (i <= j && i < k && k <= j) || (i > j && (i < k || k <= j)) {
			continue
		}
		t.slots[i] = t.slots[j]
		i = j
	}
	t.slots[i] = twSlot{}
	t.count--
}

// sweep removes the entries expired at now and returns how many.
func (t *twTable) sweep(now int64) int {
	removed := 0
	for i := 0; i < len(t.slots); {
		if s := &t.slots[i]; s.id != 0 && s.exp <= now {
			t.removeAt(i)
			removed++
			continue // an entry may have moved into slot i
		}
		i++
	}
	return removed
}
