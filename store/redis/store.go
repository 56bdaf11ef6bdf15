package redis

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/floodgate/floodgate"
)

// decideLua defines the decision script's functions, ending with run, which
// decides one call.
//
//go:embed decide.lua
var decideLua string

// decideScript is the script EVAL runs: the definitions, then run's body
// as a block of the script, with the globals KEYS and ARGV as its locals (a
// script runs all of itself on every call: a call of run would add the
// making of its closure).
var decideScript = func() string {
	const head = "\nlocal function run(KEYS, ARGV)\n"
	if strings.Count(decideLua, head) != 1 {
		panic("redis: decide.lua: no run function")
	}
	return strings.Replace(decideLua, head, "\ndo local KEYS, ARGV = KEYS, ARGV\n", 1)
}()

// scriptSHA is the SHA-1 digest EVALSHA names the script by.
var scriptSHA = func() string {
	h := sha1.Sum([]byte(decideScript))
	return hex.EncodeToString(h[:])
}()

// The same script as a function library (Redis 7 and later), which a server
// loads once: its definitions then run once, not on every call, and FCALL
// runs only run. Library and function are named after the script's digest,
// so that versions of floodgate sharing a server each find their own.
var (
	libraryName  = "floodgate_" + scriptSHA[:16]
	functionName = "floodgate_decide_" + scriptSHA[:16]
	library      = "#!lua name=" + libraryName + "\n" + decideLua +
		"redis.register_function('" + functionName + "', run)\n"
)

// Defaults of [Options].
const (
	DefaultPrefix       = "floodgate:"
	DefaultDialTimeout  = time.Second
	DefaultReadTimeout  = 500 * time.Millisecond
	DefaultWriteTimeout = 500 * time.Millisecond
)

// Options configure a [Store]. The zero value is not usable: set URL, Addrs
// or Client. [ParseURL] fills the connection fields from a URL.
type Options struct {
	// Client, when set, is used as is and the connection fields below are
	// ignored. [Store.Close] does not close it: its owner does.
	Client goredis.UniversalClient

	// URL is parsed with [ParseURL] when Addrs is empty; the fields it sets
	// replace the connection fields below. See [ParseURL] for the forms.
	URL string
	// Addrs are the host:port addresses: one server, the seed nodes of a
	// cluster, or the sentinels.
	Addrs []string
	// Cluster, when true, talks to a Redis Cluster seeded by Addrs.
	Cluster bool
	// MasterName, when set, makes Addrs the sentinels that know this master.
	MasterName string
	// Username and Password authenticate to the servers (to the master and
	// replicas behind Sentinel, not to the sentinels). Default: none.
	Username, Password string
	// DB is the database number of a standalone or Sentinel-managed server.
	// Default 0. A cluster has only database 0.
	DB int
	// TLS, when non-nil, is the TLS configuration of every connection.
	// Default: plain TCP.
	TLS *tls.Config

	// Prefix starts every key the store writes. It must not contain '{' or
	// '}', since the store puts a hash tag right after it. Default
	// [DefaultPrefix] ("floodgate:").
	Prefix string
	// DialTimeout bounds opening a connection. Default [DefaultDialTimeout] (1s).
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound each socket read and write; the
	// context given to [Store.Decide] bounds the whole batch as well.
	// Defaults [DefaultReadTimeout] and [DefaultWriteTimeout] (500ms).
	ReadTimeout, WriteTimeout time.Duration
	// PoolSize is the number of connections per server. Default: go-redis's
	// default (10 per CPU).
	PoolSize int

	// NoFunctions sends the decision script by EVALSHA (EVAL when the server
	// does not have it cached) even where Redis has functions. By default
	// the store loads it once per server as a function library and calls it
	// by FCALL, which saves the script's set-up on every call; it falls back
	// to EVALSHA by itself on a server without functions (before Redis 7), a
	// user the ACL does not let load or call them, and a client other than a
	// standalone, Sentinel or cluster one.
	NoFunctions bool
}

