package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestBenchCommand(t *testing.T) {
	var out, errb bytes.Buffer
	code := runBench(context.Background(), []string{"--requests", "3000", "--concurrency", "4", "--limit", "fixed_window/100/1h", "--batch", "--cache", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep struct {
		Decisions int64 `json:"decisions"`
		Allowed   int64 `json:"allowed"`
		Exactness struct {
			Admitted int64 `json:"admitted"`
			Allows   int64 `json:"limit_allows"`
			OK       bool  `json:"ok"`
		} `json:"exactness"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if rep.Decisions != 3000 || !rep.Exactness.OK || rep.Exactness.Admitted > rep.Exactness.Allows {
		t.Errorf("report %+v", rep)
	}
}

func TestBenchBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--limit", "fixed_window/0/1m"},
		{"--limit", "nope"},
		{"--dist", "normal"},
		{"--target", "http"},
		{"--target", "carrier-pigeon"},
		{"--hits", "0"},
	} {
		var out, errb bytes.Buffer
		if code := runBench(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		if !strings.Contains(errb.String(), "floodgate bench") {
			t.Errorf("%q: stderr %q does not say what is wrong", args, errb.String())
		}
	}
}
