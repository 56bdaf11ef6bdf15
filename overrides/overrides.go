// Package overrides holds runtime overrides of rule limits: "from now on,
// descriptor api_key=k1 gets 1000 a minute", set through the admin API and
// seen by every instance that shares the store, without editing a rule file.
//
// An [Override] names a domain and a descriptor that a rule matches, and
// the limits that replace the rule's (or its tier's) for that descriptor
// only, until it is deleted or expires. The overrides live in a [Backend]:
// a hash in the shared Redis (store/redis), or this process's memory. A
// [Table] reads them into memory, and polls the backend's version every
// [Options.Interval] (default 1s), so an override set through one instance
// holds on every other within that interval. A lookup on the decision path
// takes no lock and allocates nothing.
//
// Limits written in a store are keyed by the limit itself, so an override
// starts its descriptor's count afresh, as a rule change does, and
// deleting it brings back the rule's count where it was.
package overrides

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate/floodgate"
)

// Backend keeps the encoded overrides, by field, with a version: a token
// that changes whenever one is written (a random one per write, so that a
// backend that lost its data and was written again cannot repeat a version
// an instance has seen). The Redis store implements it with one hash;
// [NewMemory] in this process.
type Backend interface {
	// Overrides returns every override by field, and the version.
	Overrides(ctx context.Context) (map[string]string, string, error)
	// OverridesVersion returns the version only ("" when nothing was ever
	// written).
	OverridesVersion(ctx context.Context) (string, error)
	// PutOverride writes value under field and changes the version.
	PutOverride(ctx context.Context, field, value string) error
	// DeleteOverride removes field when its value is ifValue (any value
	// when ifValue is ""), reports whether it did, and then changes the
	// version.
	DeleteOverride(ctx context.Context, field, ifValue string) (bool, error)
}

// NewVersion returns a fresh version token for a [Backend].
func NewVersion() string { return strconv.FormatUint(rand.Uint64(), 36) }

// Override replaces the limits of one descriptor.
type Override struct {
	// Domain and Key name the descriptor: Key is its store key
	// ([rules.Match.Key]), which a rule match gives.
	Domain string `json:"domain"`
	Key    string `json:"key"`
	// Descriptor and Rule say what was matched when the override was set,
	// for people reading the list.
	Descriptor []Entry `json:"descriptor"`
	Rule       string  `json:"rule"`
	// Limits replace the rule's. At least one, each valid.
	Limits []floodgate.Limit `json:"limits"`
	// Expires, when not zero, is when the override stops applying.
	Expires time.Time `json:"expires,omitzero"`
	// Reason, SetAt and SetBy are kept for the record.
	Reason string    `json:"reason,omitempty"`
	SetAt  time.Time `json:"set_at"`
	SetBy  string    `json:"set_by,omitempty"`
}

// Entry is one entry of a descriptor.
type Entry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// field is the backend field of an override.
func field(domain, key string) string { return domain + "\x1f" + key }

// Check validates o.
func (o *Override) Check() error {
	switch {
	case o.Domain == "":
		return fmt.Errorf("override: empty domain: %w", floodgate.ErrInvalid)
	case floodgate.ValidateKey(o.Key) != nil:
		return fmt.Errorf("override: %w", floodgate.ValidateKey(o.Key))
	case len(o.Limits) == 0:
		return fmt.Errorf("override of %q: no limits: %w", o.Key, floodgate.ErrInvalid)
	}
	for i, l := range o.Limits {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("override of %q: limits[%d]: %w", o.Key, i, err)
		}
	}
	return nil
}

// Options configure a [Table].
type Options struct {
	// Interval is how often the backend's version is polled. Default
	// [DefaultInterval].
	Interval time.Duration
	// Logger receives a warning when the backend cannot be read (at most
	// once a minute) or holds an override that does not decode. Default:
	// discarded.
	Logger *slog.Logger
	// Now returns the current time, for expiries. Default time.Now.
	Now func() time.Time
}

// DefaultInterval is the default Options.Interval.
const DefaultInterval = time.Second

// openTimeout bounds Open's first read.
const openTimeout = 500 * time.Millisecond

// Table is the overrides in force, read from a backend. Create it with
// [Open]. Its methods are safe for concurrent use.
type Table struct {
	backend Backend
	opts    Options
	snap    atomic.Pointer[snapshot]

	mu       sync.Mutex // serialises refreshes
	version  string
	loaded   bool
	lastWarn time.Time

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type snapshot struct {
	byDomain map[string]map[string]*Override
	list     []Override
}

// Open reads the overrides from backend (waiting at most 500ms), then
// polls it every Options.Interval until Close. A backend that cannot be
// read at first is not an error: the table starts empty and keeps trying.
func Open(ctx context.Context, backend Backend, opts Options) *Table {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	t := &Table{backend: backend, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	t.snap.Store(&snapshot{})
	// A store that is down at start delays the start by at most this; the
	// poll keeps trying.
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	if err := t.Refresh(ctx); err != nil {
		t.warn("overrides: cannot read them; starting with none", err)
	}
	go t.loop()
	return t
}

func (t *Table) loop() {
	defer close(t.done)
	tick := time.NewTicker(t.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(t.opts.Interval, time.Second))
			if err := t.Refresh(ctx); err != nil {
				t.warn("overrides: cannot read them; keeping the last ones read", err)
			}
			cancel()
		}
	}
}

func (t *Table) warn(msg string, err error) {
	t.mu.Lock()
	now := time.Now()
	if now.Sub(t.lastWarn) < time.Minute {
		t.mu.Unlock()
		return
	}
	t.lastWarn = now
	t.mu.Unlock()
	t.opts.Logger.Warn(msg, "err", err)
}

