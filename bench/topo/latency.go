package topo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// This kernel has no netem, so added latency comes from a TCP proxy of our
// own: every byte it reads from one side at time t is written to the other
// side at t+Delay, in each direction independently, so a request/response
// round trip grows by 2 x Delay while bulk transfers keep streaming (the
// bytes in flight are held in the proxy, up to Buffer per direction per
// connection, like the bytes in flight on a long link).
//
// Locks: LatencyProxy.mu and each delayLine.mu are never held together.

// DefaultLatencyBuffer is the default bound on the bytes one direction of
// one proxied connection may hold (queued or being written). The
// throughput of a direction is at most Buffer/Delay: 16 MiB keeps a 10 ms
// delay above 1.6 GB/s, faster than a 10 Gbit/s link.
const DefaultLatencyBuffer = 16 << 20

// latencyReadSize is the largest single read the proxy makes.
const latencyReadSize = 64 << 10

// LatencyProxyOptions configures StartLatencyProxy.
type LatencyProxyOptions struct {
	// Netns is the network namespace the proxy listens and dials in ("" =
	// the caller's).
	Netns string
	// Listen is the host:port to listen on; port 0 picks a free one.
	Listen string
	// Target is the host:port every accepted connection is forwarded to.
	Target string
	// Delay is the one-way delay added in each direction (RTT grows by
	// twice as much). 0 forwards at once.
	Delay time.Duration
	// Buffer bounds the bytes one direction of one connection holds
	// (default DefaultLatencyBuffer). When it is full the proxy stops
	// reading that side, and TCP's flow control pushes back on the sender.
	Buffer int
	// DialTimeout bounds the connection to Target (default 10 s).
	DialTimeout time.Duration
}

// LatencyProxy is a running TCP latency proxy. Close stops it: the
// listener, every connection (reset), and every goroutine, which Close
// waits for.
//
// What it does not model: connection set-up (the client's connect
// completes at the proxy, without the SYN round trip) and loss. Reads are
// stamped when the proxy's read returns, writes wait on the clock, so a
// byte is never forwarded before its time; it can be late by the
// wake-up and scheduling jitter (about 0.1 ms on a busy 2-core VM; Stats
// measures it).
type LatencyProxy struct {
	opts LatencyProxyOptions
	ln   net.Listener
	// ctx is cancelled by Close: it ends the accept loop and dials.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[*latencyConn]struct{} // guarded by mu: open connections
	closed bool                      // guarded by mu

	accepted   atomic.Int64
	dialErrors atomic.Int64
	maxHeld    atomic.Int64 // high-water mark of one direction's held bytes
	chunks     atomic.Int64 // reads forwarded
	bytes      atomic.Int64 // bytes forwarded
	lateNs     atomic.Int64 // sum over chunks of write start - due time
	maxLateNs  atomic.Int64
	closeOnce  sync.Once
}

// LatencyStats says what a proxy forwarded and how closely it kept its
// delay.
type LatencyStats struct {
	Connections int64 // accepted
	Chunks      int64 // reads forwarded (each written once, whole)
	Bytes       int64
	// Late sums, over the chunks, how long after its due time each was
	// written: timer wake-up, scheduling, and waiting for a receiver that
	// does not keep up (flow control) all count.
	Late    time.Duration
	MaxLate time.Duration
}

// Stats reports what the proxy forwarded so far.
func (p *LatencyProxy) Stats() LatencyStats {
	return LatencyStats{Connections: p.accepted.Load(), Chunks: p.chunks.Load(), Bytes: p.bytes.Load(),
		Late: time.Duration(p.lateNs.Load()), MaxLate: time.Duration(p.maxLateNs.Load())}
}

