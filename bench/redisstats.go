package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// RedisCommandStats returns a function reading the calls of every command
// from INFO commandstats of the Redis at url (redis://host:port[/db]), and
// a function closing its connection. The counts include the INFO calls
// themselves, under "info".
func RedisCommandStats(url string) (func(ctx context.Context) (map[string]int64, error), func() error, error) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: redis stats url %q: %w", url, err)
	}
	c := goredis.NewClient(opts)
	read := func(ctx context.Context) (map[string]int64, error) {
		s, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			return nil, fmt.Errorf("bench: INFO commandstats on %s: %w", opts.Addr, err)
		}
		return parseCommandStats(s), nil
	}
	return read, c.Close, nil
}

// parseCommandStats reads lines such as
// "cmdstat_evalsha:calls=12,usec=34,usec_per_call=2.83,..." into
// {"evalsha": 12}.
func parseCommandStats(s string) map[string]int64 {
	m := map[string]int64{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					m[strings.TrimPrefix(name, "cmdstat_")] = n
				}
			}
		}
	}
	return m
}
