package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/floodgate/floodgate/internal/proctest"
)

type checkResponse struct {
	Allowed      bool   `json:"allowed"`
	Limit        int64  `json:"limit"`
	Remaining    int64  `json:"remaining"`
	ResetAfter   string `json:"reset_after"`
	ResetAfterMS int64  `json:"reset_after_ms"`
	RetryAfter   string `json:"retry_after"`
	RetryAfterMS int64  `json:"retry_after_ms"`
	Window       string `json:"window"`
	Algorithm    string `json:"algorithm"`
	Error        string `json:"error"`
	Field        string `json:"field"`
}

var client = &http.Client{Timeout: 10 * time.Second}

func post(t *testing.T, url, body string) (*http.Response, checkResponse) {
	t.Helper()
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	var r checkResponse
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("POST %s %s: decoding the answer: %v", url, body, err)
	}
	return resp, r
}

// The window is the longest allowed (366 days, aligned to the Unix epoch), so
// a window boundary falls inside the test about once in 30 million runs.
const yearly = `{"algorithm":"fixed_window","quota":3,"window":"8784h"}`

func TestServeCheck(t *testing.T) {
	p := proctest.Serve(t)
	url := p.URL("/v1/check")
	body := `{"key":"user:42","cost":1,"limit":` + yearly + `}`
	for i := 1; i <= 3; i++ {
		resp, r := post(t, url, body)
		if resp.StatusCode != http.StatusOK || !r.Allowed || r.Remaining != int64(3-i) || r.Limit != 3 ||
			r.Window != "8784h" || r.Algorithm != "fixed_window" || r.RetryAfter != "0s" || r.RetryAfterMS != 0 || r.ResetAfterMS <= 0 {
			t.Fatalf("request %d: %s %+v, want 200 allowed with %d remaining", i, resp.Status, r, 3-i)
		}
	}
	resp, r := post(t, url, body)
	if resp.StatusCode != http.StatusTooManyRequests || r.Allowed || r.Remaining != 0 || r.Limit != 3 {
		t.Fatalf("4th request: %s %+v, want 429 denied", resp.Status, r)
	}
	// A fixed window's retry is its reset: the end of the window.
	if r.RetryAfterMS <= 0 || r.RetryAfterMS != r.ResetAfterMS {
		t.Errorf("4th request: retry_after_ms %d, reset_after_ms %d: want equal and positive", r.RetryAfterMS, r.ResetAfterMS)
	}
	if d, err := time.ParseDuration(r.RetryAfter); err != nil || (d+time.Millisecond-1)/time.Millisecond != time.Duration(r.RetryAfterMS) {
		t.Errorf("4th request: retry_after %q does not match retry_after_ms %d (%v)", r.RetryAfter, r.RetryAfterMS, err)
	}
	want := strconv.FormatInt((r.RetryAfterMS+999)/1000, 10)
	if got := resp.Header.Get("Retry-After"); got != want {
		t.Errorf("4th request: Retry-After %q, want %q (retry_after_ms %d rounded up to seconds)", got, want, r.RetryAfterMS)
	}

	// Another key has its own count; a cost above the quota can never pass.
	if resp, r := post(t, url, `{"key":"user:43","limit":`+yearly+`}`); resp.StatusCode != http.StatusOK || r.Remaining != 2 {
		t.Errorf("other key: %s %+v, want 200 with 2 remaining", resp.Status, r)
	}
	resp, r = post(t, url, `{"key":"user:44","cost":4,"limit":`+yearly+`}`)
	if resp.StatusCode != http.StatusTooManyRequests || r.RetryAfter != "never" || r.RetryAfterMS != -1 || resp.Header.Get("Retry-After") != "" {
		t.Errorf("cost 4 of 3: %s %+v Retry-After %q, want 429 never, -1, no header", resp.Status, r, resp.Header.Get("Retry-After"))
	}

	bad := []struct{ body, field string }{
		{`{"key":"k","limit":{"algorithm":"token_bucket","quota":100,"window":"1 minute"}}`, "limit.window"},
		{`{"key":"k","limit":{"algorithm":"bucket","quota":100,"window":"1m"}}`, "limit.algorithm"},
		{`{"key":"k","limit":{"algorithm":"gcra","quota":0,"window":"1m"}}`, "limit.quota"},
		{`{"key":"k","cost":-2,"limit":` + yearly + `}`, "cost"},
		{`{"limit":` + yearly + `}`, "key"},
		{`{"key":"k","limit":` + yearly + `,"extra":1}`, "extra"},
		{`{"key":"k","limit":`, ""},
	}
	for _, b := range bad {
		resp, r := post(t, url, b.body)
		if resp.StatusCode != http.StatusBadRequest || r.Field != b.field || r.Error == "" {
			t.Errorf("%s: %s %+v, want 400 naming field %q", b.body, resp.Status, r, b.field)
		}
	}

	resp, r = post(t, url, `{"key":"k","limit":`+yearly+`,"pad":"`+strings.Repeat("x", 70000)+`"}`)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || r.Error == "" {
		t.Errorf("70 kB body: %s %+v, want 413", resp.Status, r)
	}

	get, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	get.Body.Close()
	if get.StatusCode != http.StatusMethodNotAllowed || get.Header.Get("Allow") != "POST" {
		t.Errorf("GET /v1/check: %s Allow %q, want 405 Allow POST", get.Status, get.Header.Get("Allow"))
	}

	h, err := client.Get(p.URL("/healthz"))
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := io.ReadAll(h.Body)
	h.Body.Close()
	if h.StatusCode != http.StatusOK || strings.TrimSpace(string(hb)) != "ok" {
		t.Errorf("GET /healthz: %s %q, want 200 ok", h.Status, hb)
	}
}

