package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/sim"
)

func init() {
	register("sim", "simulate each algorithm: accuracy, bursts at window edges, memory per key", runSim)
}

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var opts sim.Options
	var algs, format, svg string
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&algs, "algorithms", "", "comma-separated `list` of algorithms (default: fixed_window, sliding_window_log, sliding_window, token_bucket, gcra)")
	fs.Int64Var(&opts.Quota, "quota", 100, "each limit's quota per window")
	fs.DurationVar(&opts.Window, "window", time.Minute, "each limit's window")
	fs.Float64Var(&opts.Load, "load", 2, "the steady workload's offered rate, as a multiple of the limit's")
	fs.IntVar(&opts.Windows, "windows", 20, "the steady workload's length, in windows")
	fs.Uint64Var(&opts.Seed, "seed", 1, "seed of the steady workload's arrivals")
	fs.IntVar(&opts.MemoryKeys, "memory-keys", 100_000, "keys the memory store holds to measure bytes per key (negative: skip)")
	fs.StringVar(&format, "format", "table", "output: table, csv or json")
	fs.StringVar(&svg, "svg", "", "also write a plot of both workloads to this `file` (SVG)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: floodgate sim [flags]\n\n"+
			"Runs each algorithm's state machine over two workloads at explicit instants (no clock,\n"+
			"no store; the same figures for the same seed): steady random arrivals at --load times\n"+
			"the rate, and 2×quota requests on each side of a window boundary. Prints what each\n"+
			"admits, the most it admits within any span of one window (exact when <= quota), and\n"+
			"the memory store's bytes per key.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, os.LookupEnv); err != nil {
		return flagsExit(err)
	}
	// A zero would stand for a default in sim.Options: refuse it here.
	switch {
	case opts.Quota < 1:
		fmt.Fprintf(stderr, "floodgate sim: --quota %d: want at least 1\n", opts.Quota)
		return 2
	case opts.Window <= 0:
		fmt.Fprintf(stderr, "floodgate sim: --window %v: want a positive duration\n", opts.Window)
		return 2
	case !(opts.Load > 0):
		fmt.Fprintf(stderr, "floodgate sim: --load %v: want a positive multiple of the rate\n", opts.Load)
		return 2
	case opts.Windows < 1:
		fmt.Fprintf(stderr, "floodgate sim: --windows %d: want at least 1\n", opts.Windows)
		return 2
	case opts.Seed < 1:
		fmt.Fprintf(stderr, "floodgate sim: --seed %d: want at least 1\n", opts.Seed)
		return 2
	}
	if algs != "" {
		for _, name := range strings.Split(algs, ",") {
			a, err := floodgate.ParseAlgorithm(strings.TrimSpace(name))
			if err != nil {
				fmt.Fprintf(stderr, "floodgate sim: --algorithms: %v\n", err)
				return 2
			}
			opts.Algorithms = append(opts.Algorithms, a)
		}
	}
	if format != "table" && format != "csv" && format != "json" {
		fmt.Fprintf(stderr, "floodgate sim: --format %q: want table, csv or json\n", format)
		return 2
	}
	if opts.MemoryKeys == 0 {
		opts.MemoryKeys = -1
	}
	rs, err := sim.Run(opts)
	if err != nil {
		fmt.Fprintf(stderr, "floodgate sim: %v\n", err)
		return 2
	}
	switch format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(simJSON(rs)); err != nil {
			fmt.Fprintf(stderr, "floodgate sim: %v\n", err)
			return 1
		}
	case "csv":
		fmt.Fprintln(stdout, "algorithm,quota,window,steady_offered,steady_admitted,steady_max_in_window,edge_offered,edge_admitted,edge_max_in_window,bytes_per_key")
		for _, r := range rs {
			fmt.Fprintf(stdout, "%v,%d,%v,%d,%d,%d,%d,%d,%d,%.1f\n", r.Algorithm, r.Limit.Quota, r.Limit.Window,
				r.Steady.Offered, r.Steady.Admitted, r.Steady.MaxInWindow, r.Edge.Offered, r.Edge.Admitted, r.Edge.MaxInWindow, r.BytesPerKey)
		}
	default:
		simTable(stdout, rs)
	}
	if svg != "" {
		if err := os.WriteFile(svg, simSVG(rs), 0o644); err != nil {
			fmt.Fprintf(stderr, "floodgate sim: --svg: %v\n", err)
			return 1
		}
	}
	return 0
}

