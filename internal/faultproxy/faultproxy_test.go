package faultproxy

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, r *bufio.Reader, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = c.SetDeadline(start.Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	_, err := r.ReadString('\n')
	return time.Since(start), err
}

func TestProxy(t *testing.T) {
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := roundTrip(c, r, 2*time.Second); err != nil {
		t.Fatalf("plain round trip: %v", err)
	}

	p.SetDelay(30 * time.Millisecond)
	d, err := roundTrip(c, r, 2*time.Second)
	if err != nil {
		t.Fatalf("delayed round trip: %v", err)
	}
	if d < 60*time.Millisecond { // delayed on the way there and back
		t.Errorf("delayed round trip took %v, want at least 60ms", d)
	}
	p.SetDelay(0)

	p.Blackhole(true)
	if _, err := roundTrip(c, r, 100*time.Millisecond); err == nil {
		t.Fatal("round trip through the black hole answered")
	}
	p.Blackhole(false)
	c.Close()

	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	r2 := bufio.NewReader(c2)
	if _, err := roundTrip(c2, r2, 2*time.Second); err != nil {
		t.Fatalf("round trip after the black hole: %v", err)
	}
	p.Cut()
	if _, err := roundTrip(c2, r2, 2*time.Second); err == nil {
		t.Fatal("round trip on a cut connection answered")
	}

	p.Refuse(true)
	c3, err := net.Dial("tcp", p.Addr())
	if err == nil {
		defer c3.Close()
		if _, err := roundTrip(c3, bufio.NewReader(c3), 2*time.Second); err == nil {
			t.Fatal("refused connection answered")
		}
	}
}