func TestServeGracefulShutdown(t *testing.T) {
	p := proctest.Serve(t, "--http", "127.0.0.1:0", "--log-format", "json")
	if resp, _ := post(t, p.URL("/v1/check"), `{"key":"k","limit":`+yearly+`}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("check: %s", resp.Status)
	}
	code, err := p.Stop()
	if err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit code %d, %v; want 0", code, err)
	}
	logs := p.Stderr()
	for _, msg := range []string{`"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(logs, msg) {
			t.Errorf("logs lack %s:\n%s", msg, logs)
		}
	}
	if _, err := client.Get(p.URL("/healthz")); err == nil {
		t.Errorf("server still answers after exiting")
	}
}

func TestServeEnvironment(t *testing.T) {
	// The flag wins over the environment: a bad FLOODGATE_STORE is ignored
	// when --store is given.
	p := proctest.Start(t, proctest.Options{
		Args: []string{"serve", "--store", "memory"},
		Env:  []string{"FLOODGATE_STORE=nosuch://x", "FLOODGATE_LOG_FORMAT=json", "FLOODGATE_LOG_LEVEL=debug"},
	})
	post(t, p.URL("/v1/check"), `{"key":"k","limit":`+yearly+`}`)
	// The decision's debug line may reach the pipe just after the answer.
	applied := func(logs string) bool {
		return strings.Contains(logs, `"msg":"listening"`) && strings.Contains(logs, `"level":"DEBUG"`)
	}
	for deadline := time.Now().Add(5 * time.Second); !applied(p.Stderr()) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if logs := p.Stderr(); !applied(logs) {
		t.Errorf("FLOODGATE_LOG_FORMAT=json and FLOODGATE_LOG_LEVEL=debug not applied:\n%s", logs)
	}

	// Without the flag, the environment applies.
	_, stderr, code := proctest.Run(t, []string{"FLOODGATE_STORE=nosuch://x"}, "serve")
	if code != 1 || !strings.Contains(stderr, `unknown scheme \"nosuch\"`) {
		t.Errorf("FLOODGATE_STORE=nosuch://x: exit %d, stderr:\n%s\nwant exit 1 naming the scheme", code, stderr)
	}
	_, stderr, code = proctest.Run(t, []string{"FLOODGATE_LOG_FORMAT=xml"}, "serve")
	if code != 2 || !strings.Contains(stderr, "xml") {
		t.Errorf("FLOODGATE_LOG_FORMAT=xml: exit %d, stderr:\n%s\nwant exit 2", code, stderr)
	}
}

func TestServeSeveralProcesses(t *testing.T) {
	ps := proctest.ServeN(t, 2)
	if ps[0].Addr("http") == ps[1].Addr("http") {
		t.Fatalf("two processes on one address %s", ps[0].Addr("http"))
	}
	// Each memory store counts on its own.
	for _, p := range ps {
		if resp, r := post(t, p.URL("/v1/check"), `{"key":"k","cost":3,"limit":`+yearly+`}`); resp.StatusCode != http.StatusOK || r.Remaining != 0 {
			t.Errorf("pid %d: %s %+v, want 200 with 0 remaining", p.Pid(), resp.Status, r)
		}
	}
}

// TestServeFinishesInFlightRequests sends half a request, stops the server,
// then sends the rest: the request is still answered, new connections are
// refused, and the process exits 0.
func TestServeFinishesInFlightRequests(t *testing.T) {
	p := proctest.Serve(t)
	conn, err := net.DialTimeout("tcp", p.Addr("http"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	body := `{"key":"k","limit":` + yearly + `}`
	head := fmt.Sprintf("POST /v1/check HTTP/1.1\r\nHost: floodgate\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	if _, err := io.WriteString(conn, head+body[:5]); err != nil {
		t.Fatal(err)
	}
	// Nothing outside the process shows when the server has accepted the
	// connection and parsed the request head; until then a shutdown would
	// rightly refuse it. Give it a moment on a loaded machine.
	time.Sleep(time.Second)

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(proctest.ReadyTimeout)
	for !strings.Contains(p.Stderr(), `msg="shutting down"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no shutdown logged within %v:\n%s", proctest.ReadyTimeout, p.Stderr())
		}
		select {
		case <-p.Exited():
			t.Fatalf("exited with a request in flight:\n%s", p.Stderr())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// The listener closes as shutdown begins; wait until new connections
	// are refused (bounded).
	for {
		c, err := net.DialTimeout("tcp", p.Addr("http"), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("still accepting connections after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if _, err := io.WriteString(conn, body[5:]); err != nil {
		t.Fatalf("finishing the in-flight request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the in-flight answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("in-flight request: %s, want 200", resp.Status)
	}
	code, err := p.Wait(proctest.StopTimeout)
	if err != nil || code != 0 {
		t.Errorf("exit code %d, %v; want 0", code, err)
	}
}
