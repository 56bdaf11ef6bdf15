package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// AuditKeys returns the keys of the shared audit log: the list of entries,
// newest first, and the counter that numbers them. They share one hash
// tag, so one cluster slot.
func (s *Store) AuditKeys() (log, seq string) {
	return s.prefix + "{audit}:log", s.prefix + "{audit}:seq"
}

// appendAudit numbers ARGV[1] with KEYS[2]'s next value, pushes it onto
// KEYS[1] and keeps the newest ARGV[2] entries.
var appendAudit = goredis.NewScript(`
local seq = redis.call('INCR', KEYS[2])
redis.call('LPUSH', KEYS[1], seq .. '\t' .. ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return seq
`)

// AppendAudit adds an entry to the shared audit log, keeping the newest
// keep, and returns its number. With [Store.Audit] it implements
// admin.SharedAudit.
func (s *Store) AppendAudit(ctx context.Context, entry string, keep int) (int64, error) {
	log, seq := s.AuditKeys()
	n, err := appendAudit.Run(ctx, s.client, []string{log, seq}, entry, max(keep, 1)).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis: appending to the audit log: %w", err)
	}
	return n, nil
}

// Audit returns the newest n entries of the shared audit log, newest
// first, with their numbers.
func (s *Store) Audit(ctx context.Context, n int) (seqs []int64, entries []string, err error) {
	log, _ := s.AuditKeys()
	raw, err := s.client.LRange(ctx, log, 0, int64(max(n, 1))-1).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("redis: reading the audit log: %w", err)
	}
	for _, r := range raw {
		num, entry, ok := strings.Cut(r, "\t")
		seq, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil {
			continue
		}
		seqs, entries = append(seqs, seq), append(entries, entry)
	}
	return seqs, entries, nil
}