// The store never lets go-redis retry a command (MaxRetries -1): a script
// whose reply was lost may have run, and running it again would charge the
// request twice. Cluster redirections (MOVED, ASK) are still followed. A
// failed dial is not retried either (DialerRetries 1), and every socket
// wait is bounded by the context's deadline as well (ContextTimeoutEnabled),
// so a caller's deadline bounds a decision whatever state Redis is in.

// Store is the Redis store: every decision is one atomic Lua script run by
// the Redis server that holds the key, with that server's clock. It works on
// a standalone server, a Redis Cluster and a Sentinel-managed master. It is
// safe for concurrent use. Create it with [New]; the zero value is not
// usable.
type Store struct {
	client    goredis.UniversalClient
	ownClient bool
	prefix    string
	closed    atomic.Bool
	// scripts is set when calls go by EVALSHA rather than FCALL.
	scripts atomic.Bool
}

var _ floodgate.Store = (*Store)(nil)

// New returns a store on the Redis named by opts. It does not contact Redis:
// a store can be created while Redis is down, and decisions fail with an
// error until it is back.
func New(opts Options) (*Store, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("redis: prefix %q: must not contain '{' or '}'", opts.Prefix)
	}
	s := &Store{prefix: opts.Prefix}
	s.scripts.Store(opts.NoFunctions)
	if opts.Client != nil {
		s.client = opts.Client
		switch opts.Client.(type) {
		case *goredis.Client, *goredis.ClusterClient:
		default:
			s.scripts.Store(true)
		}
		return s, nil
	}
	if len(opts.Addrs) == 0 {
		if opts.URL == "" {
			return nil, errors.New("redis: no URL, addresses or client given")
		}
		u, err := ParseURL(opts.URL)
		if err != nil {
			return nil, err
		}
		opts.Addrs, opts.Cluster, opts.MasterName = u.Addrs, u.Cluster, u.MasterName
		opts.Username, opts.Password, opts.DB, opts.TLS = u.Username, u.Password, u.DB, u.TLS
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	switch {
	case opts.MasterName != "":
	case opts.Cluster:
		if opts.DB != 0 {
			return nil, fmt.Errorf("redis: database %d: a cluster has only database 0", opts.DB)
		}
	case len(opts.Addrs) != 1:
		return nil, fmt.Errorf("redis: %d addresses %q: a standalone server takes one (use a cluster or sentinel URL for several)", len(opts.Addrs), opts.Addrs)
	}
	// The universal client picks the kind: a master name means Sentinel,
	// IsClusterMode a cluster, else a standalone server. No command is
	// retried: a script whose reply was lost may have been applied.
	s.client = goredis.NewUniversalClient(&goredis.UniversalOptions{
		Addrs:                 opts.Addrs,
		MasterName:            opts.MasterName,
		IsClusterMode:         opts.Cluster,
		Username:              opts.Username,
		Password:              opts.Password,
		DB:                    opts.DB,
		TLSConfig:             opts.TLS,
		DialTimeout:           opts.DialTimeout,
		ReadTimeout:           opts.ReadTimeout,
		WriteTimeout:          opts.WriteTimeout,
		PoolSize:              opts.PoolSize,
		MaxRetries:            -1,
		DialerRetries:         1,
		ContextTimeoutEnabled: true,
	})
	s.ownClient = true
	return s, nil
}

// Client returns the go-redis client the store uses.
func (s *Store) Client() goredis.UniversalClient { return s.client }

// Close closes the client if [New] created it. Decide after Close returns
// [floodgate.ErrClosed].
func (s *Store) Close() error {
	if s.closed.Swap(true) || !s.ownClient {
		return nil
	}
	return s.client.Close()
}

// MaxOpsPerCall is the most ops one script call carries; the ops of a
// [Store.Decide] call that share a slot go in calls of this many at most.
const MaxOpsPerCall = 128

// call is one script call: ops that share a cluster slot (every op, on a
// standalone server or behind Sentinel), decided in order by one EVALSHA.
type call struct {
	ops    []*floodgate.Op
	keys   []string
	args   []any // the ops' arguments
	limits []floodgate.Limit
	// mixed is set once an op of the call is not in the short form under a
	// string-state limit (one key, one argument and maybe an instant).
	mixed bool
	cmd   *goredis.Cmd
}