// StartLatencyProxy listens on opts.Listen (inside opts.Netns) and forwards
// every connection to opts.Target with opts.Delay added each way.
func StartLatencyProxy(ctx context.Context, opts LatencyProxyOptions) (*LatencyProxy, error) {
	if opts.Listen == "" || opts.Target == "" {
		return nil, errors.New("topo: LatencyProxyOptions needs Listen and Target")
	}
	if opts.Delay < 0 {
		return nil, fmt.Errorf("topo: latency proxy: negative delay %s", opts.Delay)
	}
	if opts.Buffer < 0 {
		return nil, fmt.Errorf("topo: latency proxy: negative buffer %d", opts.Buffer)
	}
	if opts.Buffer == 0 {
		opts.Buffer = DefaultLatencyBuffer
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	var ln net.Listener
	listen := func() (err error) {
		var lc net.ListenConfig
		ln, err = lc.Listen(ctx, "tcp", opts.Listen)
		return err
	}
	var err error
	if opts.Netns != "" {
		err = RunIn(opts.Netns, listen)
	} else {
		err = listen()
	}
	if err != nil {
		return nil, fmt.Errorf("topo: latency proxy: listen %s: %w", opts.Listen, err)
	}
	p := &LatencyProxy{opts: opts, ln: ln, conns: map[*latencyConn]struct{}{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *LatencyProxy) Addr() *net.TCPAddr { return p.ln.Addr().(*net.TCPAddr) }

// Port is the port the proxy listens on.
func (p *LatencyProxy) Port() int { return p.Addr().Port }

// Delay is the one-way delay the proxy adds.
func (p *LatencyProxy) Delay() time.Duration { return p.opts.Delay }

// Target is where the proxy forwards to.
func (p *LatencyProxy) Target() string { return p.opts.Target }

// Accepted counts the connections accepted so far.
func (p *LatencyProxy) Accepted() int64 { return p.accepted.Load() }

// DialErrors counts the connections dropped because Target did not answer.
func (p *LatencyProxy) DialErrors() int64 { return p.dialErrors.Load() }

// Open counts the connections being forwarded now.
func (p *LatencyProxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops listening, resets every open connection and waits for every
// goroutine of the proxy to end. Safe to call more than once.
func (p *LatencyProxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.cancel()
		err = p.ln.Close()
		conns := make([]*latencyConn, 0, len(p.conns))
		for c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		for _, c := range conns {
			c.abort()
		}
		p.wg.Wait()
	})
	if err != nil {
		return fmt.Errorf("topo: latency proxy: close: %w", err)
	}
	return nil
}

func (p *LatencyProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				select {
				case <-p.ctx.Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
			return
		}
		p.accepted.Add(1)
		p.wg.Add(1) // safe: this goroutine is itself counted
		go p.serve(c.(*net.TCPConn))
	}
}

// serve dials the target for one accepted connection and starts its two
// directions.
func (p *LatencyProxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.DialTimeout)
	var tc net.Conn
	var err error
	if p.opts.Netns != "" {
		tc, err = DialIn(ctx, p.opts.Netns, "tcp", p.opts.Target)
	} else {
		var d net.Dialer
		tc, err = d.DialContext(ctx, "tcp", p.opts.Target)
	}
	cancel()
	if err != nil {
		p.dialErrors.Add(1)
		_ = client.SetLinger(0)
		client.Close()
		return
	}
	target := tc.(*net.TCPConn)
	c := &latencyConn{p: p, a: client, b: target, aborted: make(chan struct{})}
	c.up = newDelayLine(p.opts.Buffer, &p.maxHeld)
	c.down = newDelayLine(p.opts.Buffer, &p.maxHeld)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = client.SetLinger(0)
		_ = target.SetLinger(0)
		client.Close()
		target.Close()
		return
	}
	p.conns[c] = struct{}{}
	c.left.Store(2)
	p.wg.Add(4)
	p.mu.Unlock()
	go c.read(client, c.up)
	go c.write(c.up, target)
	go c.read(target, c.down)
	go c.write(c.down, client)
}

// latencyConn is one proxied connection: a (accepted) and b (dialled),
// with a delay line in each direction: up (a to b) and down (b to a).
type latencyConn struct {
	p        *LatencyProxy
	a, b     *net.TCPConn
	up, down *delayLine

	aborted   chan struct{} // closed by abort
	abortOnce sync.Once
	left      atomic.Int32 // directions whose writer has not finished
}

