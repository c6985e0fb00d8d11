package topo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The latency proxy's unit tests run on loopback in the test's own network
// namespace: no root needed.

// testServer is a TCP server on loopback that runs handle for every
// connection; Close waits for the handlers.
type testServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startServer(t *testing.T, handle func(c *net.TCPConn)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

func (s *testServer) Addr() string { return s.ln.Addr().String() }

func (s *testServer) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// echo copies everything back, then half-closes.
func echo(c *net.TCPConn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

func startProxy(t *testing.T, target string, delay time.Duration, buffer int) *LatencyProxy {
	t.Helper()
	p, err := StartLatencyProxy(context.Background(), LatencyProxyOptions{Listen: "127.0.0.1:0", Target: target, Delay: delay, Buffer: buffer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func dialProxy(t *testing.T, p *LatencyProxy) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// TestLatencyProxyDelays checks both one-way delays and the round trip on
// an echo server: nothing arrives before its time (lower bounds only: an
// upper bound would depend on the machine's load).
func TestLatencyProxyDelays(t *testing.T) {
	const delay = 15 * time.Millisecond
	arrived := make(chan time.Time, 1)
	sent := make(chan time.Time, 1)
	srv := startServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 1)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			arrived <- time.Now()
			sent <- time.Now()
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	p := startProxy(t, srv.Addr(), delay, 0)
	c := dialProxy(t, p)
	buf := []byte{'x'}
	for i := 0; i < 5; i++ {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		at, out := <-arrived, <-sent
		if up := at.Sub(start); up < delay {
			t.Fatalf("round %d: request reached the server after %s, before the %s delay", i, up, delay)
		}
		if down := back.Sub(out); down < delay {
			t.Fatalf("round %d: reply reached the client after %s, before the %s delay", i, down, delay)
		}
		if rtt := back.Sub(start); rtt < 2*delay {
			t.Fatalf("round %d: RTT %s < 2 x %s", i, rtt, delay)
		}
		t.Logf("round %d: RTT %s (2 x delay = %s)", i, back.Sub(start), 2*delay)
	}
	// The last chunk is counted once its write returns, maybe after the
	// client has read it.
	st := p.Stats()
	for deadline := time.Now().Add(2 * time.Second); st.Bytes < 10 && time.Now().Before(deadline); st = p.Stats() {
		time.Sleep(5 * time.Millisecond)
	}
	if st.Connections != 1 || st.Chunks != 10 || st.Bytes != 10 || st.MaxLate < 0 || st.Late < st.MaxLate {
		t.Fatalf("stats %+v, want 1 connection, 10 one-byte chunks", st)
	}
	t.Logf("forwarded %d chunks, on average %s after their due time (max %s)", st.Chunks, st.Late/time.Duration(st.Chunks), st.MaxLate)
}

// TestLatencyProxyIntegrity pushes different random streams through many
// concurrent connections at once, with a small buffer so that back-
// pressure is exercised, and checks every byte comes back in order; it
// also checks the buffer bound held.
func TestLatencyProxyIntegrity(t *testing.T) {
	const (
		conns  = 16
		buffer = 256 << 10
	)
	srv := startServer(t, echo)
	p := startProxy(t, srv.Addr(), 2*time.Millisecond, buffer)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			data := make([]byte, 1<<20+rng.IntN(2<<20))
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			c, err := net.DialTimeout("tcp", p.Addr().String(), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			werr := make(chan error, 1)
			go func() {
				// Writes of random sizes, then FIN.
				rest := data
				for len(rest) > 0 {
					n := min(len(rest), 1+rng.IntN(200<<10))
					if _, err := c.Write(rest[:n]); err != nil {
						werr <- err
						return
					}
					rest = rest[n:]
				}
				werr <- c.(*net.TCPConn).CloseWrite()
			}()
			h := sha256.New()
			n, err := io.Copy(h, c) // to EOF: the server's FIN came through
			if err != nil {
				errs <- err
				return
			}
			if err := <-werr; err != nil {
				errs <- err
				return
			}
			if want := sha256.Sum256(data); n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
				errs <- errors.New("stream came back altered")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m := p.maxHeld.Load(); m > buffer || m == 0 {
		t.Errorf("a direction held %d bytes, bound %d", m, buffer)
	}
	if p.Accepted() != conns {
		t.Errorf("accepted %d connections, want %d", p.Accepted(), conns)
	}
	waitOpen(t, p, 0)
}

// waitOpen waits until p forwards n connections.
func waitOpen(t *testing.T, p *LatencyProxy, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Open() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", p.Open(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLatencyProxyHalfClose: the client's FIN reaches the server (after
// the delay) while the other direction stays open; the server's answer
// and then its FIN reach the client.
func TestLatencyProxyHalfClose(t *testing.T) {
	const delay = 10 * time.Millisecond
	type got struct {
		data []byte
		at   time.Time
		err  error
	}
	gotc := make(chan got, 1)
	srv := startServer(t, func(c *net.TCPConn) {
		data, err := io.ReadAll(c) // until the client's FIN
		gotc <- got{data, time.Now(), err}
		if _, err := c.Write([]byte("pong")); err != nil {
			return
		}
		// Close (by the handler's return) sends FIN.
	})
	p := startProxy(t, srv.Addr(), delay, 0)
	c := dialProxy(t, p)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	fin := time.Now()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	g := <-gotc
	if g.err != nil || string(g.data) != "ping" {
		t.Fatalf("server read %q, %v; want ping then EOF", g.data, g.err)
	}
	if d := g.at.Sub(fin); d < delay {
		t.Fatalf("FIN reached the server %s after it was sent, before the %s delay", d, delay)
	}
	back, err := io.ReadAll(c) // the reverse direction still open, then EOF
	if err != nil || string(back) != "pong" {
		t.Fatalf("client read %q, %v; want pong then EOF", back, err)
	}
	waitOpen(t, p, 0)
}

// TestLatencyProxyReset: a server that resets its connection resets the
// client's.
func TestLatencyProxyReset(t *testing.T) {
	srv := startServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil {
			return
		}
		_ = c.SetLinger(0) // Close sends RST
	})
	p := startProxy(t, srv.Addr(), 5*time.Millisecond, 0)
	c := dialProxy(t, p)
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after the server's reset: %v, want ECONNRESET", err)
	}
	waitOpen(t, p, 0)
}

// TestLatencyProxyBackpressure: a server that does not read stalls the
// client's writes; the proxy holds no more than its buffer.
func TestLatencyProxyBackpressure(t *testing.T) {
	const (
		buffer = 1 << 20
		total  = 512 << 20
	)
	release := make(chan struct{})
	srv := startServer(t, func(c *net.TCPConn) {
		<-release
		_, _ = io.Copy(io.Discard, c)
	})
	p := startProxy(t, srv.Addr(), time.Millisecond, buffer)
	c := dialProxy(t, p)
	var mu sync.Mutex
	written := 0
	done := make(chan error, 1)
	go func() {
		chunk := make([]byte, 256<<10)
		for n := 0; n < total; n += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				done <- err
				return
			}
			mu.Lock()
			written += len(chunk)
			mu.Unlock()
		}
		done <- c.CloseWrite()
	}()
	// Wait until the writes stall (no progress for 500 ms).
	last, since := -1, time.Now()
	for time.Since(since) < 500*time.Millisecond {
		select {
		case err := <-done:
			t.Fatalf("all %d bytes written with the server not reading (err %v): no backpressure", total, err)
		case <-time.After(50 * time.Millisecond):
		}
		mu.Lock()
		w := written
		mu.Unlock()
		if w != last {
			last, since = w, time.Now()
		}
	}
	if m := p.maxHeld.Load(); m > buffer {
		t.Fatalf("a direction held %d bytes, bound %d", m, buffer)
	}
	t.Logf("writes stalled after %d MiB (kernel socket buffers plus the proxy's %d MiB)", last>>20, buffer>>20)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("writes after the server started reading: %v", err)
	}
}

