package rules

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// WatchStats is a snapshot of a [Watcher]'s counters.
type WatchStats struct {
	// Version is the version of the rules in force (see [Set.Version]).
	Version string
	// Reloads counts successful reloads after the first load.
	Reloads uint64
	// Failures counts reloads that found invalid or unreadable files and
	// kept the previous rules.
	Failures uint64
	// LastError is the error of the latest failed reload, nil once a later
	// reload succeeds.
	LastError error
	// LastReload is when the rules in force were loaded.
	LastReload time.Time
}

// Watcher keeps a [Set] loaded from paths up to date by polling the files'
// contents. Decisions read [Watcher.Current], which a reload replaces
// atomically: a decision sees the old rules or the new ones, never a mix.
// Safe for concurrent use; Close stops it.
type Watcher struct {
	paths    []string
	interval time.Duration
	logger   *slog.Logger
	onError  func(error)

	cur    atomic.Pointer[Set]
	mu     sync.Mutex        // serialises reloads and guards the fields below
	seen   [sha256.Size]byte // digest of the files in force
	failed [sha256.Size]byte // digest of the latest failed content
	stats  WatchStats
	cancel context.CancelFunc
	done   chan struct{}
}

// WatchOptions configures [Watch]. The zero value polls every second and
// logs nowhere.
type WatchOptions struct {
	// Interval between polls. Default 1s; at least 10ms.
	Interval time.Duration
	// Logger receives a record for each reload and each failure. Default:
	// none.
	Logger *slog.Logger
	// OnError, when set, is called (from the polling goroutine) with each
	// failed reload's error.
	OnError func(error)
}

// Watch loads paths (as [Load] does) and starts a goroutine that polls them
// every opts.Interval until ctx is done or Close is called. A change of any
// file's content, of the set of files, or of where a symbolic link points
// (the Kubernetes ConfigMap swap of ..data) is picked up at the next poll.
// The first load must succeed; Watch returns its error otherwise.
func Watch(ctx context.Context, paths []string, opts WatchOptions) (*Watcher, error) {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	opts.Interval = max(opts.Interval, 10*time.Millisecond)
	w := &Watcher{paths: append([]string(nil), paths...), interval: opts.Interval, logger: opts.Logger, onError: opts.OnError, done: make(chan struct{})}
	srcs, err := readSources(w.paths)
	if err != nil {
		return nil, err
	}
	set, err := build(srcs)
	if err != nil {
		return nil, err
	}
	w.seen = digest(srcs)
	w.cur.Store(set)
	w.stats = WatchStats{Version: set.Version(), LastReload: time.Now()}
	ctx, w.cancel = context.WithCancel(ctx)
	go w.loop(ctx)
	return w, nil
}

func (w *Watcher) loop(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Check()
		}
	}
}

// Current returns the rules in force. It never returns nil once Watch has
// succeeded.
func (w *Watcher) Current() *Set { return w.cur.Load() }

// Stats returns the watcher's counters.
func (w *Watcher) Stats() WatchStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Check polls the files once, now, and reloads them if they changed. It
// reports whether new rules were swapped in, and the error of a failed
// reload (the previous rules stay in force). The polling goroutine calls it;
// tests and a SIGHUP handler may too.
func (w *Watcher) Check() (reloaded bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	srcs, err := readSources(w.paths)
	var sum [sha256.Size]byte
	if err == nil {
		sum = digest(srcs)
		if sum == w.seen {
			// Unchanged, or back to the content in force after a failure.
			w.stats.LastError = nil
			return false, nil
		}
	}
	var set *Set
	if err == nil {
		set, err = build(srcs)
	}
	if err != nil {
		if w.stats.LastError != nil && sum == w.failed && err.Error() == w.stats.LastError.Error() {
			return false, err // the same failure as the last poll: report it once
		}
		w.failed = sum
		w.stats.Failures++
		w.stats.LastError = err
		if w.logger != nil {
			w.logger.Error("rules: reload failed, keeping the previous rules", "version", w.stats.Version, "error", err)
		}
		if w.onError != nil {
			w.onError(err)
		}
		return false, err
	}
	w.seen = sum
	w.cur.Store(set)
	w.stats.Reloads++
	w.stats.LastError = nil
	w.stats.Version = set.Version()
	w.stats.LastReload = time.Now()
	if w.logger != nil {
		w.logger.Info("rules: reloaded", "version", set.Version(), "domains", set.Domains())
	}
	return true, nil
}

// Close stops the polling goroutine and waits for it to return. The rules
// in force stay readable.
func (w *Watcher) Close() error {
	w.cancel()
	<-w.done
	return nil
}

// digest hashes the sources' names and contents.
func digest(srcs []source) [sha256.Size]byte {
	h := sha256.New()
	for _, s := range srcs {
		h.Write([]byte(s.name))
		h.Write([]byte{0})
		h.Write(s.data)
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}
