package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

// observed is one call to Options.Observe.
type observed struct {
	front, domain string
	set           bool
	n             int
	err           error
}

func TestObserve(t *testing.T) {
	set, err := rules.Parse("test.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.New(memory.Options{})
	defer mem.Close()
	var got []observed
	e := engine.NewWithOptions(mem, engine.Static(set), engine.Options{
		Front: engine.FrontGRPC,
		Observe: func(front, domain string, s *rules.Set, sts []engine.Status, err error) {
			got = append(got, observed{front, domain, s != nil, len(sts), err})
		},
	})
	defer e.Close()
	ctx := context.Background()
	if _, _, err := e.DecideAt(ctx, at, "test", [][]rules.Entry{d("ip", "1.2.3.4"), d("api", "k")}, nil); err != nil {
		t.Fatal(err)
	}
	jctx := engine.WithFront(ctx, engine.FrontHTTPJSON)
	if _, _, err := e.DecideAt(jctx, at, "test", [][]rules.Entry{d("ip", "1.2.3.4")}, []int64{-1}); err == nil {
		t.Fatal("negative hits: no error")
	}
	op := floodgate.Op{Key: "inline", Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Minute}}}
	if _, err := e.DecideOp(engine.WithFront(ctx, engine.FrontCheck), &op); err != nil {
		t.Fatal(err)
	}
	want := []observed{
		{engine.FrontGRPC, "test", true, 2, nil},
		{engine.FrontHTTPJSON, "test", true, 0, nil},
		{engine.FrontCheck, "", false, 1, nil},
	}
	if len(got) != len(want) {
		t.Fatalf("observed %d calls, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g := got[i]
		if i == 1 {
			if g.err == nil || !errors.Is(g.err, floodgate.ErrInvalid) {
				t.Errorf("call %d: err %v, want ErrInvalid", i, g.err)
			}
			g.err = nil
		}
		if g != want[i] {
			t.Errorf("call %d: %+v, want %+v", i, g, want[i])
		}
	}
	if f := engine.FrontOf(ctx); f != "" {
		t.Errorf("FrontOf(background) = %q", f)
	}
}

func TestDecideOp(t *testing.T) {
	lim := floodgate.Limit{Algorithm: floodgate.FixedWindow, Quota: 2, Window: time.Minute}
	now := floodgate.UnixMicro(at)
	ctx := context.Background()
	t.Run("store decides", func(t *testing.T) {
		mem := memory.New(memory.Options{})
		defer mem.Close()
		e := engine.New(mem, nil, nil)
		for i, want := range []engine.Code{engine.OK, engine.OK, engine.OverLimit} {
			op := floodgate.Op{Key: "k", Limits: []floodgate.Limit{lim}, Cost: 1, Now: now}
			st, err := e.DecideOp(ctx, &op)
			if err != nil {
				t.Fatal(err)
			}
			if st.Code != want || !st.Decided || st.Policy != rules.FailureDefault || st.Result != op.Result {
				t.Fatalf("decision %d: %+v, want code %v", i, st, want)
			}
		}
		op := floodgate.Op{Key: "", Limits: []floodgate.Limit{lim}, Cost: 1}
		if _, err := e.DecideOp(ctx, &op); !errors.Is(err, floodgate.ErrInvalid) || op.Err == nil {
			t.Fatalf("empty key: %v (op.Err %v), want ErrInvalid", err, op.Err)
		}
	})
	down := errors.New("connection refused")
	cases := []struct {
		policy  rules.FailurePolicy
		allowed []bool
	}{
		{rules.FailOpen, []bool{true, true, true}},
		{rules.FailClosed, []bool{false, false, false}},
		{rules.FailLocal, []bool{true, true, false}},
	}
	for _, c := range cases {
		t.Run(c.policy.String(), func(t *testing.T) {
			cs := &countingStore{Store: memory.New(memory.Options{}), fail: down}
			defer cs.Store.Close()
			e := engine.NewWithOptions(cs, nil, engine.Options{OnStoreError: c.policy})
			defer e.Close()
			for i, allowed := range c.allowed {
				op := floodgate.Op{Key: "k", Limits: []floodgate.Limit{lim}, Cost: 1, Now: now, Each: make([]floodgate.Result, 1)}
				st, err := e.DecideOp(ctx, &op)
				if err != nil {
					t.Fatalf("decision %d: %v", i, err)
				}
				if st.Policy != c.policy || !errors.Is(st.StoreErr, down) || op.Result.Allowed != allowed || st.Result.Allowed != allowed || op.Err != nil {
					t.Fatalf("decision %d: %+v (op %+v), want policy %v allowed %v", i, st, op, c.policy, allowed)
				}
				if (st.Code == engine.OverLimit) == allowed {
					t.Fatalf("decision %d: code %v with allowed %v", i, st.Code, allowed)
				}
				if op.Each[0].Limit != lim {
					t.Fatalf("decision %d: each %+v", i, op.Each)
				}
			}
		})
	}
	t.Run("no policy", func(t *testing.T) {
		cs := &countingStore{Store: memory.New(memory.Options{}), fail: down}
		defer cs.Store.Close()
		e := engine.New(cs, nil, nil)
		op := floodgate.Op{Key: "k", Limits: []floodgate.Limit{lim}, Cost: 1}
		if _, err := e.DecideOp(ctx, &op); !errors.Is(err, engine.ErrStore) || !errors.Is(err, down) {
			t.Fatalf("err %v, want ErrStore wrapping the store's", err)
		}
	})
}