// Decide implements [floodgate.Store]. The valid ops of the batch are grouped
// by cluster slot (one group on a standalone server or behind Sentinel), in
// their order, and each group goes to Redis as one EVALSHA of the script that
// decides its ops one after the other ([MaxOpsPerCall] ops at most per call).
// All calls go in one pipeline: one round trip per server involved. Calls
// answered NOSCRIPT are sent again with EVAL, which caches the script on
// that server. Invalid ops get an Err wrapping [floodgate.ErrInvalid] and are
// not sent.
func (s *Store) Decide(ctx context.Context, ops []floodgate.Op) error {
	if s.closed.Load() {
		for i := range ops {
			ops[i].Err = floodgate.ErrClosed
		}
		return floodgate.ErrClosed
	}
	calls := s.group(ops)
	if len(calls) > 0 {
		s.send(ctx, calls)
		for i := range calls {
			calls[i].finish()
		}
	}
	for i := range ops {
		if ops[i].Err != nil {
			return ops[i].Err
		}
	}
	return nil
}

// group checks ops and packs the valid ones into script calls, one group
// per cluster slot in the order of the ops (see [grouper]).
func (s *Store) group(ops []floodgate.Op) []call {
	var calls []call
	g := s.grouper()
	for i := range ops {
		op := &ops[i]
		op.Err = nil
		if err := op.Check(); err != nil {
			op.Err = err
			continue
		}
		escaped := escapeKey(op.Key)
		ci, ok := g.current(escaped)
		if !ok || len(calls[ci].ops) >= MaxOpsPerCall {
			ci = len(calls)
			calls = append(calls, call{})
			g.start(escaped, ci)
		}
		room := 1 // a call per slot or tag: most hold one op
		if g.single {
			room = min(len(ops)-i, MaxOpsPerCall)
		}
		calls[ci].add(s, op, escaped, room)
	}
	return calls
}

// grouper assigns the keys of a batch to script calls in their order. On a
// cluster every key of one call must hash to one slot; on a standalone
// server or behind Sentinel everything goes to the one server; on any other
// client (a ring), keys are grouped by hash tag, which every sharding scheme
// keeps together.
type grouper struct {
	single, cluster bool
	open            int // the call being filled on a single server
	slot            uint16
	bySlot          map[uint16]int
	byTag           map[string]int
}

func (s *Store) grouper() grouper {
	_, cluster := s.client.(*goredis.ClusterClient)
	_, single := s.client.(*goredis.Client)
	return grouper{single: single, cluster: cluster, open: -1}
}

// current returns the call being filled for the group of the key whose
// hash tag is escaped, if there is one.
func (g *grouper) current(escaped string) (int, bool) {
	switch {
	case g.single:
		return g.open, g.open >= 0
	case g.cluster:
		g.slot = keySlot(escaped)
		ci, ok := g.bySlot[g.slot]
		return ci, ok
	}
	ci, ok := g.byTag[escaped]
	return ci, ok
}

// start makes call ci the one being filled for escaped's group; it follows
// current for the same key.
func (g *grouper) start(escaped string, ci int) {
	switch {
	case g.single:
		g.open = ci
	case g.cluster:
		if g.bySlot == nil {
			g.bySlot = make(map[uint16]int)
		}
		g.bySlot[g.slot] = ci
	default:
		if g.byTag == nil {
			g.byTag = make(map[string]int)
		}
		g.byTag[escaped] = ci
	}
}