// abort resets both sides and stops both directions.
func (c *latencyConn) abort() {
	c.abortOnce.Do(func() {
		close(c.aborted)
		c.up.stop()
		c.down.stop()
		_ = c.a.SetLinger(0)
		_ = c.b.SetLinger(0)
		c.a.Close()
		c.b.Close()
	})
}

// finish is called by each direction's writer when it ends; the last one
// closes both sockets and forgets the connection.
func (c *latencyConn) finish() {
	if c.left.Add(-1) != 0 {
		return
	}
	c.a.Close()
	c.b.Close()
	c.up.stop()
	c.down.stop()
	c.p.mu.Lock()
	delete(c.p.conns, c)
	c.p.mu.Unlock()
}

// read moves bytes from src into line, stamped with their due time, and
// ends the line with src's end (EOF or error).
func (c *latencyConn) read(src *net.TCPConn, line *delayLine) {
	defer c.p.wg.Done()
	buf := make([]byte, latencyReadSize)
	for {
		n, err := src.Read(buf)
		now := time.Now()
		if n > 0 {
			if !line.push(chunk{data: copyChunk(buf[:n]), due: now.Add(c.p.opts.Delay)}) {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				err = errReset
			}
			line.push(chunk{end: err, due: now.Add(c.p.opts.Delay)})
			return
		}
	}
}

// errReset marks a side that ended with an error (reset) rather than FIN.
var errReset = errors.New("connection reset")

// write forwards line's chunks to dst when they are due. At the end of the
// line it half-closes dst (the source sent FIN) or resets it (the source
// failed).
func (c *latencyConn) write(line *delayLine, dst *net.TCPConn) {
	defer c.p.wg.Done()
	defer c.finish()
	var timer *time.Timer
	for {
		ch, ok := line.next()
		if !ok {
			return
		}
		if !c.waitUntil(ch.due, &timer) {
			return
		}
		if ch.end != nil {
			if ch.end == io.EOF {
				if err := dst.CloseWrite(); err != nil {
					c.abort()
				}
			} else {
				c.abort()
			}
			return
		}
		c.p.noteLate(time.Since(ch.due))
		n, err := dst.Write(ch.data)
		c.p.chunks.Add(1)
		c.p.bytes.Add(int64(n))
		line.release(ch.data)
		if err != nil {
			c.abort()
			return
		}
	}
}

func (p *LatencyProxy) noteLate(d time.Duration) {
	p.lateNs.Add(int64(d))
	atomicMax(&p.maxLateNs, int64(d))
}

func atomicMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// waitUntil sleeps until due; false when the connection or the proxy was
// stopped meanwhile. Go's timers wake on a millisecond tick (up to ~1 ms
// late), so the last stretch (under 2 ms) is slept with nanosleep on this
// thread, with the thread's timer slack cut from 50 us to 1 ns: tens of
// microseconds late on an idle machine.
func (c *latencyConn) waitUntil(due time.Time, timer **time.Timer) bool {
	const fine = 2 * time.Millisecond
	d := time.Until(due)
	if d > fine {
		if *timer == nil {
			*timer = time.NewTimer(d - fine)
		} else {
			(*timer).Reset(d - fine)
		}
		select {
		case <-(*timer).C:
		case <-c.aborted:
			(*timer).Stop()
			return false
		}
		d = time.Until(due)
	}
	if d > 0 {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
		ts := unix.NsecToTimespec(int64(d))
		for {
			err := unix.Nanosleep(&ts, &ts)
			if err != unix.EINTR {
				break
			}
		}
	}
	select {
	case <-c.aborted:
		return false
	default:
		return true
	}
}

// chunk is bytes read at one time, or the end of the stream (end set).
type chunk struct {
	data []byte
	end  error
	due  time.Time
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, latencyReadSize); return &b }}

