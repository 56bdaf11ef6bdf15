// Package proctest runs the floodgate binary as real processes in tests.
//
// [Binary] builds cmd/floodgate once per test binary (with -race when the
// tests run with -race, so the race detector watches the servers too).
// [Serve] starts "floodgate serve" on a free loopback port, waits until it
// answers GET /healthz and stops it when the test ends; [ServeN] starts
// several at once, for tests where many processes share one store:
//
//	ps := proctest.ServeN(t, 3, "--store", "redis://127.0.0.1:6379")
//	resp, err := http.Post(ps[0].URL("/v1/check"), "application/json", body)
//
// [Start] runs any command line with [Options]; [Run] runs a command that
// exits by itself and returns its output.
//
// # Addresses
//
// Processes get FLOODGATE_HTTP=127.0.0.1:0 (and the other variables of
// [ListenEnv]) in their environment, so every listener picks a free port
// unless a flag says otherwise; any FLOODGATE_* variable of the test's own
// environment is removed. A server announces each listener with a log line
// whose message is "listening", with attributes protocol (e.g. "http") and
// addr (the actual address), in the text or the JSON log format;
// [Process.Addr] returns what was announced.
//
// # Stopping
//
// Processes are stopped by their pid: SIGTERM, then SIGKILL if they have
// not exited after [StopTimeout]. They also get SIGKILL if the test binary
// dies (Linux). A process stopped by the cleanup that does not exit with
// status 0 fails the test, so a server that crashes, hangs on shutdown or
// hits a data race is noticed; call [Process.Kill] or [Process.Stop] first
// when that is the point of the test.
package proctest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts. Generous, because a race-enabled binary on a busy two-core
// machine starts slowly; they only bound how long a broken test hangs.
var (
	// ReadyTimeout bounds how long Start waits for a server to listen and
	// answer /healthz.
	ReadyTimeout = 60 * time.Second
	// StopTimeout is how long a process has to exit after SIGTERM before it
	// gets SIGKILL.
	StopTimeout = 15 * time.Second
	// RunTimeout bounds a command run by Run.
	RunTimeout = 60 * time.Second
)

// ListenEnv is added to every process's environment so that each listener
// binds a free loopback port by default. Flags given in the arguments win.
var ListenEnv = []string{
	"FLOODGATE_HTTP=127.0.0.1:0",
	"FLOODGATE_GRPC=127.0.0.1:0",
	"FLOODGATE_ADMIN=127.0.0.1:0",
}

const pkg = "github.com/floodgate/floodgate/cmd/floodgate"

var build struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the path of the floodgate binary, building it on first use
// (once per test binary; later calls reuse it). It fails the test if the
// build fails.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() { build.path, build.err = buildBinary() })
	if build.err != nil {
		t.Fatalf("proctest: %v", build.err)
	}
	return build.path
}

// buildBinary builds cmd/floodgate into a shared directory under the temporary
// directory. It writes a fresh file and renames it into place, so test
// binaries of several packages building at once never run a half-written
// file, and old builds do not pile up.
func buildBinary() (string, error) {
	dir := filepath.Join(os.TempDir(), "floodgate-proctest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("building floodgate: %w", err)
	}
	name := "floodgate"
	args := []string{"build"}
	if raceEnabled {
		name += "-race"
		args = append(args, "-race")
	}
	f, err := os.CreateTemp(dir, name+"-*.tmp")
	if err != nil {
		return "", fmt.Errorf("building floodgate: %w", err)
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append(args, "-o", tmp, pkg)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, out)
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("building floodgate: %w", err)
	}
	return final, nil
}

// Options says how to start a process.
type Options struct {
	// Args are the arguments after the binary's name, e.g. {"serve",
	// "--store", "memory"}. Required.
	Args []string
	// Env holds extra KEY=VALUE environment entries, applied after the test's
	// environment (without its FLOODGATE_* variables) and ListenEnv.
	Env []string
	// Wait lists the protocols whose "listening" log line Start waits for.
	// For "http" it also waits until GET /healthz answers 200. Nil means
	// {"http"}; an empty non-nil slice does not wait at all.
	Wait []string
}

// Process is a running floodgate process. Its methods are safe for
// concurrent use.
type Process struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout *output
	stderr *output
	exited chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's error, set before exited is closed

	mu      sync.Mutex
	stopped bool // Stop or Kill was called
}

