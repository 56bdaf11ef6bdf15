package main

import (
	"fmt"
	"log/slog"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/approx"
)

// newApprox returns the store of approximate rules: counts kept in this
// process and synced with st every cfg.syncInterval (0: [approx.DefaultSyncInterval]), when st can sync
// counters (Redis). It returns nil for the memory store, which then decides
// approximate rules too: one process alone is exact at no cost.
func newApprox(st floodgate.Store, cfg stackConfig, logger *slog.Logger) (*approx.Store, error) {
	if cfg.syncInterval < 0 {
		return nil, fmt.Errorf("--sync-interval %v: want a positive duration", cfg.syncInterval)
	}
	remote, ok := st.(approx.Remote)
	if !ok {
		return nil, nil
	}
	return approx.New(remote, approx.Options{SyncInterval: cfg.syncInterval, MaxKeys: cfg.approxKeys, Logger: logger})
}
