package main

import (
	"io"
	"testing"
	"time"
)

func TestParseServeSyncInterval(t *testing.T) {
	env := map[string]string{"FLOODGATE_SYNC_INTERVAL": "250ms", "FLOODGATE_APPROXIMATE_MAX_KEYS": "5000"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := parseServe(nil, io.Discard, lookup)
	if err != nil || cfg.stack.syncInterval != 250*time.Millisecond || cfg.stack.approxKeys != 5000 {
		t.Fatalf("FLOODGATE_SYNC_INTERVAL=250ms, FLOODGATE_APPROXIMATE_MAX_KEYS=5000: %v, %d, %v", cfg.stack.syncInterval, cfg.stack.approxKeys, err)
	}
	cfg, err = parseServe([]string{"--sync-interval", "20ms"}, io.Discard, lookup)
	if err != nil || cfg.stack.syncInterval != 20*time.Millisecond {
		t.Fatalf("--sync-interval 20ms: %v, %v", cfg.stack.syncInterval, err)
	}
	if _, err := newApprox(nil, stackConfig{syncInterval: -time.Second}, nil); err == nil {
		t.Fatal("negative sync interval: no error")
	}
}
