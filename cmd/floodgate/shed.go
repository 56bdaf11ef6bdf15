package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate/floodgate/metrics"
	"github.com/floodgate/floodgate/shed"
)

// shedConfig is what the load shedder's flags set.
type shedConfig struct {
	capacity    int
	sheddableAt float64
	normalAt    float64
	header      string
	def         shed.Priority
}

// shedFlags defines the --shed-* flags on fs.
func shedFlags(cfg *shedConfig, fs *flag.FlagSet) {
	fs.IntVar(&cfg.capacity, "shed-capacity", 0, "load shedding: the most requests this proxy serves at once; past the thresholds below, lower priorities are answered 503 first (0: off)")
	fs.Float64Var(&cfg.sheddableAt, "shed-sheddable-at", shed.DefaultSheddableAt, "load shedding: share of --shed-capacity in flight from which sheddable requests are shed")
	fs.Float64Var(&cfg.normalAt, "shed-normal-at", shed.DefaultNormalAt, "load shedding: share of --shed-capacity in flight from which normal requests are shed; the rest is kept for critical ones")
	fs.StringVar(&cfg.header, "shed-priority-header", "X-Priority", "load shedding: request `header` naming the priority (critical, normal or sheddable); set or strip it at your edge, since a client could claim critical")
	fs.Func("shed-default-priority", "load shedding: the priority of a request without the header: critical, normal or sheddable (default normal)", func(s string) error {
		p, err := shed.ParsePriority(s)
		cfg.def = p
		return err
	})
}

// check validates the flags by building a shedder.
func (c shedConfig) check() error {
	if c.capacity == 0 {
		return nil
	}
	switch {
	case c.header == "":
		return errors.New("--shed-priority-header: empty")
	case !(c.sheddableAt > 0 && c.sheddableAt <= 1):
		return fmt.Errorf("--shed-sheddable-at %v: want a share of capacity in (0, 1]", c.sheddableAt)
	case !(c.normalAt > 0 && c.normalAt <= 1):
		return fmt.Errorf("--shed-normal-at %v: want a share of capacity in (0, 1]", c.normalAt)
	case c.sheddableAt > c.normalAt:
		return fmt.Errorf("--shed-sheddable-at %v is above --shed-normal-at %v: sheddable requests must be shed first; lower --shed-sheddable-at too", c.sheddableAt, c.normalAt)
	}
	_, err := c.shedder()
	return err
}

func (c shedConfig) shedder() (*shed.Shedder, error) {
	if c.capacity < 0 {
		return nil, fmt.Errorf("--shed-capacity %d: want 0 (off) or more", c.capacity)
	}
	return shed.New(shed.Options{Capacity: c.capacity, SheddableAt: c.sheddableAt, NormalAt: c.normalAt})
}

// shedMiddleware returns the load shedder's middleware and registers its
// metrics in mx, or nil when --shed-capacity is 0.
func shedMiddleware(cfg shedConfig, mx *metrics.Metrics) (func(http.Handler) http.Handler, error) {
	if cfg.capacity == 0 {
		return nil, nil
	}
	s, err := cfg.shedder()
	if err != nil {
		return nil, err
	}
	mw, err := s.Middleware(shed.Header(cfg.header, cfg.def))
	if err != nil {
		return nil, err
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "floodgate_shed_in_flight", Help: "Requests the load shedder has admitted and not yet seen end."},
			func() float64 { return float64(s.Stats().InFlight) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "floodgate_shed_capacity", Help: "The load shedder's capacity (--shed-capacity)."},
			func() float64 { return float64(s.Stats().Capacity) }),
	}
	for _, p := range shed.Priorities() {
		for _, outcome := range []string{"admitted", "shed"} {
			cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "floodgate_shed_requests_total",
				Help:        "Requests the load shedder admitted or shed (503), by priority.",
				ConstLabels: prometheus.Labels{"priority": p.String(), "outcome": outcome},
			}, func() float64 {
				st := s.Stats()
				if outcome == "shed" {
					return float64(st.Shed[p])
				}
				return float64(st.Admitted[p])
			}))
		}
	}
	for _, c := range cs {
		if err := mx.Registry().Register(c); err != nil {
			return nil, fmt.Errorf("load shedding metrics: %w", err)
		}
	}
	return mw, nil
}