// Close stops polling. It does not close the backend.
func (t *Table) Close() {
	t.once.Do(func() {
		close(t.stop)
		<-t.done
	})
}

// Lookup returns the limits that override domain's descriptor of store key
// key, if an override in force names it.
func (t *Table) Lookup(domain, key string) ([]floodgate.Limit, bool) {
	s := t.snap.Load()
	if len(s.byDomain) == 0 {
		return nil, false
	}
	o := s.byDomain[domain][key]
	if o == nil || (!o.Expires.IsZero() && !t.opts.Now().Before(o.Expires)) {
		return nil, false
	}
	return o.Limits, true
}

// List returns the overrides read, those expired for less than
// [CleanupGrace] included, sorted by domain and key.
func (t *Table) List() []Override {
	return slices.Clone(t.snap.Load().list)
}

// Put writes o (replacing any override of the same descriptor) and reads
// the overrides again, so that it applies here at once. Its error is the
// write's: a read that fails after it is logged, and the next poll
// retries.
func (t *Table) Put(ctx context.Context, o Override) error {
	if err := o.Check(); err != nil {
		return err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("override of %q: %w", o.Key, err)
	}
	if err := t.backend.PutOverride(ctx, field(o.Domain, o.Key), string(b)); err != nil {
		return fmt.Errorf("override of %q: %w", o.Key, err)
	}
	t.refreshAfterWrite(ctx)
	return nil
}

// Delete removes the override of domain's descriptor key, reports whether
// there was one, and reads the overrides again. Its error is the delete's.
func (t *Table) Delete(ctx context.Context, domain, key string) (bool, error) {
	found, err := t.backend.DeleteOverride(ctx, field(domain, key), "")
	if err != nil {
		return false, fmt.Errorf("override of %q: %w", key, err)
	}
	t.refreshAfterWrite(ctx)
	return found, nil
}

func (t *Table) refreshAfterWrite(ctx context.Context) {
	if err := t.Refresh(ctx); err != nil {
		t.warn("overrides: written, but not read back yet; the next poll retries", err)
	}
}

// CleanupGrace is how long past its expiry an override stays in the
// backend before an instance removes it: instances' clocks differ, and one
// running fast must not remove an override the others still apply. Each
// instance stops applying an override at its expiry by its own clock.
const CleanupGrace = time.Minute

// Refresh reads the overrides when the backend's version has changed since
// the last read, and removes from the backend those expired for longer
// than [CleanupGrace] (each only if it was not written again meanwhile).
func (t *Table) Refresh(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, err := t.backend.OverridesVersion(ctx)
	if err != nil {
		return err
	}
	if t.loaded && v == t.version && !t.stale() {
		return nil
	}
	fields, v, err := t.backend.Overrides(ctx)
	if err != nil {
		return err
	}
	s := &snapshot{byDomain: map[string]map[string]*Override{}}
	stale := map[string]string{} // field → the value read
	now := t.opts.Now()
	for f, val := range fields {
		var o Override
		if err := json.Unmarshal([]byte(val), &o); err != nil || o.Check() != nil || field(o.Domain, o.Key) != f {
			t.opts.Logger.Warn("overrides: skipping one that does not decode", "field", f, "err", err)
			continue
		}
		if !o.Expires.IsZero() && now.Sub(o.Expires) >= CleanupGrace {
			stale[f] = val
			continue
		}
		s.list = append(s.list, o)
	}
	sort.Slice(s.list, func(i, j int) bool {
		a, b := &s.list[i], &s.list[j]
		return a.Domain < b.Domain || (a.Domain == b.Domain && a.Key < b.Key)
	})
	for i := range s.list {
		o := &s.list[i]
		if s.byDomain[o.Domain] == nil {
			s.byDomain[o.Domain] = map[string]*Override{}
		}
		s.byDomain[o.Domain][o.Key] = o
	}
	t.snap.Store(s)
	t.version, t.loaded = v, true
	// Any instance removes what expired long ago, unless it was written
	// again since it was read; the version changes, so the others read the
	// list again.
	for f, val := range stale {
		if _, err := t.backend.DeleteOverride(ctx, f, val); err != nil {
			return err
		}
	}
	return nil
}

// stale reports whether an override in the snapshot expired longer ago
// than CleanupGrace, so that Refresh reads and cleans the list even when
// nobody wrote.
func (t *Table) stale() bool {
	now := t.opts.Now()
	for _, o := range t.snap.Load().list {
		if !o.Expires.IsZero() && now.Sub(o.Expires) >= CleanupGrace {
			return true
		}
	}
	return false
}

// Memory is a [Backend] in this process's memory, for the memory store
// (one instance). Create it with [NewMemory].
type Memory struct {
	mu      sync.Mutex
	fields  map[string]string
	version string
}

// NewMemory returns an empty in-memory backend.
func NewMemory() *Memory { return &Memory{fields: map[string]string{}} }

// Overrides implements [Backend].
func (m *Memory) Overrides(ctx context.Context) (map[string]string, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.fields))
	for k, v := range m.fields {
		out[k] = v
	}
	return out, m.version, ctx.Err()
}

// OverridesVersion implements [Backend].
func (m *Memory) OverridesVersion(ctx context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.version, ctx.Err()
}

// PutOverride implements [Backend].
func (m *Memory) PutOverride(ctx context.Context, field, value string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fields[field] = value
	m.version = NewVersion()
	return nil
}

// DeleteOverride implements [Backend].
func (m *Memory) DeleteOverride(ctx context.Context, field, ifValue string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.fields[field]
	if !ok || (ifValue != "" && v != ifValue) {
		return false, nil
	}
	delete(m.fields, field)
	m.version = NewVersion()
	return true, nil
}
