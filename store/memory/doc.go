// Package memory is floodgate's embedded default [floodgate.Store]: every
// key's state lives in this process, in a table of bounded size, decided
// under one mutex per shard.
//
//	s := memory.New(memory.Options{})
//	defer s.Close()
//	lim := floodgate.New(s)
//
// # Layout
//
// The table is split in [Options.Shards] shards, each under its own mutex;
// there is no global lock on the decision path. A key is hashed (seeded
// hash/maphash) to 64 bits and the top bits pick its shard, so every limit
// of one op lives in one shard and a decision over several limits is atomic
// under one lock. An entry, one per key and limit, is identified by a 64-bit
// mix of the key hash and the limit: key strings are not stored. Two
// distinct (key, limit) pairs share an entry with probability about n²/2^65
// for n entries (under 3·10⁻⁸ at a million entries); such a pair would share
// one state. Seeds are random per store, so collisions cannot be aimed at.
//
// FixedWindow, TokenBucket and GCRA states are two integers in an
// open-addressing table without pointers (24 bytes a slot, half to three
// quarters full: about 40 bytes per key at a million keys), updated in place;
// deciding on a key already held allocates nothing. SlidingWindow states
// live in a map of three integers, also allocation-free once held.
// SlidingWindowLog and Concurrency states hold their events in a map of
// slices, and allocate as their logs grow.
//
// # Capacity and overflow
//
// The table holds at most [Options.Capacity] entries, split evenly between
// shards, however many distinct keys arrive. An entry whose state is fully
// replenished ([floodgate.Limit.ExpiresAt] <= now) is equivalent to no entry
// and may be dropped at any time: a janitor goroutine sweeps one shard at a
// time, the whole table once per [Options.SweepInterval], and a full shard is
// swept when a new key needs room (at most once per Capacity/Shards/16 keys
// that found it full, or per SweepInterval/8). A live entry is never
// evicted: a key over its limit stays over its limit, however many other
// keys arrive.
//
// A new key that finds its shard full of live entries gets, by default
// ([OverflowShare]), the overflow state of each of its limits: one state per
// limit shared by every such key, so that spraying keys buys no more than one
// quota per limit in total. When the key later finds room, its own entry
// starts from a copy of the overflow state while that is live, so the debt
// it ran up there follows it. With [OverflowDeny] such keys are denied
// instead, with RetryAfter equal to the limit's Window. Keys already held are
// decided as usual either way.
//
// # Clock
//
// Reading the clock is a large share of a decision (time.Now costs about
// 38 ns and time.Since about 24 ns on a typical VM, against about 70 ns for
// a whole decision). By default a goroutine stores the time every
// [Options.ClockResolution] (1ms) and a decision reads it with one atomic
// load. Every decision therefore sees a time up to one resolution behind the
// monotonic clock (more if the ticker goroutine is scheduled late on a
// saturated machine). All decisions of a store use the same clock and it
// never goes backwards, so every algorithm's guarantee holds exactly in the
// store's time; against real time, a window may begin or end up to one
// resolution late. The ticker stops after one idle tick and decisions read the
// monotonic clock themselves until it runs again, so an idle store costs no
// wake-ups. [PreciseClock] reads the monotonic clock on every decision
// instead; any [Options.Clock] may be set. An op with a non-zero
// [floodgate.Op.Now] is decided at that instant.
//
// The clock is read under the shard's lock, so the instants decided in one
// shard never go backwards (a fixed window would otherwise restart when a
// late reader took the lock after an early one).
//
// Ops with explicit instants (tests) need not share one timeline; the
// janitor judges a shard's entries at the lowest explicit instant it has
// decided, so it never drops an entry that is live at the instants tests
// pass.
//
// # Decisions
//
// [Store.Decide] checks its context once per batch. An invalid op gets an
// error wrapping [floodgate.ErrInvalid] and the others are still decided;
// validated limits are cached (by their full value) so the common case does
// not validate again. One FixedWindow, TokenBucket or GCRA limit on a key
// held is decided in place with the core's [floodgate.Prepared], kept with
// the cached limit, without allocating; everything else goes through
// [floodgate.Apply]. The storetest conformance suite and its property tests
// check both paths.
package memory
