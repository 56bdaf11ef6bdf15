package main

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/floodgate/floodgate/internal/proctest"
)

func TestSim(t *testing.T) {
	svg := filepath.Join(t.TempDir(), "sim.svg")
	out, stderr, code := proctest.Run(t, nil, "sim", "--memory-keys", "2000", "--svg", svg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"fixed_window", "sliding_window_log", "sliding_window", "token_bucket", "gcra", "max in a window", "bytes/key"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(svg)
	if err != nil || !strings.HasPrefix(string(b), "<svg") || strings.Count(string(b), "<polyline") != 10 {
		t.Errorf("svg: %v, %d bytes, %d polylines", err, len(b), strings.Count(string(b), "<polyline"))
	}

	out, stderr, code = proctest.Run(t, nil, "sim", "--format", "csv", "--memory-keys", "-1", "--algorithms", "fixed_window,sliding_window_log", "--quota", "10", "--window", "1s")
	if code != 0 {
		t.Fatalf("csv: exit %d: %s", code, stderr)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("csv: %v, %d rows:\n%s", err, len(rows), out)
	}
	// Columns: ... edge_max_in_window is the 9th. The fixed window lets
	// 2×quota through around an edge, the sliding log exactly quota.
	if rows[1][0] != "fixed_window" || rows[1][8] != "20" || rows[2][0] != "sliding_window_log" || rows[2][8] != "10" {
		t.Errorf("csv rows %v", rows[1:])
	}

	for _, args := range [][]string{{"--algorithms", "concurrency"}, {"--format", "xml"}, {"--algorithms", "leaky"}, {"--windows", "0x"},
		{"--quota", "0"}, {"--windows", "0"}, {"--load", "0"}, {"--seed", "0"}, {"--window", "0s"},
		{"--quota", "1000000", "--windows", "100"}, {"--quota", "100000", "--algorithms", "sliding_window_log"}} {
		if _, stderr, code := proctest.Run(t, nil, append([]string{"sim"}, args...)...); code != 2 || stderr == "" {
			t.Errorf("sim %v: exit %d, stderr %q; want 2 with a message", args, code, stderr)
		}
	}
}