// Serve starts "floodgate serve" with args and waits until it answers
// /healthz. The HTTP listener is on a free loopback port unless args set
// --http.
func Serve(t testing.TB, args ...string) *Process {
	t.Helper()
	return Start(t, Options{Args: append([]string{"serve"}, args...)})
}

// ServeN starts n "floodgate serve" processes with the same args, all at
// once, and waits until each answers /healthz.
func ServeN(t testing.TB, n int, args ...string) []*Process {
	t.Helper()
	return StartN(t, n, Options{Args: append([]string{"serve"}, args...)})
}

// Start starts a process as opts says, waits until it is ready (see
// [Options.Wait]), and registers its stop with t.Cleanup. It fails the test
// if the process cannot start or exits or times out before it is ready.
func Start(t testing.TB, opts Options) *Process {
	t.Helper()
	return StartN(t, 1, opts)[0]
}

// StartN starts n processes with the same options, all at once, then waits
// until each is ready.
func StartN(t testing.TB, n int, opts Options) []*Process {
	t.Helper()
	bin := Binary(t)
	ps := make([]*Process, n)
	for i := range ps {
		p, err := start(t, bin, opts)
		if err != nil {
			t.Fatalf("proctest: %v", err)
		}
		ps[i] = p
	}
	wait := opts.Wait
	if wait == nil {
		wait = []string{"http"}
	}
	deadline := time.Now().Add(ReadyTimeout)
	for _, p := range ps {
		if err := p.waitReady(wait, deadline); err != nil {
			t.Fatalf("proctest: %v\nstderr:\n%s", err, p.Stderr())
		}
	}
	return ps
}

func start(t testing.TB, bin string, opts Options) (*Process, error) {
	if len(opts.Args) == 0 {
		return nil, errors.New("no arguments: want at least a command such as serve")
	}
	p := &Process{
		t:      t,
		stdout: newOutput(),
		stderr: newOutput(),
		exited: make(chan struct{}),
	}
	cmd := exec.Command(bin, opts.Args...)
	cmd.Env = environ(opts.Env)
	cmd.Stdout = p.stdout
	cmd.Stderr = p.stderr
	cmd.SysProcAttr = DieWithParent()
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting floodgate %s: %w", strings.Join(opts.Args, " "), err)
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.cleanup)
	return p, nil
}

// environ returns the test's environment without FLOODGATE_* variables,
// then ListenEnv, then extra.
func environ(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLOODGATE_") {
			env = append(env, kv)
		}
	}
	env = append(env, ListenEnv...)
	return append(env, extra...)
}

// waitReady waits until every protocol in wait has announced its address and
// the HTTP listener, if waited for, answers /healthz.
func (p *Process) waitReady(wait []string, deadline time.Time) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for _, proto := range wait {
		for {
			addr, changed := p.stderr.addr(proto)
			if addr != "" {
				break
			}
			select {
			case <-changed:
			case <-p.exited:
				return fmt.Errorf("floodgate %s (pid %d) exited (%v) before listening on %s", p.args(), p.Pid(), p.err, proto)
			case <-timer.C:
				return fmt.Errorf("floodgate %s (pid %d) did not log a %s listening address within %v", p.args(), p.Pid(), proto, ReadyTimeout)
			}
		}
	}
	for _, proto := range wait {
		if proto == "http" {
			if err := p.waitHealthy(timer.C); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *Process) waitHealthy(timeout <-chan time.Time) error {
	client := &http.Client{Timeout: 2 * time.Second}
	url := p.URL("/healthz")
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-tick.C:
		case <-p.exited:
			return fmt.Errorf("floodgate %s (pid %d) exited (%v) before %s answered", p.args(), p.Pid(), p.err, url)
		case <-timeout:
			return fmt.Errorf("floodgate %s (pid %d): %s did not answer 200 within %v: %v", p.args(), p.Pid(), url, ReadyTimeout, last)
		}
	}
}

func (p *Process) args() string { return strings.Join(p.cmd.Args[1:], " ") }

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Addr returns the address the process announced for protocol ("http",
// "grpc", ...), or "" if it has not.
func (p *Process) Addr(protocol string) string {
	a, _ := p.stderr.addr(protocol)
	return a
}

// URL returns "http://" + the HTTP address + path.
func (p *Process) URL(path string) string {
	return "http://" + p.Addr("http") + path
}

// Stdout returns what the process has written to its standard output so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr returns what the process has written to its standard error (its
// logs) so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Exited returns a channel closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait waits up to timeout for the process to exit by itself and returns its
// exit code (-1 when a signal killed it).
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("floodgate %s (pid %d) still running after %v", p.args(), p.Pid(), timeout)
	}
}