// copyChunk copies b into a buffer of its own: a pooled full-size buffer
// for large reads, an exact one for small reads (so a stream of small
// messages does not pin 64 KiB each).
func copyChunk(b []byte) []byte {
	if len(b) > latencyReadSize/4 {
		bp := chunkPool.Get().(*[]byte)
		return append((*bp)[:0], b...)
	}
	return append([]byte(nil), b...)
}

func freeChunk(b []byte) {
	if cap(b) == latencyReadSize {
		b = b[:cap(b)]
		chunkPool.Put(&b)
	}
}

// delayLine is one direction's FIFO of chunks, bounded by the memory it
// holds: the capacity of its queued chunks plus the one being written.
type delayLine struct {
	limit   int
	maxHeld *atomic.Int64 // the proxy's high-water mark

	mu      sync.Mutex
	cond    *sync.Cond
	q       []chunk // guarded by mu
	head    int     // guarded by mu: q[head:] are queued
	held    int     // guarded by mu: bytes of queued and in-write chunks
	stopped bool    // guarded by mu
}

func newDelayLine(limit int, maxHeld *atomic.Int64) *delayLine {
	l := &delayLine{limit: limit, maxHeld: maxHeld}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// push queues ch, waiting while the line is full (a chunk is always
// accepted by an empty line, however large). False when the line stopped.
func (l *delayLine) push(ch chunk) bool {
	size := cap(ch.data)
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.stopped && l.held > 0 && l.held+size > l.limit {
		l.cond.Wait()
	}
	if l.stopped {
		freeChunk(ch.data)
		return false
	}
	// Reuse the taken front of q (a steady stream may never empty it).
	if l.head > 0 && (l.head == len(l.q) || 2*l.head >= len(l.q)) {
		n := copy(l.q, l.q[l.head:])
		clear(l.q[n:])
		l.q, l.head = l.q[:n], 0
	}
	l.q = append(l.q, ch)
	l.held += size
	atomicMax(l.maxHeld, int64(l.held))
	l.cond.Broadcast()
	return true
}

// next takes the oldest chunk, waiting for one; false when stopped. The
// chunk's bytes stay counted until release.
func (l *delayLine) next() (chunk, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.stopped && l.head == len(l.q) {
		l.cond.Wait()
	}
	if l.stopped {
		return chunk{}, false
	}
	ch := l.q[l.head]
	l.q[l.head] = chunk{}
	l.head++
	return ch, true
}

// release uncounts a written chunk and recycles its buffer.
func (l *delayLine) release(b []byte) {
	l.mu.Lock()
	l.held -= cap(b)
	l.cond.Broadcast()
	l.mu.Unlock()
	freeChunk(b)
}

// stop wakes every waiter; push and next fail from now on. Queued chunks
// are dropped.
func (l *delayLine) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.stopped = true
	for i := l.head; i < len(l.q); i++ {
		freeChunk(l.q[i].data)
	}
	l.q, l.head, l.held = nil, 0, 0
	l.cond.Broadcast()
}

// Via returns a handle on the same sshd for clients that reach it at
// addr:port instead (e.g. through a LatencyProxy in front of it):
// MountSSHFS with the handle connects there. Stop through either handle
// stops the one server.
func (s *SSHD) Via(addr string, port int) *SSHD {
	cfg := s.cfg
	cfg.Addr, cfg.Port = addr, port
	return &SSHD{cfg: cfg, ClientKey: s.ClientKey, cmd: s.cmd, done: s.done}
}

// Ganesha's NFS and MOUNT ports (its generated config): a client that is
// given both needs no portmapper, so both can be reached through proxies.
const (
	GaneshaNFSPort   = 2049
	GaneshaMountPort = 20048
)

// URLVia is the nfs:// origin spec of the export reached at host, with the
// NFS and MOUNT services at the given ports (e.g. two LatencyProxy
// listeners): nfs://host:nfsPort/EXPORT?mountport=mountPort. The
// portmapper is not consulted.
func (g *Ganesha) URLVia(host string, nfsPort, mountPort int) string {
	return "nfs://" + net.JoinHostPort(host, strconv.Itoa(nfsPort)) + g.opts.Export + "?mountport=" + strconv.Itoa(mountPort)
}
