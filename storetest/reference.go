package storetest

import (
	"context"
	"sync"
	"time"

	"github.com/floodgate/floodgate"
)

// ReferenceStore is the simplest correct [floodgate.Store]: one map and one
// mutex around [floodgate.Apply]. It proves the suite against the core, and
// is the yardstick other stores are compared with. It keeps every key until
// its state expires at the instant of a later operation on that key, so its
// memory is unbounded: use it in tests only.
//
// The zero value is not usable; use [NewReferenceStore]. It is safe for
// concurrent use.
type ReferenceStore struct {
	mu     sync.Mutex
	states map[refKey]floodgate.State
	closed bool
}

type refKey struct {
	key   string
	limit floodgate.Limit
}

var _ floodgate.Store = (*ReferenceStore)(nil)

// NewReferenceStore returns an empty ReferenceStore.
func NewReferenceStore() *ReferenceStore {
	return &ReferenceStore{states: make(map[refKey]floodgate.State)}
}

// Decide decides ops in order, each with [floodgate.Apply] under one lock.
// An op whose Now is zero is decided at the wall clock.
func (s *ReferenceStore) Decide(ctx context.Context, ops []floodgate.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return floodgate.ErrClosed
	}
	var first error
	var states []floodgate.State
	for i := range ops {
		op := &ops[i]
		op.Err = op.Check()
		if op.Err != nil {
			if first == nil {
				first = op.Err
			}
			continue
		}
		now := op.Now
		if now == 0 {
			now = time.Now().UnixMicro()
		}
		states = states[:0]
		for _, l := range op.Limits {
			states = append(states, s.states[refKey{op.Key, l}])
		}
		if floodgate.Apply(op, states, now) {
			for j, l := range op.Limits {
				k := refKey{op.Key, l}
				if l.Expired(states[j], now) {
					delete(s.states, k)
				} else {
					s.states[k] = states[j]
				}
			}
		}
	}
	return first
}

// Close makes later calls to Decide fail with [floodgate.ErrClosed]. It may
// be called more than once.
func (s *ReferenceStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
