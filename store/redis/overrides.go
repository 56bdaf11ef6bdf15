package redis

import (
	"context"
	"errors"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate/overrides"
)

// versionField is the field of the overrides hash that holds its version.
// Override fields hold a 0x1f separator, so none can be named so.
const versionField = "#version"

// OverridesKey returns the key of the hash that holds the overrides of rule
// limits (package overrides): one field per override, and their version.
func (s *Store) OverridesKey() string { return s.prefix + "{overrides}" }

// Overrides returns every override by field, and the version, in one
// HGETALL. It implements overrides.Backend.
func (s *Store) Overrides(ctx context.Context) (map[string]string, string, error) {
	all, err := s.client.HGetAll(ctx, s.OverridesKey()).Result()
	if err != nil {
		return nil, "", fmt.Errorf("redis: reading overrides: %w", err)
	}
	v := all[versionField]
	delete(all, versionField)
	return all, v, nil
}

// OverridesVersion returns the overrides' version ("" when none was ever
// written).
func (s *Store) OverridesVersion(ctx context.Context) (string, error) {
	v, err := s.client.HGet(ctx, s.OverridesKey(), versionField).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("redis: reading the overrides version: %w", err)
	}
	return v, nil
}

// PutOverride writes one override and a new version, in one HSET.
func (s *Store) PutOverride(ctx context.Context, field, value string) error {
	if err := s.client.HSet(ctx, s.OverridesKey(), field, value, versionField, overrides.NewVersion()).Err(); err != nil {
		return fmt.Errorf("redis: writing an override: %w", err)
	}
	return nil
}

// deleteOverride removes KEYS[1]'s field ARGV[1] when its value is ARGV[2]
// (any value when ARGV[2] is empty), and then sets the version ARGV[3] to
// ARGV[4].
var deleteOverride = goredis.NewScript(`
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
  return 1
end
return 0
`)

// DeleteOverride removes one override, if its value is ifValue when that
// is not empty, and reports whether it did.
func (s *Store) DeleteOverride(ctx context.Context, field, ifValue string) (bool, error) {
	n, err := deleteOverride.Run(ctx, s.client, []string{s.OverridesKey()}, field, ifValue, versionField, overrides.NewVersion()).Int()
	if err != nil {
		return false, fmt.Errorf("redis: deleting an override: %w", err)
	}
	return n == 1, nil
}
