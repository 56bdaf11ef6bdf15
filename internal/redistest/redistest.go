// Package redistest starts real Redis servers for tests: a standalone
// server, a Redis Cluster and a Sentinel set, each on free loopback ports
// with no persistence, in a temporary directory, stopped by pid.
//
// When redis-server is not installed, the helpers skip the test with the
// reason, except under CI=true, where they fail it.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate/internal/proctest"
)

// stopWait bounds the wait for a server to exit after SIGTERM, before SIGKILL.
const stopWait = 5 * time.Second

// startWait bounds the wait for a server to answer PING.
const startWait = 10 * time.Second

// Available reports whether redis-server, redis-sentinel and redis-cli are
// installed, with an error naming the missing one.
func Available() error {
	for _, bin := range []string{"redis-server", "redis-sentinel", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("redistest: %s not found in PATH (install redis-server, redis-sentinel and redis-tools): %w", bin, err)
		}
	}
	return nil
}

// need skips (or, under CI=true, fails) t when Redis is not installed.
func need(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// Server is one redis-server (or redis-sentinel) process. Its methods are
// safe for concurrent use.
type Server struct {
	// Addr is the server's 127.0.0.1:port.
	Addr string
	// Dir is the server's working directory (logs, cluster config).
	Dir string

	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

// Pid returns the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Port returns the server's port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Kill stops the server at once with SIGKILL and waits for it to exit.
func (s *Server) Kill() {
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Pause stops the server's process with SIGSTOP: it keeps its sockets but
// answers nothing until [Server.Resume].
func (s *Server) Pause() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// Stop ends the server: SIGTERM, then SIGKILL if it has not exited within a
// few seconds. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopWait):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// Exited reports whether the process has exited.
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Client returns a new client to the server; the caller closes it.
func (s *Server) Client() *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: s.Addr, DialTimeout: time.Second, MaxRetries: -1})
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs bin with args (after the port ones) in dir and waits for PING.
// A port taken between freePort and the server's bind is retried.
func start(bin, dir string, args func(port int) []string) (*Server, error) {
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := startOn(bin, dir, port, args(port))
		if err == nil {
			return s, nil
		}
		last = err
	}
	return nil, last
}

func startOn(bin, dir string, port int, args []string) (*Server, error) {
	logPath := filepath.Join(dir, "stdout.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	// A test binary killed by its timeout or a crash runs no cleanup: the
	// kernel stops the server then.
	cmd.SysProcAttr = proctest.DieWithParent()
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("redistest: start %s: %w", bin, err)
	}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	c := s.Client()
	defer c.Close()
	deadline := time.Now().Add(startWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		if s.Exited() {
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("redistest: %s on port %d exited: %s", bin, port, tail(out))
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redistest: %s on port %d not answering after %v: %w", bin, port, startWait, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = s[len(s)-500:]
	}
	return s
}

// baseArgs are the options of every server: loopback only, no persistence,
// replicas synced without delay.
func baseArgs(port int, extra ...string) []string {
	a := []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "redis.log",
		// A replica's first sync starts at once instead of after the
		// default 5s wait for more replicas.
		"--repl-diskless-sync-delay", "0",
	}
	return append(a, extra...)
}

// NewServer starts a standalone redis-server in a new directory under dir.
// The caller stops it with [Server.Stop]. extra are further redis-server
// options ("--maxmemory", "10mb").
func NewServer(dir string, extra ...string) (*Server, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(dir, "redis-")
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	return start("redis-server", d, func(port int) []string { return baseArgs(port, extra...) })
}

// StartServer starts a standalone redis-server for t, stopped when t ends.
func StartServer(t testing.TB, extra ...string) *Server {
	t.Helper()
	need(t)
	s, err := NewServer(t.TempDir(), extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Cluster is a Redis Cluster of Masters master nodes, each with its
// replicas. Nodes lists every node, masters first as created.
type Cluster struct {
	Nodes []*Server
	// NodeTimeout is the nodes' cluster-node-timeout.
	NodeTimeout time.Duration
}

// DefaultNodeTimeout is the cluster-node-timeout of a cluster started
// without [NodeTimeout]: long enough that a node starved of CPU for a moment
// on a loaded machine is not flagged as failing (Redis's own default is 15s).
const DefaultNodeTimeout = 5 * time.Second

// ClusterOption configures [NewCluster] and [StartCluster].
type ClusterOption func(*clusterConfig)

type clusterConfig struct {
	nodeTimeout time.Duration
	extra       []string
}

// NodeTimeout sets cluster-node-timeout (default [DefaultNodeTimeout]): a
// master that does not answer for d is flagged PFAIL, then FAIL once a
// majority of masters agree, and its replica is promoted about 0.5–1s later
// (Redis's election delay). Failover tests pass about a second.
func NodeTimeout(d time.Duration) ClusterOption {
	return func(c *clusterConfig) { c.nodeTimeout = d }
}

// NodeArgs adds redis-server options to every node ("--cluster-replica-validity-factor", "0").
func NodeArgs(extra ...string) ClusterOption {
	return func(c *clusterConfig) { c.extra = append(c.extra, extra...) }
}

// Addrs returns every node's address.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		a[i] = n.Addr
	}
	return a
}

