package gateway_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate/floodgate/engine"
	"github.com/floodgate/floodgate/gateway"
	"github.com/floodgate/floodgate/middleware"
	"github.com/floodgate/floodgate/rules"
	"github.com/floodgate/floodgate/store/memory"
)

const config = `
domain: gw
requests:
  descriptors:
    - path_prefix: /api/
      entries:
        - {key: remote_address, from: client_ip}
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3}
`

// at is 30 s into a minute: the window resets in 30 s.
var at = time.Date(2030, 1, 2, 3, 4, 30, 0, time.UTC)

// wait bounds every blocking step of a test.
const wait = 10 * time.Second

func newGateway(t *testing.T, upstream string) *httptest.Server {
	t.Helper()
	set, err := rules.Parse("gw.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	mw, err := middleware.Rules(engine.New(st, engine.Static(set), nil), "gw", middleware.Options{Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(upstream, gateway.Options{Middleware: mw})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv
}

var client = &http.Client{Timeout: wait}

func TestLimitsEnforced(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "upstream %s xff=%s", r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	defer up.Close()
	gw := newGateway(t, up.URL)

	for i := 1; i <= 4; i++ {
		resp, err := client.Get(gw.URL + "/api/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("RateLimit-Policy"); got != `"gw.remote_address";q=3;w=60` {
			t.Errorf("request %d: RateLimit-Policy %q", i, got)
		}
		if i <= 3 {
			if resp.StatusCode != 200 || string(body) != "upstream /api/x xff=127.0.0.1" {
				t.Errorf("request %d: %d %q, want 200 from the upstream", i, resp.StatusCode, body)
			}
			if got, want := resp.Header.Get("RateLimit"), fmt.Sprintf(`"gw.remote_address";r=%d;t=30`, 3-i); got != want {
				t.Errorf("request %d: RateLimit %q, want %q", i, got, want)
			}
			continue
		}
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "30" || resp.Header.Get("Content-Type") != "application/problem+json" ||
			!strings.Contains(string(body), `"violated-policies":["gw.remote_address"]`) {
			t.Errorf("request 4: %d Retry-After %q %q %s, want 429 after 30 s", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"), body)
		}
	}
	if hits.Load() != 3 {
		t.Errorf("upstream saw %d requests, want 3 (the denied one is not forwarded)", hits.Load())
	}
	// Paths the rules do not map are not limited.
	for range 5 {
		resp, err := client.Get(gw.URL + "/public")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("RateLimit") != "" {
			t.Fatalf("/public: %d %q, want 200 without fields", resp.StatusCode, resp.Header.Get("RateLimit"))
		}
	}
}

// The request body reaches the upstream before the client has finished it,
// and the upstream's chunks reach the client before the upstream has
// finished: a ping-pong that deadlocks (and times out) if either direction is
// buffered.
func TestStreaming(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.Header().Set("Content-Type", "text/plain")
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(w, "pong "+line)
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}))
	defer up.Close()
	gw := newGateway(t, up.URL)

	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", gw.URL+"/api/stream", pr)
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Do(req)
		done <- result{resp, err}
	}()
	deadline := time.AfterFunc(wait, func() { pw.CloseWithError(fmt.Errorf("test timed out")) })
	defer deadline.Stop()

	if _, err := io.WriteString(pw, "ping 1\n"); err != nil {
		t.Fatal(err)
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(wait):
		t.Fatal("no response headers while the request body is still open: the request is not streamed")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	defer res.resp.Body.Close()
	br := bufio.NewReader(res.resp.Body)
	for i := 1; i <= 3; i++ {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("pong ping %d\n", i) {
			t.Fatalf("chunk %d: %q, %v", i, line, err)
		}
		if i < 3 {
			fmt.Fprintf(pw, "ping %d\n", i+1)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after the request ended: %q, %v; want a clean end", rest, err)
	}
	if res.resp.Header.Get("RateLimit") == "" {
		t.Error("streamed response without RateLimit")
	}
}

// An Upgrade request is forwarded, the 101 comes back with the rate-limit
// fields, and bytes then flow both ways on the hijacked connections.
func TestUpgrade(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(conn, strings.ToUpper(line))
		}
	}))
	defer up.Close()
	gw := newGateway(t, up.URL)

	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(gw.URL, "http://"), wait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(wait))
	io.WriteString(conn, "GET /api/ws HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("upgrade: %s %q", resp.Status, resp.Header)
	}
	if got := resp.Header.Get("RateLimit"); got != `"gw.remote_address";r=2;t=30` {
		t.Errorf("101 RateLimit %q", got)
	}
	for _, msg := range []string{"hello\n", "again\n"} {
		io.WriteString(conn, msg)
		line, err := br.ReadString('\n')
		if err != nil || line != strings.ToUpper(msg) {
			t.Fatalf("echo of %q: %q, %v", msg, line, err)
		}
	}
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	gw := newGateway(t, "http://"+addr)
	resp, err := client.Get(gw.URL + "/api/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `{"type":"about:blank","title":"Bad Gateway","status":502,"detail":"the upstream service could not be reached or did not answer"}` + "\n"
	if resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "application/problem+json" || string(body) != want {
		t.Errorf("upstream down: %d %q %s, want 502 %s", resp.StatusCode, resp.Header.Get("Content-Type"), body, want)
	}
	if resp.Header.Get("RateLimit") == "" {
		t.Error("502 without RateLimit: the request was counted and should say so")
	}
}

func TestUpstreamTimeout(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(release)
	tr := &http.Transport{ResponseHeaderTimeout: 50 * time.Millisecond}
	defer tr.CloseIdleConnections()
	g, err := gateway.New(up.URL, gateway.Options{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	g.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != 504 || !bytes.Contains(w.Body.Bytes(), []byte(`"title":"Gateway Timeout"`)) {
		t.Errorf("upstream timeout: %d %s, want 504", w.Code, w.Body)
	}
}

func TestNewErrors(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "http://%zz"} {
		if _, err := gateway.New(u, gateway.Options{}); err == nil {
			t.Errorf("New(%q): no error", u)
		}
	}
}