// proxyGoroutines lists the goroutines running the proxy's code.
func proxyGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "topo.(*LatencyProxy)") || strings.Contains(g, "topo.(*latencyConn)") {
			out = append(out, g)
		}
	}
	return out
}

// TestLatencyProxyCloseNoLeak closes a proxy with connections in every
// state (idle, bytes waiting out their delay, a writer blocked by a full
// buffer, a half-closed one): Close returns, resets the clients, stops
// listening and leaves no goroutine behind.
func TestLatencyProxyCloseNoLeak(t *testing.T) {
	// Goroutines of earlier tests' proxies may still be on their way out after Close returned.
	for deadline := time.Now().Add(5 * time.Second); len(proxyGoroutines()) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if g := proxyGoroutines(); len(g) > 0 {
		t.Fatalf("proxy goroutines before the test:\n%s", strings.Join(g, "\n\n"))
	}
	hold := make(chan struct{})
	srv := startServer(t, func(c *net.TCPConn) {
		select {
		case <-hold:
		case <-time.After(30 * time.Second):
		}
	})
	p, err := StartLatencyProxy(context.Background(), LatencyProxyOptions{Listen: "127.0.0.1:0", Target: srv.Addr(),
		Delay: 2 * time.Second, Buffer: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	idle := dialProxy(t, p)
	waiting := dialProxy(t, p)
	if _, err := waiting.Write([]byte("in flight for 2 s")); err != nil {
		t.Fatal(err)
	}
	half := dialProxy(t, p)
	if err := half.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	full := dialProxy(t, p)
	go func() {
		b := make([]byte, 64<<10)
		for {
			if _, err := full.Write(b); err != nil {
				return
			}
		}
	}()
	waitOpen(t, p, 4)
	deadline := time.Now().Add(5 * time.Second)
	for p.maxHeld.Load() < 64<<10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Close hung:\n%s", strings.Join(proxyGoroutines(), "\n\n"))
	}
	close(hold)
	for _, c := range []*net.TCPConn{idle, waiting, half} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, syscall.ETIMEDOUT) || isTimeout(err) {
			t.Fatalf("client still connected after Close: read %v", err)
		}
	}
	if c, err := net.DialTimeout("tcp", p.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("proxy still accepts after Close")
	}
	// Close waited for its goroutines; allow the scheduler a moment for
	// the ones that have signalled done to return.
	deadline = time.Now().Add(2 * time.Second)
	for len(proxyGoroutines()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := proxyGoroutines(); len(g) > 0 {
		t.Fatalf("goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestLatencyProxyDialFailure: a target that refuses leaves the client
// with a closed connection and the proxy serving.
func TestLatencyProxyDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := startProxy(t, dead, time.Millisecond, 0)
	// The proxy accepts, fails to dial and resets the client, which sees
	// the reset at connect (when it comes that fast) or at its first read.
	c, err := net.DialTimeout("tcp", p.Addr().String(), 5*time.Second)
	if err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("read through a proxy whose target refuses: %v, want the connection closed", err)
		}
	}
	if p.DialErrors() != 1 {
		t.Fatalf("dial errors %d, want 1", p.DialErrors())
	}
}

