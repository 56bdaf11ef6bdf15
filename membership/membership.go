// Package membership counts the live instances of a floodgate deployment,
// for the `local` failure policy: while the shared store is unreachable,
// each instance decides in memory with its fair share of every quota,
// ceil(quota / live instances).
//
// # How instances are counted
//
// Each instance runs a [Membership]: a goroutine that announces the
// instance's id to the store every [Options.Interval] (default 1s) through a
// [Heartbeater] (the Redis store's Heartbeat: a sorted set scored by the
// Redis server's TIME, ids older than [Options.TTL] dropped, default 3s) and
// records the number of live ids the store answers. [Membership.Live] returns
// the last count seen. While the store is unreachable the count is kept as
// it was, which is what the local policy needs: the fleet that shared the
// quota a moment ago.
//
// # Before any count
//
// An instance that has never reached the store (it started during an
// outage) uses [Options.Assume] (default 1: it takes the whole quota). With
// N such instances the local policy admits up to N × quota per window; set
// Assume to the expected fleet size to bound over-admission at about the
// quota even then. Such an instance is also not ready (GET /readyz fails
// while the store does not answer), so a balancer that honours readiness
// sends it nothing.
//
// # Errors in the count
//
// The count rises at once but falls only after the lower count has stood
// for a TTL, and a count held through an outage counts as confirmed: right
// after an outage every entry may have expired, and the first heartbeats
// would otherwise see 1. So an instance that died or left is counted for up
// to 2 × TTL (the others take a smaller share: under-admission), and one that
// started is missed until the others' next heartbeat (over-admission of one
// share at most per instance started meanwhile). See docs/failure-modes.md.
package membership

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of [Options].
const (
	DefaultInterval = time.Second
	DefaultAssume   = 1
)

// Heartbeater announces an instance to the shared store. The Redis store
// implements it.
type Heartbeater interface {
	// Heartbeat records that instance id is alive for ttl from the store's
	// clock, and returns how many instances are alive, id included. A ttl of
	// zero or less removes id and returns the count of the others.
	Heartbeat(ctx context.Context, id string, ttl time.Duration) (live int, err error)
}

// Options configure a [Membership]. The zero value gives every default.
type Options struct {
	// ID names this instance; it must be unique in the deployment. Default:
	// host name, process id and a random suffix.
	ID string
	// Interval is the time between heartbeats. Default [DefaultInterval]
	// (1s).
	Interval time.Duration
	// TTL is how long a heartbeat keeps an instance counted. Default 3 ×
	// Interval.
	TTL time.Duration
	// Timeout bounds one heartbeat. Default Interval / 2.
	Timeout time.Duration
	// Assume is the count [Membership.Live] returns before any heartbeat
	// answered. Default [DefaultAssume] (1).
	Assume int
	// Logger receives a record when the count changes (info) and when
	// heartbeats start or stop failing (warn). Default: discarded.
	Logger *slog.Logger
}

// Membership keeps this instance announced and the count of live instances
// up to date. Create it with [Start] and stop it with [Membership.Close];
// the zero value is not usable. Its methods are safe for concurrent use.
type Membership struct {
	hb   Heartbeater
	opts Options

	live    atomic.Int64
	heldAt  atomic.Int64 // unix nanoseconds the count in force was last confirmed
	known   atomic.Bool
	failing atomic.Bool
	beats   atomic.Uint64
	fails   atomic.Uint64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start announces the instance once (bounded by Options.Timeout), then
// keeps announcing it from a goroutine until Close. It returns even when the
// first heartbeat fails: Live then returns Options.Assume until one
// succeeds.
func Start(hb Heartbeater, opts Options) *Membership {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.TTL <= 0 {
		opts.TTL = 3 * opts.Interval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = opts.Interval / 2
	}
	if opts.Assume <= 0 {
		opts.Assume = DefaultAssume
	}
	if opts.ID == "" {
		opts.ID = defaultID()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Membership{hb: hb, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	m.live.Store(int64(opts.Assume))
	m.beat()
	go m.loop()
	return m
}

func defaultID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// ID returns the instance's id.
func (m *Membership) ID() string { return m.opts.ID }

// Live returns the number of live instances at the last heartbeat that
// answered, at least 1; Options.Assume before any did.
func (m *Membership) Live() int { return int(m.live.Load()) }

// Known reports whether a heartbeat ever answered.
func (m *Membership) Known() bool { return m.known.Load() }

// Stats returns the number of heartbeats that answered and that failed.
func (m *Membership) Stats() (ok, failed uint64) { return m.beats.Load(), m.fails.Load() }

func (m *Membership) loop() {
	defer close(m.done)
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.beat()
		}
	}
}

// beat sends one heartbeat and records its count.
func (m *Membership) beat() {
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.Timeout)
	n, err := m.hb.Heartbeat(ctx, m.opts.ID, m.opts.TTL)
	cancel()
	if err != nil {
		// The count held during an outage stays the count in force.
		m.heldAt.Store(time.Now().UnixNano())
		m.fails.Add(1)
		if !m.failing.Swap(true) {
			m.opts.Logger.Warn("membership heartbeat failing: keeping the last count", "id", m.opts.ID, "live", m.Live(), "err", err)
		}
		return
	}
	m.beats.Add(1)
	if m.failing.Swap(false) {
		m.opts.Logger.Info("membership heartbeat answered again", "id", m.opts.ID)
	}
	if n < 1 {
		n = 1
	}
	now := time.Now().UnixNano()
	old := m.live.Load()
	if int64(n) < old && m.known.Load() && now-m.heldAt.Load() < int64(m.opts.TTL) {
		// A lower count is believed only after it has stood for a TTL: right
		// after an outage the others' entries have expired and they have
		// not announced themselves again yet.
		return
	}
	m.live.Store(int64(n))
	m.heldAt.Store(now)
	if old != int64(n) || !m.known.Load() {
		m.opts.Logger.Info("live instances", "id", m.opts.ID, "live", n, "was", old)
	}
	m.known.Store(true)
}

// Close stops the heartbeats and removes the instance from the count
// (bounded by Options.Timeout; an unreachable store lets the entry expire
// after TTL instead). It always returns nil.
func (m *Membership) Close() error {
	m.once.Do(func() {
		close(m.stop)
		<-m.done
		ctx, cancel := context.WithTimeout(context.Background(), m.opts.Timeout)
		_, _ = m.hb.Heartbeat(ctx, m.opts.ID, 0)
		cancel()
	})
	return nil
}
