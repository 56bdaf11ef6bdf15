package redis

import "testing"

// TestKeySlot checks the slot function against slots Redis Cluster gives
// (CLUSTER KEYSLOT) for these keys.
func TestKeySlot(t *testing.T) {
	for _, c := range []struct {
		key  string
		slot uint16
	}{
		{"123456789", 12739},
		{"foo", 12182},
		{"bar", 5061},
		{"user:1000", 1649},
	} {
		if got := keySlot(c.key); got != c.slot {
			t.Errorf("keySlot(%q) = %d, want %d", c.key, got, c.slot)
		}
	}
}
