package rules

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func ruleFile(quota int) string {
	return fmt.Sprintf("domain: w\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: %d}\n  - key: j\n    rate_limit: {unit: minute, requests_per_unit: %d}\n", quota, quota)
}

// writeAtomic replaces a file by renaming a new one over it.
func writeAtomic(t *testing.T, name, content string) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

func TestWatchReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "rules.yaml")
	writeAtomic(t, file, ruleFile(1))
	w, err := Watch(context.Background(), []string{file}, WatchOptions{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Readers match both descriptors against one Set and check that both
	// come from the same version; they also check the quota belongs to one
	// of the written versions.
	var stop atomic.Bool
	var bad atomic.Int64
	var n atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200000 && !stop.Load(); i++ {
				s := w.Current()
				a, ok1 := s.Match("w", []Entry{{"k", "x"}})
				b, ok2 := s.Match("w", []Entry{{"j", "x"}})
				if !ok1 || !ok2 || a.Limits[0].Quota != b.Limits[0].Quota || a.Limits[0].Quota < 1 || a.Limits[0].Quota > 20 {
					bad.Add(1)
				}
				n.Add(1)
			}
		}()
	}
	for q := 2; q <= 20; q++ {
		writeAtomic(t, file, ruleFile(q))
		if ok, err := w.Check(); !ok || err != nil {
			t.Fatalf("reload %d: %v %v", q, ok, err)
		}
		if got, _ := w.Current().Match("w", []Entry{{"k", "x"}}); got.Limits[0].Quota != int64(q) {
			t.Fatalf("after reload %d: quota %d", q, got.Limits[0].Quota)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d matches saw a partial or unknown rule set", bad.Load(), n.Load())
	}
	st := w.Stats()
	if st.Reloads != 19 || st.Failures != 0 || st.Version != w.Current().Version() {
		t.Fatalf("stats %+v", st)
	}
}

func TestWatchBrokenFileKeepsOldRules(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "rules.yaml")
	writeAtomic(t, file, ruleFile(7))
	var reported []error
	w, err := Watch(context.Background(), []string{dir}, WatchOptions{Interval: time.Hour, OnError: func(err error) { reported = append(reported, err) }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	v := w.Current().Version()
	writeAtomic(t, file, "domain: w\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n")
	if ok, err := w.Check(); ok || err == nil {
		t.Fatalf("broken file: %v %v", ok, err)
	}
	w.Check() // the same broken content is reported once
	if m, _ := w.Current().Match("w", []Entry{{"k", "x"}}); m.Limits[0].Quota != 7 || w.Current().Version() != v {
		t.Fatalf("old rules not kept: %v", m)
	}
	st := w.Stats()
	if st.Failures != 1 || st.LastError == nil || len(reported) != 1 || st.Version != v {
		t.Fatalf("stats %+v, reported %d", st, len(reported))
	}
	writeAtomic(t, file, ruleFile(8))
	if ok, err := w.Check(); !ok || err != nil {
		t.Fatalf("fixed file: %v %v", ok, err)
	}
	if st := w.Stats(); st.LastError != nil || st.Reloads != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A Kubernetes ConfigMap volume: rules.yaml -> ..data/rules.yaml, ..data ->
// ..v1; an update creates ..v2 and swaps the ..data link atomically.
func TestWatchConfigMapSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	mk := func(version string, quota int) {
		os.Mkdir(filepath.Join(dir, version), 0o755)
		if err := os.WriteFile(filepath.Join(dir, version, "rules.yaml"), []byte(ruleFile(quota)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("..v1", 3)
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/rules.yaml", filepath.Join(dir, "rules.yaml")); err != nil {
		t.Fatal(err)
	}
	w, err := Watch(context.Background(), []string{dir}, WatchOptions{Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if files := w.Current().Files(); len(files) != 1 || filepath.Base(files[0]) != "rules.yaml" {
		t.Fatalf("files %v (dot entries must be skipped)", files)
	}
	mk("..v2", 4)
	os.Symlink("..v2", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "..v1"))
	// Check directly (the polling goroutine may win the race; either way the
	// new rules must be in force afterwards).
	w.Check()
	if m, _ := w.Current().Match("w", []Entry{{"k", "x"}}); m.Limits[0].Quota != 4 {
		t.Fatalf("after the swap: %v", m)
	}
}
