package approx

import (
	"context"
	"fmt"
	"time"

	"github.com/floodgate/floodgate"
)

// clockRefresh is how often an idle store (nothing to sync) still asks the
// remote's clock.
const clockRefresh = time.Second

// Sync pushes the cost admitted since the last sync and reads the global
// totals of the counters decided since then, in one call to the remote
// (one round trip per remote server), and learns the offset between the
// local and the remote clock. The background goroutine calls it every
// [Options.SyncInterval]; an owner without one (SyncInterval < 0) calls it
// itself. Calls are serialised. No lock is held during the round trip:
// decisions go on meanwhile.
//
// On error the pushed cost is put back and pushed again at the next sync.
// An error after the remote applied the deltas (a lost reply) therefore
// counts them twice: the store errs towards admitting less, never more.
func (s *Store) Sync(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	return s.sync(ctx)
}

// Remote clock offsets only move by the round trip's uncertainty; windows
// are aligned by the remote clock.
func (s *Store) sync(ctx context.Context) error {
	now := s.now()
	batch := s.collect(now)
	t0 := s.clock().UnixMicro()
	if len(batch) == 0 {
		if last := s.clockSync.Load(); last != 0 && t0-last < clockRefresh.Microseconds() {
			return nil
		}
	}
	start := time.Now()
	remoteNow, err := s.remote.SyncCounters(ctx, batch)
	t1 := s.clock().UnixMicro()
	if d := int64(time.Since(start)); d > s.maxSync.Load() {
		s.maxSync.Store(d)
	}
	s.syncs.Add(1)
	if err != nil {
		s.syncErrors.Add(1)
		s.lastErr.Store(&err)
		s.restore(batch)
		if !s.failing {
			s.logger.Warn("approximate counters: sync failed; deciding from local counts", "counters", len(batch), "err", err)
		}
		s.failing = true
		return fmt.Errorf("approx: sync: %w", err)
	}
	if s.failing {
		s.logger.Info("approximate counters: sync works again", "counters", len(batch))
		s.failing = false
	}
	s.offset.Store(remoteNow - (t0+t1)/2)
	s.clockSync.Store(t1)
	s.counters.Add(uint64(len(batch)))
	s.apply(batch)
	return nil
}

// collect gathers the counters to sync at now, moves their pending cost to
// sending, and forgets expired entries.
func (s *Store) collect(now int64) []Counter {
	var batch []Counter
	slack := 2*s.interval.Microseconds() + time.Second.Microseconds()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.expired(k.limit, now) {
				delete(sh.m, k)
				continue
			}
			w := k.limit.Window.Microseconds()
			sliding := k.limit.Algorithm == floodgate.SlidingWindow
			life := w
			if sliding {
				life = 2 * w
			}
			// The current window: push its cost, or read the others' when it
			// was decided since the last sync or never read.
			if c := &e.cur; c.start != noWindow && (c.pending > 0 || e.touched || !c.synced) {
				batch = append(batch, Counter{Key: k.key, Limit: k.limit, Start: c.start, Delta: c.pending, ExpireAt: c.start + life + slack})
				c.sending, c.pending = c.pending, 0
			}
			// The previous window: push what is left of it, and for the
			// sliding window counter read its total until every instance
			// has pushed its last cost into it.
			p := &e.prev
			settled := now >= p.start+w+slack
			if p.start != noWindow && (p.pending > 0 || (sliding && (!p.synced || (e.touched && !settled)))) {
				batch = append(batch, Counter{Key: k.key, Limit: k.limit, Start: p.start, Delta: p.pending, ExpireAt: p.start + life + slack})
				p.sending, p.pending = p.pending, 0
			}
			e.touched = false
		}
		// Shared entries are counted locally only: their cost becomes part
		// of their own count, and they go when their windows have passed.
		for l, e := range sh.shared {
			for _, w := range []*window{&e.cur, &e.prev} {
				w.global += w.pending
				w.pending = 0
			}
			if e.expired(l, now) {
				delete(sh.shared, l)
			}
		}
		sh.mu.Unlock()
	}
	return batch
}

// find returns the window of c's entry that c counts, nil when it is gone.
// The caller holds the shard's lock.
func find(sh *shard, c *Counter) *window {
	e := sh.m[entryKey{c.Key, c.Limit}]
	switch {
	case e == nil:
		return nil
	case e.cur.start == c.Start:
		return &e.cur
	case e.prev.start == c.Start:
		return &e.prev
	}
	return nil
}

// apply takes in the totals of a successful sync.
func (s *Store) apply(batch []Counter) {
	for i := range batch {
		c := &batch[i]
		sh := s.shardOf(c.Key)
		sh.mu.Lock()
		if w := find(sh, c); w != nil {
			w.global, w.sending, w.synced = c.Total, 0, true
		}
		sh.mu.Unlock()
	}
}

// restore puts back the cost of a failed sync, to be pushed again.
func (s *Store) restore(batch []Counter) {
	for i := range batch {
		c := &batch[i]
		sh := s.shardOf(c.Key)
		sh.mu.Lock()
		if w := find(sh, c); w != nil {
			w.pending += w.sending
			w.sending = 0
		}
		sh.mu.Unlock()
	}
}

// loop syncs every interval until Close.
func (s *Store) loop() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		_ = s.Sync(ctx) // counted and logged by sync
		cancel()
	}
}

// Close stops the background sync, then pushes the cost admitted since the
// last sync in a final sync bounded by [Options.SyncTimeout], logs its
// [Stats] at info level, and returns that sync's error. Decide after Close returns [floodgate.ErrClosed]. It
// does not close the remote: its owner does.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	err := s.Sync(ctx)
	st := s.Stats()
	s.logger.Info("approximate counters closed", "syncs", st.Syncs, "sync_errors", st.SyncErrors, "counters", st.Counters, "max_sync", st.MaxSync, "offset", st.Offset)
	if err != nil {
		return fmt.Errorf("approx: final flush: %w", err)
	}
	return nil
}

// Stats describe a store's syncs since it was created.
type Stats struct {
	// Syncs counts round trips to the remote; SyncErrors the failed ones.
	Syncs, SyncErrors uint64
	// Counters counts the counters synced successfully.
	Counters uint64
	// MaxSync is the longest sync round trip.
	MaxSync time.Duration
	// Offset is the remote's clock minus the local clock, as learned at the
	// last successful sync (zero before any).
	Offset time.Duration
	// LastError is the error of the most recent failed sync, nil when none
	// failed; a later successful sync does not clear it.
	LastError error
	// Entries is the number of keys × limits held locally.
	Entries int
	// Shared is the number of entries shared by the keys that found the
	// table full (one per limit and shard of the table).
	Shared int
}

// Stats returns the store's sync statistics. It locks each shard briefly to
// count its entries.
func (s *Store) Stats() Stats {
	st := Stats{
		Syncs:      s.syncs.Load(),
		SyncErrors: s.syncErrors.Load(),
		Counters:   s.counters.Load(),
		MaxSync:    time.Duration(s.maxSync.Load()),
		Offset:     time.Duration(s.offset.Load()) * time.Microsecond,
	}
	if p := s.lastErr.Load(); p != nil {
		st.LastError = *p
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		st.Entries += len(sh.m)
		st.Shared += len(sh.shared)
		sh.mu.Unlock()
	}
	return st
}
