package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	goredis "github.com/redis/go-redis/v9"
)

// versionField is the field of the overrides hash that holds its version.
// Override fields hold a 0x1f separator, so none can be named so.
const versionField = "#version"

// OverridesKey returns the key of the hash that holds the overrides of rule
// limits (package overrides): one field per override, and their version.
func (s *Store) OverridesKey() string { return s.prefix + "{overrides}" }

// Overrides returns every override by field, and the version, in one
// HGETALL. It implements overrides.Backend.
func (s *Store) Overrides(ctx context.Context) (map[string]string, int64, error) {
	all, err := s.client.HGetAll(ctx, s.OverridesKey()).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("redis: reading overrides: %w", err)
	}
	var v int64
	if raw, ok := all[versionField]; ok {
		if v, err = strconv.ParseInt(raw, 10, 64); err != nil {
			return nil, 0, fmt.Errorf("redis: overrides version %q: %w", raw, err)
		}
		delete(all, versionField)
	}
	return all, v, nil
}

// OverridesVersion returns the overrides' version (0 when none was ever
// written).
func (s *Store) OverridesVersion(ctx context.Context) (int64, error) {
	v, err := s.client.HGet(ctx, s.OverridesKey(), versionField).Int64()
	if errors.Is(err, goredis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("redis: reading the overrides version: %w", err)
	}
	return v, nil
}

// PutOverride writes one override and moves the version, in one
// transaction.
func (s *Store) PutOverride(ctx context.Context, field, value string) error {
	_, err := s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, s.OverridesKey(), field, value)
		p.HIncrBy(ctx, s.OverridesKey(), versionField, 1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: writing an override: %w", err)
	}
	return nil
}

// deleteOverride removes KEYS[1]'s field ARGV[1] and moves the version when
// it was there.
var deleteOverride = goredis.NewScript(`
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
  return 1
end
return 0
`)

// DeleteOverride removes one override and reports whether it was there.
func (s *Store) DeleteOverride(ctx context.Context, field string) (bool, error) {
	n, err := deleteOverride.Run(ctx, s.client, []string{s.OverridesKey()}, field, versionField).Int()
	if err != nil {
		return false, fmt.Errorf("redis: deleting an override: %w", err)
	}
	return n == 1, nil
}