func TestLatencyProxyBadOptions(t *testing.T) {
	for _, o := range []LatencyProxyOptions{
		{Target: "127.0.0.1:1"},
		{Listen: "127.0.0.1:0"},
		{Listen: "127.0.0.1:0", Target: "127.0.0.1:1", Delay: -time.Millisecond},
		{Listen: "127.0.0.1:0", Target: "127.0.0.1:1", Buffer: -1},
		{Listen: "256.0.0.1:0", Target: "127.0.0.1:1"},
	} {
		if p, err := StartLatencyProxy(context.Background(), o); err == nil {
			p.Close()
			t.Errorf("StartLatencyProxy(%+v) succeeded", o)
		}
	}
}

// BenchmarkLatencyProxy measures one connection's throughput through the
// proxy (loopback, one direction, 1 MiB writes) beside loopback without
// it. With a delay the rate is bounded by Buffer/Delay.
func BenchmarkLatencyProxy(b *testing.B) {
	for _, tc := range []struct {
		name  string
		proxy bool
		delay time.Duration
	}{{"direct", false, 0}, {"delay=0", true, 0}, {"delay=2ms", true, 2 * time.Millisecond}, {"delay=10ms", true, 10 * time.Millisecond}} {
		b.Run(tc.name, func(b *testing.B) {
			counted := make(chan int64, 1)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					counted <- -1
					return
				}
				n, _ := io.Copy(io.Discard, c)
				c.Close()
				counted <- n
			}()
			addr := ln.Addr().String()
			if tc.proxy {
				p, err := StartLatencyProxy(context.Background(), LatencyProxyOptions{Listen: "127.0.0.1:0", Target: addr, Delay: tc.delay})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				addr = p.Addr().String()
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				b.Fatal(err)
			}
			if n := <-counted; n != int64(b.N)*int64(len(buf)) {
				b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*int64(len(buf)))
			}
		})
	}
}

// TestDelayLineBounded: a line that never empties keeps a small queue, and
// push waits while the line holds its limit.
func TestDelayLineBounded(t *testing.T) {
	var maxHeld atomic.Int64
	l := newDelayLine(64, &maxHeld)
	for i := 0; i < 8; i++ {
		l.push(chunk{data: make([]byte, 1)})
	}
	for i := 0; i < 100000; i++ {
		l.push(chunk{data: make([]byte, 1)})
		ch, ok := l.next()
		if !ok {
			t.Fatal("line stopped")
		}
		l.release(ch.data)
	}
	if c := cap(l.q); c > 64 {
		t.Fatalf("queue capacity %d after a long steady stream, want it reused", c)
	}
	pushed := make(chan bool)
	go func() { pushed <- l.push(chunk{data: make([]byte, 60)}) }()
	select {
	case <-pushed:
		t.Fatal("push of 60 bytes into a line holding 8 of 64 did not wait")
	case <-time.After(100 * time.Millisecond):
	}
	for i := 0; i < 8; i++ {
		ch, _ := l.next()
		l.release(ch.data)
	}
	if !<-pushed {
		t.Fatal("push failed after the line drained")
	}
	if m := maxHeld.Load(); m > 64 {
		t.Fatalf("held %d bytes, limit 64", m)
	}
	go func() { pushed <- l.push(chunk{data: make([]byte, 60)}) }()
	time.Sleep(20 * time.Millisecond)
	l.stop()
	if <-pushed {
		t.Fatal("push into a stopped line succeeded")
	}
	if _, ok := l.next(); ok {
		t.Fatal("next on a stopped line succeeded")
	}
}