func simTable(w io.Writer, rs []sim.Result) {
	if len(rs) == 0 {
		return
	}
	l := rs[0].Limit
	fmt.Fprintf(w, "Limits of %d per %v. Steady: %d windows of random arrivals. Edge: 2×quota on each side of a window boundary.\n"+
		"\"max in a window\" is the most admitted within any span of one window: exact when it is at most %d.\n\n", l.Quota, l.Window, rs[0].Windows, l.Quota)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "algorithm\tsteady offered\tadmitted\tper window\tmax in a window\tedge offered\tadmitted\tmax in a window\tover quota\tbytes/key\t")
	for _, r := range rs {
		windows := float64(max(r.Windows, 1))
		mem := "-"
		if r.BytesPerKey > 0 {
			mem = fmt.Sprintf("%.1f", r.BytesPerKey)
		}
		fmt.Fprintf(tw, "%v\t%d\t%d\t%.1f\t%d\t%d\t%d\t%d\t%+d\t%s\t\n", r.Algorithm, r.Steady.Offered, r.Steady.Admitted,
			float64(r.Steady.Admitted)/windows, r.Steady.MaxInWindow, r.Edge.Offered, r.Edge.Admitted, r.Edge.MaxInWindow,
			max(r.Steady.MaxInWindow, r.Edge.MaxInWindow)-r.Limit.Quota, mem)
	}
	tw.Flush()
}

type simResultJSON struct {
	Algorithm   string       `json:"algorithm"`
	Quota       int64        `json:"quota"`
	Window      string       `json:"window"`
	Steady      sim.Workload `json:"steady"`
	Edge        sim.Workload `json:"edge"`
	BytesPerKey float64      `json:"bytes_per_key,omitempty"`
}

func simJSON(rs []sim.Result) []simResultJSON {
	out := make([]simResultJSON, len(rs))
	for i, r := range rs {
		out[i] = simResultJSON{Algorithm: r.Algorithm.String(), Quota: r.Limit.Quota, Window: r.Limit.Window.String(), Steady: r.Steady, Edge: r.Edge, BytesPerKey: r.BytesPerKey}
	}
	return out
}

// simSVG plots, for each workload, every algorithm's admitted count in the
// trailing window over time, with the quota as a dashed line.
func simSVG(rs []sim.Result) []byte {
	const w, h, pad = 900, 260, 40
	colors := []string{"#e63946", "#2a9d8f", "#f4a261", "#457b9d", "#8d5fd3", "#6c757d"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, 2*h+40)
	for panel, name := range []string{"steady", "edge"} {
		y0 := panel*h + 20
		var maxT time.Duration
		var maxC int64 = 1
		for _, r := range rs {
			tr := r.Steady.Trail
			if name == "edge" {
				tr = r.Edge.Trail
			}
			for _, p := range tr {
				maxT, maxC = max(maxT, p.At), max(maxC, p.Count)
			}
			maxC = max(maxC, r.Limit.Quota)
		}
		maxC = maxC * 11 / 10
		x := func(t time.Duration) float64 { return pad + float64(t)/float64(max(maxT, 1))*float64(w-2*pad) }
		y := func(c int64) float64 { return float64(y0+h-pad) - float64(c)/float64(maxC)*float64(h-2*pad) }
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s: admitted in the trailing window</text>`+"\n", pad, y0+14, name)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#999"/>`+"\n", pad, y(0), w-pad, y(0))
		if len(rs) > 0 {
			q := rs[0].Limit.Quota
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#333" stroke-dasharray="4 4"/><text x="4" y="%.1f">%d</text>`+"\n", pad, y(q), w-pad, y(q), y(q)+4, q)
		}
		for i, r := range rs {
			tr := r.Steady.Trail
			if name == "edge" {
				tr = r.Edge.Trail
			}
			var pts []string
			for _, p := range tr {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.At), y(p.Count)))
			}
			c := colors[i%len(colors)]
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", c, strings.Join(pts, " "))
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%v</text>`+"\n", w-pad-150, y0+30+14*i, c, r.Algorithm)
		}
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}
