// Package approx is floodgate's approximate consistency: each instance
// counts locally and syncs with a shared store every sync interval,
// deciding from the last known global count plus its own count since.
// Rules with consistency: approximate are decided by a [Store]; strict
// rules go to the strict store.
//
// # Model
//
// For each key and limit a [Store] keeps, per aligned window, the global
// total read at the last sync (every instance's cost pushed so far, its
// own included) and the cost it admitted since. A decision is the core's
// algorithm ([floodgate.Apply]) over the state whose count is their sum, so
// results (Remaining, ResetAfter, RetryAfter) have the same meaning as a
// strict store's, and one instance alone decides exactly as a strict store
// does. Decisions never wait on the network; they lock one shard of a
// local table and allocate nothing for a known key.
//
// Every [Options.SyncInterval] (default 100ms) a background goroutine sends,
// in one call to the [Remote] (one pipelined round trip per Redis server),
// each counter's delta (INCRBY with an expiry) and reads back its total,
// together with the remote's clock (Redis TIME). The store aligns windows by
// the remote's clock: it keeps the offset between its local clock and the
// remote's, learned at each sync, so that instances agree on window
// boundaries within a round trip.
//
// # Algorithms
//
// Only fixed_window and sliding_window (the counter) are supported: their
// state is a cost per aligned window, and instances' costs add up into the
// same window counters whatever order they arrive in. A token bucket's or
// GCRA's state is clamped by refill at each decision, so deltas taken at
// different instants do not add; a sliding window log keeps every event,
// and concurrency leases must be released one by one. Ops with those get an
// error wrapping [floodgate.ErrInvalid]; see [Supports].
//
// # Error bound
//
// With N instances, sync interval I and Δ = I + the longest sync round
// trip, when every instance decides the key from the start of a window, the
// cost admitted in the window is at most Quota plus what the other
// instances admitted within 2Δ of the last admission; with every instance
// admitting r per second, Quota + (N−1)·r·2Δ. An instance that first sees
// the key late in a window may add what it admits in its first Δ. Whatever
// the rates, each instance admits at most Quota per window, so the total
// never exceeds N·Quota: the worst case, reached when every instance bursts
// its whole quota before any sync. docs/approximate.md derives the bound
// and gives measured figures.
//
// # Memory
//
// The local table holds at most [Options.MaxKeys] entries. A key that
// finds its shard of the table full shares one entry per limit with the
// other keys that found it full: they are limited together, to one quota
// per window on this instance, counted locally and never synced, which
// admits less, never more, and keeps the worst case below. An op that would
// need more than 1,024 such shared entries in one shard fails with
// [ErrTableFull].
//
// # When the remote is unreachable
//
// Decisions go on from local counts: the last known global totals plus
// what this instance admitted since. Failed syncs keep their deltas and
// push them when the remote is back. While it is unreachable each instance
// admits up to a whole quota per window on its own (at most N·Quota in all).
package approx