// Stop stops every node.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Stop() }()
	}
	wg.Wait()
}

// Client returns a new cluster client; the caller closes it.
func (c *Cluster) Client() *goredis.ClusterClient {
	return goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs(), DialTimeout: time.Second})
}

// Node is one line of CLUSTER NODES.
type Node struct {
	ID, Addr string
	// Flags are the node's flags: "master", "slave", "fail", "fail?", "myself"...
	Flags []string
	// MasterID is the id of the master of a replica, "" for a master.
	MasterID string
	// Slots are the slot ranges of a master ("0-5460").
	Slots []string
}

// Has reports whether the node has the flag.
func (n Node) Has(flag string) bool {
	for _, f := range n.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// View returns the cluster as the live node via sees it (CLUSTER NODES).
func (c *Cluster) View(ctx context.Context, via *Server) ([]Node, error) {
	cl := via.Client()
	defer cl.Close()
	out, err := cl.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("redistest: CLUSTER NODES on %s: %w", via.Addr, err)
	}
	var nodes []Node
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 8 {
			continue
		}
		n := Node{ID: f[0], Addr: strings.Split(f[1], "@")[0], Flags: strings.Split(f[2], ","), Slots: f[8:]}
		if f[3] != "-" {
			n.MasterID = f[3]
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// ReplicaOf returns the node that replicates master, as via sees the
// cluster.
func (c *Cluster) ReplicaOf(ctx context.Context, master, via *Server) (*Server, error) {
	nodes, err := c.View(ctx, via)
	if err != nil {
		return nil, err
	}
	id := ""
	for _, n := range nodes {
		if n.Addr == master.Addr {
			id = n.ID
		}
	}
	for _, n := range nodes {
		if id != "" && n.MasterID == id {
			for _, s := range c.Nodes {
				if s.Addr == n.Addr {
					return s, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("redistest: no replica of %s (id %q) in %s's view of the cluster", master.Addr, id, via.Addr)
}

// NewCluster starts masters × (1 + replicasPerMaster) cluster-enabled nodes
// under dir, joins them with redis-cli --cluster create, and waits (bounded)
// until every node reports cluster_state:ok and every replica is in sync
// with its master (a replica that never synced is never promoted: its data
// counts as too old). The caller stops it with [Cluster.Stop].
func NewCluster(dir string, masters, replicasPerMaster int, opts ...ClusterOption) (*Cluster, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if masters < 3 {
		return nil, fmt.Errorf("redistest: cluster of %d masters: redis-cli --cluster create wants at least 3", masters)
	}
	cfg := clusterConfig{nodeTimeout: DefaultNodeTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.nodeTimeout <= 0 {
		return nil, fmt.Errorf("redistest: cluster node timeout %v: must be positive", cfg.nodeTimeout)
	}
	c := &Cluster{NodeTimeout: cfg.nodeTimeout}
	n := masters * (1 + replicasPerMaster)
	for i := 0; i < n; i++ {
		d, err := os.MkdirTemp(dir, "node-")
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("redistest: %w", err)
		}
		s, err := start("redis-server", d, func(port int) []string {
			bus, _ := freePort()
			args := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", strconv.FormatInt(cfg.nodeTimeout.Milliseconds(), 10),
				"--cluster-port", strconv.Itoa(bus), "--cluster-require-full-coverage", "no"}
			return baseArgs(port, append(args, cfg.extra...)...)
		})
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("redistest: redis-cli --cluster create: %w: %s", err, tail(out))
	}
	if err := c.waitOK(ctx, masters*replicasPerMaster); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// waitOK waits until every node says cluster_state:ok, knows every node
// and sees the given number of replicas, and every replica's link to its
// master is up.
func (c *Cluster) waitOK(ctx context.Context, replicas int) error {
	for _, node := range c.Nodes {
		cl := node.Client()
		for {
			info, err := cl.ClusterInfo(ctx).Result()
			var repl string
			if err == nil {
				repl, err = cl.Info(ctx, "replication").Result()
			}
			seen := 0
			if err == nil {
				var nodes []Node
				nodes, err = c.View(ctx, node)
				for _, n := range nodes {
					if n.MasterID != "" {
						seen++
					}
				}
			}
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d\r", len(c.Nodes))) &&
				(strings.Contains(repl, "role:master") || strings.Contains(repl, "master_link_status:up")) &&
				seen == replicas {
				break
			}
			if ctx.Err() != nil {
				cl.Close()
				return fmt.Errorf("redistest: node %s not ok (sees %d of %d replicas): %v %s %s", node.Addr, seen, replicas, err, info, repl)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cl.Close()
	}
	return nil
}

// StartCluster starts a cluster for t (see [NewCluster]), stopped when t ends.
func StartCluster(t testing.TB, masters, replicasPerMaster int, opts ...ClusterOption) *Cluster {
	t.Helper()
	need(t)
	c, err := NewCluster(t.TempDir(), masters, replicasPerMaster, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// Sentinel is a master, a replica and three sentinels watching the master
// under MasterName.
type Sentinel struct {
	MasterName string
	Master     *Server
	Replica    *Server
	Sentinels  []*Server
}

// SentinelAddrs returns the sentinels' addresses.
func (s *Sentinel) SentinelAddrs() []string {
	a := make([]string, len(s.Sentinels))
	for i, n := range s.Sentinels {
		a[i] = n.Addr
	}
	return a
}

// Stop stops every process.
func (s *Sentinel) Stop() {
	for _, n := range append(append([]*Server{}, s.Sentinels...), s.Replica, s.Master) {
		if n != nil {
			n.Stop()
		}
	}
}

// NewSentinel starts a Sentinel set under dir and waits (bounded) until the
// replica is in sync and every sentinel knows the master and the replica.
// Sentinels declare the master down after one second.
func NewSentinel(dir string) (*Sentinel, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	st := &Sentinel{MasterName: "floodgate-test"}
	var err error
	if st.Master, err = NewServer(dir); err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(dir, "replica-")
	if err != nil {
		st.Stop()
		return nil, fmt.Errorf("redistest: %w", err)
	}
	st.Replica, err = start("redis-server", d, func(port int) []string {
		return baseArgs(port, "--replicaof", "127.0.0.1", strconv.Itoa(st.Master.Port()))
	})
	if err != nil {
		st.Stop()
		return nil, err
	}
	for i := 0; i < 3; i++ {
		d, err := os.MkdirTemp(dir, "sentinel-")
		if err != nil {
			st.Stop()
			return nil, fmt.Errorf("redistest: %w", err)
		}
		s, err := start("redis-sentinel", d, func(port int) []string {
			conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nlogfile sentinel.log\n"+
				"sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %[3]s 1000\n"+
				"sentinel failover-timeout %[3]s 5000\nsentinel parallel-syncs %[3]s 1\n",
				port, d, st.MasterName, st.Master.Port())
			path := filepath.Join(d, "sentinel.conf")
			_ = os.WriteFile(path, []byte(conf), 0o644)
			return []string{path}
		})
		if err != nil {
			st.Stop()
			return nil, err
		}
		st.Sentinels = append(st.Sentinels, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := st.waitReady(ctx); err != nil {
		st.Stop()
		return nil, err
	}
	return st, nil
}

func (st *Sentinel) waitReady(ctx context.Context) error {
	rc := st.Replica.Client()
	defer rc.Close()
	for {
		info, err := rc.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("redistest: replica %s not in sync: %v", st.Replica.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range st.Sentinels {
		sc := goredis.NewSentinelClient(&goredis.Options{Addr: s.Addr})
		for {
			m, err := sc.Master(ctx, st.MasterName).Result()
			if err == nil && m["num-slaves"] == "1" && m["num-other-sentinels"] == "2" {
				break
			}
			if ctx.Err() != nil {
				sc.Close()
				return fmt.Errorf("redistest: sentinel %s not ready: %v %v", s.Addr, err, m)
			}
			time.Sleep(100 * time.Millisecond)
		}
		sc.Close()
	}
	return nil
}

// StartSentinel starts a Sentinel set for t (see [NewSentinel]), stopped
// when t ends.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	need(t)
	s, err := NewSentinel(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Servers started once per test binary by [Shared] and [SharedCluster].
var shared struct {
	mu      sync.Mutex
	dir     string
	server  *Server
	cluster *Cluster
	err     error
}

func sharedDir() (string, error) {
	if shared.dir == "" {
		d, err := os.MkdirTemp("", "redistest-")
		if err != nil {
			return "", fmt.Errorf("redistest: %w", err)
		}
		shared.dir = d
	}
	return shared.dir, nil
}

// Shared returns a standalone server started once per test binary, for
// tests that do not mind sharing it (use distinct keys). A package using it
// calls [StopShared] from TestMain after m.Run.
func Shared(t testing.TB) *Server {
	t.Helper()
	need(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server == nil {
		dir, err := sharedDir()
		if err != nil {
			t.Fatal(err)
		}
		if shared.server, err = NewServer(dir); err != nil {
			t.Fatal(err)
		}
	}
	return shared.server
}

// SharedCluster returns a 3-master cluster without replicas started once per
// test binary; see [Shared].
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	need(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil {
		dir, err := sharedDir()
		if err != nil {
			t.Fatal(err)
		}
		if shared.cluster, err = NewCluster(dir, 3, 0); err != nil {
			t.Fatal(err)
		}
	}
	return shared.cluster
}

// StopShared stops the servers [Shared] and [SharedCluster] started and
// removes their directory.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server != nil {
		shared.server.Stop()
		shared.server = nil
	}
	if shared.cluster != nil {
		shared.cluster.Stop()
		shared.cluster = nil
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
		shared.dir = ""
	}
}