// Stop sends SIGTERM, waits up to StopTimeout, then sends SIGKILL. It returns
// the exit code (-1 when a signal killed it) and an error if the process had
// to be killed. Stopping an exited process returns its exit code.
func (p *Process) Stop() (int, error) {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-time.After(StopTimeout):
	}
	p.kill()
	return -1, fmt.Errorf("floodgate %s (pid %d) did not exit within %v of SIGTERM; killed", p.args(), p.Pid(), StopTimeout)
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.kill()
}

func (p *Process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(StopTimeout):
		p.t.Errorf("proctest: floodgate %s (pid %d) still not reaped %v after SIGKILL", p.args(), p.Pid(), StopTimeout)
	}
}

// cleanup stops the process if the test did not, and fails the test if it
// does not exit with status 0. When the test failed it logs the process's
// standard error.
func (p *Process) cleanup() {
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	if !stopped {
		code, err := p.Stop()
		switch {
		case err != nil:
			p.t.Errorf("proctest: %v", err)
		case code != 0:
			p.t.Errorf("proctest: floodgate %s (pid %d) exited with status %d on SIGTERM, want 0", p.args(), p.Pid(), code)
		}
	} else {
		p.kill()
	}
	if p.t.Failed() {
		p.t.Logf("floodgate %s (pid %d) stderr:\n%s", p.args(), p.Pid(), tail(p.Stderr(), 8<<10))
	}
}

// tail returns the last n bytes of s, from a line start.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "...\n" + s
}

// Run runs the floodgate binary with args until it exits (at most
// RunTimeout, then it is killed) and returns its standard output, standard
// error and exit code. env holds extra KEY=VALUE entries as in
// [Options.Env].
func Run(t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	bin := Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), RunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = environ(env)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = DieWithParent()
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("proctest: floodgate %s did not exit within %v\nstderr:\n%s", strings.Join(args, " "), RunTimeout, errb.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("proctest: running floodgate %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// output collects a process's output and watches it for "listening" lines.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte            // the unfinished last line
	addrs   map[string]string // protocol → address
	changed chan struct{}     // closed and replaced when addrs changes
}

func newOutput() *output {
	return &output{addrs: map[string]string{}, changed: make(chan struct{})}
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(b)
	o.partial = append(o.partial, b...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		line := o.partial[:i]
		if proto, addr, ok := parseListening(line); ok {
			o.addrs[proto] = addr
			close(o.changed)
			o.changed = make(chan struct{})
		}
		o.partial = o.partial[i+1:]
	}
	if len(o.partial) == 0 {
		o.partial = nil // let the consumed prefix be collected
	}
	return len(b), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// addr returns the address announced for proto, and a channel closed when
// more addresses are announced.
func (o *output) addr(proto string) (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.addrs[proto], o.changed
}

var (
	textMsg   = regexp.MustCompile(`(?:^| )msg=listening(?: |$)`)
	textProto = regexp.MustCompile(`(?:^| )protocol=("(?:[^"\\]|\\.)*"|\S+)`)
	textAddr  = regexp.MustCompile(`(?:^| )addr=("(?:[^"\\]|\\.)*"|\S+)`)
)

// parseListening recognises a "listening" log line, in slog's text or JSON
// format, and returns its protocol and addr attributes.
func parseListening(line []byte) (proto, addr string, ok bool) {
	line = bytes.TrimSpace(line)
	if len(line) > 0 && line[0] == '{' {
		var rec struct {
			Msg      string `json:"msg"`
			Protocol string `json:"protocol"`
			Addr     string `json:"addr"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.Msg != "listening" {
			return "", "", false
		}
		return rec.Protocol, rec.Addr, rec.Protocol != "" && rec.Addr != ""
	}
	if !textMsg.Match(line) {
		return "", "", false
	}
	p, a := textProto.FindSubmatch(line), textAddr.FindSubmatch(line)
	if p == nil || a == nil {
		return "", "", false
	}
	return unquote(string(p[1])), unquote(string(a[1])), true
}

func unquote(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}