// add appends op's keys and arguments to the call; a limit already listed
// in the call is named by its number. room is how many ops the call is
// likely to get, for its first allocation.
func (c *call) add(s *Store, op *floodgate.Op, escaped string, room int) {
	if c.args == nil {
		c.args = make([]any, 0, room+4)
		c.keys = make([]string, 0, room)
		c.ops = make([]*floodgate.Op, 0, room)
	}
	c.ops = append(c.ops, op)
	first := len(c.args)
	short := !op.Release && len(op.Limits) == 1 && op.Cost > 0 && op.Cost <= maxShortCost &&
		(op.Lease == "" || op.Limits[0].Algorithm != floodgate.Concurrency)
	if !short || op.Limits[0].Algorithm == floodgate.SlidingWindowLog || op.Limits[0].Algorithm == floodgate.Concurrency {
		c.mixed = true
	}
	if short {
		// Room for the op's short form, set below once its limit's number
		// is known.
		c.args = append(c.args, int64(0))
		if op.Now != 0 {
			c.args = append(c.args, op.Now)
		}
	} else {
		mode := "a"
		if op.Release {
			mode = "r"
		}
		c.args = append(c.args, op.Now, op.Cost, mode, op.Lease, len(op.Limits))
	}
	for _, l := range op.Limits {
		k := s.limitKey(escaped, l)
		c.keys = append(c.keys, k)
		switch l.Algorithm {
		case floodgate.SlidingWindowLog:
			c.keys = append(c.keys, k+":sum")
		case floodgate.Concurrency:
			c.keys = append(c.keys, k+":units")
		}
		n := -1
		if len(c.limits) <= 32 {
			for i, x := range c.limits {
				if x == l {
					n = i
					break
				}
			}
		}
		if n < 0 {
			n = len(c.limits)
			c.limits = append(c.limits, l)
		}
		if short {
			if n+1 < shortLimits {
				x := op.Cost*2*shortLimits + int64(n+1)*2
				if op.Now != 0 {
					x++
				}
				c.args[first] = shortArg(-x)
				continue
			}
			// Too many limits in the call to name this one in the short form.
			c.args = append(c.args[:first], op.Now, op.Cost, "a", op.Lease, 1)
			c.mixed = true
		}
		c.args = append(c.args, n+1)
	}
}

// shortArg boxes a short form; the commonest (cost 1 under one of the
// call's first limits, on the server's clock) come boxed already.
func shortArg(x int64) any {
	if i := -x - 2*shortLimits - 2; i >= 0 && i < int64(len(shortBoxed)) && i%2 == 0 {
		return shortBoxed[i/2]
	}
	return x
}

var shortBoxed = func() (b [64]any) {
	for n := range b {
		b[n] = -int64(2*shortLimits + (n+1)*2)
	}
	return b
}()

// An op that acquires under one limit (not a concurrency limit with a lease)
// goes to the script in a short form: -(cost*2*shortLimits + the number of
// its limit*2 + 1 if its instant follows), then its instant unless it is 0.
// The limit's number must be below shortLimits and the cost at most
// maxShortCost, so that the argument stays an exact double.
const (
	shortLimits  = 1024
	maxShortCost = 1 << 41
)

