// Package faultproxy is a small TCP proxy for fault tests: it forwards
// connections from a loopback port to a target address, and on demand
// delays the bytes, swallows them (a black hole: connections stay open but
// nothing arrives), refuses new connections or cuts the open ones.
//
//	p, err := faultproxy.Start("127.0.0.1:6379")
//	defer p.Close()
//	store := redis.New(redis.Options{Addrs: []string{p.Addr()}})
//	p.SetDelay(50 * time.Millisecond) // every chunk arrives 50ms late
//	p.Blackhole(true)                 // nothing arrives any more
//	p.Cut()                           // every open connection is closed
package faultproxy

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections to a target. Create it with [Start]; the
// zero value is not usable. Its methods are safe for concurrent use.
type Proxy struct {
	mu     sync.Mutex
	target string
	ln     net.Listener

	delay     atomic.Int64 // nanoseconds added to every chunk
	blackhole atomic.Bool
	refuse    atomic.Bool

	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Start listens on a free 127.0.0.1 port and forwards every connection to
// target. It returns at once; connections to target are opened per
// accepted connection.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen for target %s: %w", target, err)
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's 127.0.0.1:port, the address clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDelay makes every chunk of bytes, in both directions, arrive d after
// the proxy read it (0: no delay). Chunks keep their order; throughput is
// not limited.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Blackhole, when on, makes the proxy read and drop every byte in both
// directions: connections stay open and accepted, nothing arrives. Off
// forwards again (bytes dropped meanwhile are lost).
func (p *Proxy) Blackhole(on bool) { p.blackhole.Store(on) }

// SetTarget makes new connections go to target; open ones are left as
// they are (see [Proxy.Cut]). A test "restarts" a server behind a fixed
// address by starting a new one and pointing the proxy at it.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Refuse, when on, closes new connections as soon as they are accepted.
func (p *Proxy) Refuse(on bool) { p.refuse.Store(on) }

// Cut closes every open connection (both sides). New connections are still
// accepted unless [Proxy.Refuse] is on.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = make(map[net.Conn]struct{})
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// Close stops listening, cuts every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

// track registers c, or closes it and reports false when the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refuse.Load() {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		return
	}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	upstream, err := net.DialTimeout("tcp", target, time.Second)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(upstream) {
		client.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(upstream, client) }()
	go func() { defer wg.Done(); p.pipe(client, upstream) }()
	wg.Wait()
}

// chunk is bytes read at a given instant, to be written after the delay.
type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, applying the delay and the black hole, and closes
// both when either side ends.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	q := make(chan chunk, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range q {
			if d := time.Duration(p.delay.Load()); d > 0 {
				if wait := time.Until(c.at.Add(d)); wait > 0 {
					time.Sleep(wait)
				}
			}
			if _, err := dst.Write(c.b); err != nil {
				// Drain so the reader never blocks on a full queue.
				for range q {
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.blackhole.Load() {
			b := make([]byte, n)
			copy(b, buf[:n])
			q <- chunk{b: b, at: time.Now()}
		}
		if err != nil {
			// EOF, a reset or a cut connection all end the pipe.
			break
		}
	}
	close(q)
	<-done
}
