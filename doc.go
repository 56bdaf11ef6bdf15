// Package floodgate is a distributed rate limiter: one global limit per
// client, enforced across every instance of a service.
//
// # Limits and results
//
// A [Limit] says how much cost a key may spend per window and how it is
// counted ([Algorithm]: fixed window, sliding window log, sliding window
// counter, token bucket, GCRA, concurrency leases). A decision returns a
// [Result]: allowed or not, what remains, when the limit resets and when to
// retry. A denial is a result, not an error; an error means no decision
// could be made.
//
// # Algorithms
//
// Each algorithm is a pure state machine, [Limit.Decide], over a [State], an
// instant in integer microseconds and a cost. Stores hold the states; the
// formulas are in docs/algorithms.md.
//
// # Stores
//
// A [Store] decides batches of [Op] atomically per op. The in-memory store
// (package store/memory) is the embedded default; the Redis store (package
// store/redis) shares state between instances. Every store passes the same
// conformance suite (package storetest).
//
// # Limiter
//
// [Limiter] is the convenient front: [Limiter.Allow], [Limiter.AllowN],
// [Limiter.Peek], and [Limiter.Acquire] / [Limiter.Release] for concurrency
// leases.
package floodgate
