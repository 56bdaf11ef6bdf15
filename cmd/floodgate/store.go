package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/store/memory"
)

// openStore opens the store named by url, as given to --store:
//
//	memory    the embedded in-memory store (the default)
//
// The scheme (the part before "://", or the whole url when it has none)
// picks the store; an unknown scheme is an error listing the known ones.
func openStore(ctx context.Context, url string) (floodgate.Store, error) {
	scheme := url
	if i := strings.Index(url, "://"); i >= 0 {
		scheme = url[:i]
	}
	switch scheme {
	case "memory":
		if url != "memory" && url != "memory://" {
			return nil, fmt.Errorf("store %q: the memory store takes no address or options; use \"memory\"", url)
		}
		return memory.New(memory.Options{}), nil
	case "redis", "rediss", "redis-cluster", "rediss-cluster", "redis-sentinel":
		return openRedis(ctx, url)
	}
	return nil, fmt.Errorf("store %q: unknown scheme %q: want memory", url, scheme)
}
