package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	pb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/engine"
)

// RateLimitService is what POST /json answers with: Envoy's
// RateLimitService, such as an *rls.Server.
type RateLimitService interface {
	ShouldRateLimit(ctx context.Context, req *pb.RateLimitRequest) (*pb.RateLimitResponse, error)
}

// HandleEnvoy serves Envoy's POST /json with svc, as envoyproxy/ratelimit
// does: the body is a RateLimitRequest as protojson, the answer a
// RateLimitResponse as protojson, 200 when its overall_code is OK and 429
// when OVER_LIMIT. A body that is not a RateLimitRequest, or a request svc
// rejects (no domain, no descriptors), gets 400 with a [Problem]; a store
// that cannot decide gets 503. Call it before serving.
func (h *Handler) HandleEnvoy(svc RateLimitService) {
	h.mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) { h.envoyJSON(w, r, svc) })
}

func (h *Handler) envoyJSON(w http.ResponseWriter, r *http.Request, svc RateLimitService) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, http.MethodPost)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, Problem{Error: fmt.Sprintf("body larger than %d bytes", MaxBodyBytes)})
			return
		}
		writeJSON(w, http.StatusBadRequest, Problem{Error: "reading body: " + err.Error()})
		return
	}
	var req pb.RateLimitRequest
	if err := protojson.Unmarshal(body, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, Problem{Error: "body is not a RateLimitRequest: " + err.Error()})
		return
	}
	resp, err := svc.ShouldRateLimit(engine.WithFront(r.Context(), engine.FrontHTTPJSON), &req)
	if err != nil {
		st := status.Convert(err)
		code := http.StatusServiceUnavailable
		if st.Code() == codes.InvalidArgument {
			code = http.StatusBadRequest
		}
		writeJSON(w, code, Problem{Error: st.Message()})
		return
	}
	out, err := protojson.Marshal(resp)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, Problem{Error: "cannot encode response: " + err.Error()})
		return
	}
	code := http.StatusOK
	if resp.GetOverallCode() == pb.RateLimitResponse_OVER_LIMIT {
		code = http.StatusTooManyRequests
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(out, '\n'))
}

// readyKey is the key GET /readyz peeks at to check the store.
const readyKey = "floodgate|readyz"

// readyTimeout bounds the store check of GET /readyz.
const readyTimeout = 2 * time.Second

// HandleReady serves GET /readyz: 200 "ready" when rulesLoaded reports true
// (nil: always) and the store answers a peek (cost 0, nothing counted)
// within 2s; 503 with the reason otherwise. Call it before serving.
func (h *Handler) HandleReady(rulesLoaded func() bool) {
	h.mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, r, "GET, HEAD")
			return
		}
		if rulesLoaded != nil && !rulesLoaded() {
			writeJSON(w, http.StatusServiceUnavailable, Problem{Error: "no rules loaded"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		ops := []floodgate.Op{{Key: readyKey, Limits: []floodgate.Limit{{Algorithm: floodgate.FixedWindow, Quota: 1, Window: time.Second}}}}
		err := h.store.Decide(ctx, ops)
		if err == nil {
			err = ops[0].Err
		}
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, Problem{Error: "store: " + err.Error()})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodHead {
			_, _ = io.WriteString(w, "ready\n")
		}
	})
}