// argv returns the script's ARGV: the number of ops (negated when every op
// is in the short form under a string-state limit) and of limits, each
// limit, then the ops' arguments.
func (c *call) argv() []any {
	args := make([]any, 0, 2+len(c.limits)+len(c.args))
	n := len(c.ops)
	if !c.mixed {
		n = -n
	}
	args = append(args, n, len(c.limits))
	var buf [41]byte
	for _, l := range c.limits {
		w := l.Window.Microseconds()
		var p1, p2, p3 int64
		switch l.Algorithm {
		case floodgate.TokenBucket:
			g := gcd(l.Quota, w)
			p1, p2, p3 = l.Quota/g, w/g, l.Capacity()
		case floodgate.GCRA:
			p1, p3 = (w+l.Quota-1)/l.Quota, l.Capacity()
		}
		// The limit as the script reads it: its algorithm's number (ALGS
		// in the script lists them in the order of floodgate.Algorithm,
		// from 1), then quota, window and the three constants,
		// little-endian.
		b := append(buf[:0], byte(l.Algorithm))
		for _, v := range [...]int64{l.Quota, w, p1, p2, p3} {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
		args = append(args, string(b))
	}
	return append(args, c.args...)
}

// finish sets every op's Result or Err from the call's reply: one record
// per op, in order (see decide.lua).
func (c *call) finish() {
	fail := func(op *floodgate.Op, err error) {
		op.Err = fmt.Errorf("redis: decide key %q: %w", op.Key, err)
	}
	if err := c.cmd.Err(); err != nil {
		for _, op := range c.ops {
			fail(op, err)
		}
		return
	}
	rest, ok := c.cmd.Val().(string)
	for i, op := range c.ops {
		var err error
		if ok {
			rest, err = decode(op, rest)
		}
		if !ok || err != nil {
			// The reply cannot be read past this op.
			if err == nil {
				err = fmt.Errorf("unexpected script reply of type %T", c.cmd.Val())
			}
			for _, op := range c.ops[i:] {
				fail(op, err)
			}
			return
		}
		if op.Err != nil {
			fail(op, op.Err)
		}
	}
	if ok && len(rest) > 0 {
		for _, op := range c.ops {
			fail(op, fmt.Errorf("script reply has %d bytes too many", len(rest)))
		}
	}
}

// How a call names the script.
type via int

const (
	viaFCall   via = iota // the function, loaded once per server
	viaEvalSHA            // the script, by its digest
	viaEval               // the script's text, which caches it
)

// send runs calls and sends again those that did not run because the server
// lacked the script: the servers that lack the function library load it
// (and a server that cannot, or may not, makes the store use EVALSHA from
// then on, as does a function still missing once loaded); a NOSCRIPT answer
// to EVALSHA is sent again by EVAL. A call that may have run is never sent
// again.
func (s *Store) send(ctx context.Context, calls []call) {
	v := viaFCall
	if s.scripts.Load() {
		v = viaEvalSHA
	}
	s.run(ctx, calls, v)
	all := calls
	var pos []int // each call's place in all, once calls is a retry
	loaded := false
	for {
		var again []int
		next := v
		switch v {
		case viaFCall:
			var missing []*call
			for i := range calls {
				err := calls[i].cmd.Err()
				switch {
				case isNoFunction(err):
					if loaded {
						next = viaEvalSHA
					}
					missing = append(missing, &calls[i])
				case refused(err):
					next = viaEvalSHA
				default:
					continue
				}
				again = append(again, i)
			}
			if next == viaFCall && len(missing) > 0 {
				loaded = true
				if s.loadLibrary(ctx, missing) {
					next = viaEvalSHA
				} else {
					// Calls whose server could not load it keep that error.
					kept := again[:0]
					for _, i := range again {
						if isNoFunction(calls[i].cmd.Err()) {
							kept = append(kept, i)
						}
					}
					again = kept
				}
			}
			if next == viaEvalSHA {
				s.scripts.Store(true)
			}
		case viaEvalSHA:
			for i := range calls {
				if isNoScript(calls[i].cmd.Err()) {
					again = append(again, i)
				}
			}
			next = viaEval
		}
		if len(again) == 0 {
			return
		}
		retry := make([]call, len(again))
		for j, i := range again {
			retry[j] = calls[i]
			if pos != nil {
				again[j] = pos[i]
			}
		}
		s.run(ctx, retry, next)
		for j, i := range again {
			all[i].cmd = retry[j].cmd
		}
		calls, pos, v = retry, again, next
	}
}

// run sends calls in one pipeline; a lone call goes without the pipeline's
// bookkeeping.
func (s *Store) run(ctx context.Context, calls []call, v via) {
	if len(calls) == 1 {
		c := &calls[0]
		c.cmd = s.command(ctx, s.client, c, v)
		return
	}
	pipe := s.client.Pipeline()
	for i := range calls {
		c := &calls[i]
		c.cmd = s.command(ctx, pipe, c, v)
	}
	// Each command carries its own error; the first is returned here too.
	_, _ = pipe.Exec(ctx)
}

func (s *Store) command(ctx context.Context, r goredis.Cmdable, c *call, v via) *goredis.Cmd {
	switch v {
	case viaFCall:
		return r.FCall(ctx, functionName, c.keys, c.argv()...)
	case viaEvalSHA:
		return r.EvalSha(ctx, scriptSHA, c.keys, c.argv()...)
	}
	return r.Eval(ctx, decideScript, c.keys, c.argv()...)
}

// loadLibrary loads the function library, replacing one of the same name
// (another process of the same version may be loading it too), on the
// server of each call, once per server: on a cluster, the master of the
// call's slot. A call whose server fails to load it gets that error. It
// reports whether a server refused the load command itself (before Redis 7,
// or an ACL): the store then uses EVALSHA.
func (s *Store) loadLibrary(ctx context.Context, calls []*call) (refusedLoad bool) {
	cc, cluster := s.client.(*goredis.ClusterClient)
	done := map[*goredis.Client]error{} // by server; nil: the one server
	for _, c := range calls {
		var srv *goredis.Client
		var err error
		if cluster {
			srv, err = cc.MasterForKey(ctx, c.keys[0])
		}
		if err == nil {
			var ok bool
			if err, ok = done[srv]; !ok {
				var r goredis.Cmdable = s.client
				if srv != nil {
					r = srv
				}
				err = r.FunctionLoadReplace(ctx, library).Err()
				done[srv] = err
			}
		}
		if refused(err) {
			return true
		}
		if err != nil {
			c.cmd.SetErr(fmt.Errorf("load the function library: %w", err))
		}
	}
	return false
}

// keySlot is the Redis Cluster slot of every key whose hash tag is tag:
// CRC16 (XMODEM) mod 16384.
func keySlot(tag string) uint16 {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc = crc<<8 ^ crc16tab[byte(crc>>8)^tag[i]]
	}
	return crc & 16383
}

