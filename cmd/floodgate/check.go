package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	pb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func init() {
	register("check", "ask a running server (Envoy's gRPC API) to decide one request and print the result", runCheck)
}

const checkUsage = `Usage:

	floodgate check [--addr ADDR] --domain D --descriptor key=value[,key=value] [--descriptor ...] [--hits N] [--timeout 5s]

Sends one ShouldRateLimit call to the gRPC RateLimitService at --addr (a
running "floodgate serve", or any Envoy rate-limit service) and prints the
overall code and each descriptor's status. Each --descriptor is one
descriptor of the request; --hits is the request's hits_addend (default 1).
The call counts like any request.

Exit status: 0 when OK, 1 when over limit, 2 on error or bad usage.

Flags:
`

// runCheck runs "floodgate check".
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8081", "`address` of the gRPC RateLimitService")
	domain := fs.String("domain", "", "the rate-limit domain (required)")
	hits := fs.Uint("hits", 1, "the request's hits_addend: the cost of each descriptor")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	var descs descriptorFlag
	fs.Var(&descs, "descriptor", "a descriptor as key=value[,key=value]; repeat for several descriptors of one request")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), checkUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, os.LookupEnv); err != nil {
		return flagsExit(err)
	}
	switch {
	case *domain == "" || len(descs) == 0:
		fmt.Fprintf(stderr, "floodgate check: give --domain and at least one --descriptor\n")
		return 2
	case *hits > 1<<32-1:
		fmt.Fprintf(stderr, "floodgate check: --hits %d: at most %d\n", *hits, uint32(1<<32-1))
		return 2
	case *timeout <= 0:
		fmt.Fprintf(stderr, "floodgate check: --timeout %v: want a positive duration\n", *timeout)
		return 2
	}
	req := &pb.RateLimitRequest{Domain: *domain, HitsAddend: uint32(*hits)}
	for _, d := range descs {
		rd := &rlv3.RateLimitDescriptor{}
		for _, e := range d {
			rd.Entries = append(rd.Entries, &rlv3.RateLimitDescriptor_Entry{Key: e.Key, Value: e.Value})
		}
		req.Descriptors = append(req.Descriptors, rd)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(stderr, "floodgate check: %s: %v\n", *addr, err)
		return 2
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := pb.NewRateLimitServiceClient(conn).ShouldRateLimit(cctx, req, grpc.WaitForReady(true))
	if err != nil {
		fmt.Fprintf(stderr, "floodgate check: %s: %v\n", *addr, err)
		return 2
	}
	fmt.Fprintf(stdout, "%s\n", resp.GetOverallCode())
	for i, st := range resp.GetStatuses() {
		fmt.Fprintf(stdout, "descriptor %d %s: %s", i, describe(descs, i), st.GetCode())
		if l := st.GetCurrentLimit(); l != nil {
			fmt.Fprintf(stdout, ", limit %d per", l.GetRequestsPerUnit())
			if m := l.GetUnitMultiplier(); m != nil {
				fmt.Fprintf(stdout, " %d", m.GetValue())
			}
			fmt.Fprintf(stdout, " %s", l.GetUnit())
			if l.GetName() != "" {
				fmt.Fprintf(stdout, " (%s)", l.GetName())
			}
			fmt.Fprintf(stdout, ", remaining %d", st.GetLimitRemaining())
		}
		if d := st.GetDurationUntilReset(); d != nil {
			fmt.Fprintf(stdout, ", reset in %v", d.AsDuration())
		}
		fmt.Fprintln(stdout)
	}
	for _, h := range resp.GetResponseHeadersToAdd() {
		fmt.Fprintf(stdout, "header %s: %s\n", h.GetKey(), h.GetValue())
	}
	if resp.GetOverallCode() == pb.RateLimitResponse_OVER_LIMIT {
		return 1
	}
	return 0
}

// describe formats descriptor i as key=value,key=value.
func describe(descs descriptorFlag, i int) string {
	s := ""
	for j, e := range descs[i] {
		if j > 0 {
			s += ","
		}
		s += e.String()
	}
	return s
}
