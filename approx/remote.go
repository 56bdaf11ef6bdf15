package approx

import (
	"context"

	"github.com/floodgate/floodgate"
)

// Counter is one windowed counter of a key under a limit, as a [Store]
// syncs it with its [Remote]: the cost admitted for Key under Limit in the
// aligned window that starts at Start.
type Counter struct {
	// Key is the client key, as in [floodgate.Op].
	Key string
	// Limit is the limit counted (FixedWindow or SlidingWindow). The remote
	// keeps one counter per key, limit and window start.
	Limit floodgate.Limit
	// Start is the window's start, in microseconds since the Unix epoch by
	// the remote's clock; a multiple of Limit.Window.
	Start int64
	// Delta is the cost to add to the counter; 0 only reads it.
	Delta int64
	// ExpireAt is when the remote may forget the counter, in microseconds
	// since the Unix epoch by the remote's clock. Ignored when Delta is 0.
	ExpireAt int64

	// Total is set by the remote: the counter's value once Delta is added,
	// the sum of every instance's deltas so far.
	Total int64
}

// Remote is the shared counter backend of a [Store]. The Redis store
// (store/redis) implements it.
type Remote interface {
	// SyncCounters adds each counter's Delta to the shared counter (each
	// addition atomic on its own), sets each counter's Total, and returns
	// the remote's clock in microseconds since the Unix epoch, read during
	// the same round trip. On error no Total may be trusted, and deltas may
	// or may not have been added.
	SyncCounters(ctx context.Context, batch []Counter) (now int64, err error)
}