var crc16tab = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for j := 0; j < 8; j++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// isNoFunction tells a server's answer that it has no such function.
func isNoFunction(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "ERR Function not found")
}

// refused tells a server's answer that it has no FCALL or FUNCTION command
// (before Redis 7, or a proxy that does not pass them on) or that the user
// may not run it: the command the answer names in quotes. Not a refusal of a
// key, which EVALSHA would get too, and never an error raised while the
// function or a script ran, which may have written.
func refused(err error) bool {
	if err == nil {
		return false
	}
	msg := strings.ToLower(err.Error())
	if strings.Contains(msg, "script") || strings.Contains(msg, "@user_function") {
		return false
	}
	if !strings.HasPrefix(msg, "err unknown command") && !strings.HasPrefix(msg, "err unsupported command") &&
		!strings.HasPrefix(msg, "noperm") {
		return false
	}
	i := strings.IndexAny(msg, "'`")
	if i < 0 {
		return false
	}
	name, _, _ := strings.Cut(msg[i+1:], msg[i:i+1])
	return name == "fcall" || name == "function" || strings.HasPrefix(name, "function|")
}

// Key returns the Redis key that holds key's state under l (for the sliding
// window log and concurrency limits, the first of the two keys). Every key of
// one client key shares the hash tag {key}, so that one script call touches
// one cluster slot; '{', '}' and '\' in the key are escaped as "\(", "\)" and
// "\\" so the tag is always the whole key.
func (s *Store) Key(key string, l floodgate.Limit) string {
	return s.limitKey(escapeKey(key), l)
}

// Reset deletes the Redis keys that hold key's state under each of limits,
// in one DEL (they share one hash tag, so one cluster slot); see
// [floodgate.Resetter].
func (s *Store) Reset(ctx context.Context, key string, limits []floodgate.Limit) error {
	if s.closed.Load() {
		return floodgate.ErrClosed
	}
	if err := floodgate.ValidateKey(key); err != nil {
		return err
	}
	escaped := escapeKey(key)
	keys := make([]string, 0, 2*len(limits))
	for i, l := range limits {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("limits[%d]: %w", i, err)
		}
		k := s.limitKey(escaped, l)
		keys = append(keys, k)
		switch l.Algorithm {
		case floodgate.SlidingWindowLog:
			keys = append(keys, k+":sum")
		case floodgate.Concurrency:
			keys = append(keys, k+":units")
		}
	}
	if err := s.client.Del(ctx, keys...).Err(); err != nil {
		return fmt.Errorf("redis: reset key %q: %w", key, err)
	}
	return nil
}

