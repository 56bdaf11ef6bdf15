package main

import (
	"context"

	"github.com/floodgate/floodgate"
	redisstore "github.com/floodgate/floodgate/store/redis"
)

// openRedis opens the Redis store named by url (redis://, rediss://,
// redis-cluster://, rediss-cluster:// or redis-sentinel://; see
// redisstore.ParseURL). It does not contact Redis, so serve starts while
// Redis is down and its decisions fail until Redis is back.
func openRedis(_ context.Context, url string) (floodgate.Store, error) {
	opts, err := redisstore.ParseURL(url)
	if err != nil {
		return nil, err
	}
	return redisstore.New(opts)
}