func escapeKey(key string) string {
	if !strings.ContainsAny(key, "{}\\") {
		return key
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case '{':
			b.WriteString(`\(`)
		case '}':
			b.WriteString(`\)`)
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteByte(key[i])
		}
	}
	return b.String()
}

var algNames = [...]string{
	floodgate.FixedWindow:      "fw",
	floodgate.SlidingWindowLog: "sl",
	floodgate.SlidingWindow:    "sw",
	floodgate.TokenBucket:      "tb",
	floodgate.GCRA:             "gcra",
	floodgate.Concurrency:      "cc",
}

// limitKey is prefix{key}:alg:window ms:quota[:burst].
func (s *Store) limitKey(escaped string, l floodgate.Limit) string {
	var num [20]byte
	var b strings.Builder
	b.Grow(len(s.prefix) + len(escaped) + 48)
	b.WriteString(s.prefix)
	b.WriteByte('{')
	b.WriteString(escaped)
	b.WriteString("}:")
	b.WriteString(algNames[l.Algorithm])
	b.WriteByte(':')
	b.Write(strconv.AppendInt(num[:0], l.Window.Milliseconds(), 10))
	b.WriteByte(':')
	b.Write(strconv.AppendInt(num[:0], l.Quota, 10))
	if l.Algorithm == floodgate.TokenBucket || l.Algorithm == floodgate.GCRA {
		b.WriteByte(':')
		b.Write(strconv.AppendInt(num[:0], l.Burst, 10))
	}
	return b.String()
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// decode reads op's record at the start of the reply and sets op.Result
// and op.Each, or op.Err to the script's message when a Redis command of the
// op failed; it returns the rest of the reply.
func decode(op *floodgate.Op, reply string) (string, error) {
	if len(reply) < 1 {
		return "", errors.New("script reply too short")
	}
	flag := reply[0]
	if flag == recordFailed {
		if len(reply) < 5 {
			return "", errors.New("script reply too short")
		}
		n := int(reply[1]) | int(reply[2])<<8 | int(reply[3])<<16 | int(reply[4])<<24
		if len(reply) < 5+n {
			return "", errors.New("script reply too short")
		}
		msg := reply[5 : 5+n]
		if strings.HasPrefix(msg, "ERR syntax error") {
			// The script's only command whose syntax depends on the
			// server's version is SET ... GET (Redis 6.2).
			msg += " (floodgate needs Redis 6.2 or later)"
		}
		op.Err = fmt.Errorf("script: %s", msg)
		return reply[5+n:], nil
	}
	size := 1 + limitRecord*len(op.Limits)
	if flag > 1 || len(reply) < size {
		return "", fmt.Errorf("unexpected script reply %q for %d limits", reply, len(op.Limits))
	}
	each := op.Each
	if len(each) != len(op.Limits) {
		each = nil
	}
	var acc floodgate.Result
	for i, l := range op.Limits {
		p := reply[1+limitRecord*i:]
		retry := int64(le64(p[17:]))
		r := floodgate.Result{
			Allowed:    p[0] == 1,
			Limit:      l,
			Remaining:  int64(le64(p[1:])),
			ResetAfter: time.Duration(int64(le64(p[9:]))) * time.Microsecond,
			RetryAfter: time.Duration(retry) * time.Microsecond,
		}
		if retry < 0 {
			r.RetryAfter = floodgate.Never
		}
		if each != nil {
			each[i] = r
		}
		acc = floodgate.Combine(acc, r, i == 0)
	}
	if op.Release || len(op.Limits) > 1 {
		acc.Allowed = flag == 1
	}
	op.Result = acc
	return reply[size:], nil
}

// The records of the script's reply: a flag byte, then per limit a byte
// and three 64-bit integers; recordFailed flags an op whose command failed.
const (
	limitRecord  = 1 + 3*8
	recordFailed = 2
)

// le64 reads a little-endian 64-bit integer from the start of s.
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
