package nfs

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ONC RPC (RFC 5531) constants.
const (
	rpcVersion   = 2
	msgCall      = 0
	msgReply     = 1
	replyAccept  = 0
	acceptOK     = 0
	authNone     = 0
	authSys      = 1
	maxRecord    = 64 << 20 // refuse absurd record sizes from a confused peer
	lastFragment = 1 << 31
)

// errConnClosed: the connection died while a call was in flight.
var errConnClosed = errors.New("nfs: connection closed")

// transportError marks trouble with the connection (dial, write, read,
// deadline) as opposed to an answer from the server. Calls that fail with
// it may be retried on a new connection.
type transportError struct {
	op  string
	err error
}

func (e *transportError) Error() string { return "nfs transport: " + e.op + ": " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

func isTransport(err error) bool {
	var te *transportError
	return errors.As(err, &te)
}

// rpcError is an RPC-level rejection (PROG_UNAVAIL, auth error, ...).
type rpcError struct{ msg string }

func (e *rpcError) Error() string { return "nfs rpc: " + e.msg }

// cred is an RPC credential (AUTH_SYS or AUTH_NONE).
type cred struct {
	flavor uint32
	body   []byte
}

func authSysCred(uid, gid uint32) cred {
	var e enc
	e.u32(uint32(time.Now().Unix()))
	e.str("eddy")
	e.u32(uid)
	e.u32(gid)
	e.u32(1) // one supplementary group: gid
	e.u32(gid)
	return cred{flavor: authSys, body: e.b}
}

type reply struct {
	buf []byte
	err error
}

// rpcConn is one TCP connection carrying many concurrent calls, matched to
// their replies by xid.
type rpcConn struct {
	c   net.Conn
	wmu sync.Mutex // serialises record writes

	mu      sync.Mutex
	pending map[uint32]chan reply // guarded by mu
	err     error                 // guarded by mu; set once the connection is dead

	xid      atomic.Uint32
	lastRecv atomic.Int64 // unix nanos of the last reply received
	done     chan struct{}
}

func newRPCConn(c net.Conn, timeout time.Duration) *rpcConn {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(5 * time.Second)
		if raw, err := tc.SyscallConn(); err == nil && timeout > 0 {
			// Unacknowledged data for this long kills the connection: a
			// cut link surfaces as an error instead of an endless wait.
			_ = raw.Control(func(fd uintptr) {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(timeout.Milliseconds()))
			})
		}
	}
	rc := &rpcConn{c: c, pending: make(map[uint32]chan reply), done: make(chan struct{})}
	rc.xid.Store(rand.Uint32())
	rc.lastRecv.Store(time.Now().UnixNano())
	go rc.receive()
	return rc
}

// alive reports whether the connection can still carry calls.
func (rc *rpcConn) alive() bool {
	select {
	case <-rc.done:
		return false
	default:
		return true
	}
}

// close kills the connection and fails every call in flight with err.
func (rc *rpcConn) close(err error) {
	rc.mu.Lock()
	if rc.err != nil {
		rc.mu.Unlock()
		return
	}
	rc.err = err
	pending := rc.pending
	rc.pending = nil
	close(rc.done)
	rc.mu.Unlock()
	rc.c.Close()
	for _, ch := range pending {
		ch <- reply{err: err}
	}
}

func (rc *rpcConn) receive() {
	r := bufio.NewReaderSize(rc.c, 256<<10)
	var hdr [4]byte
	for {
		var rec []byte
		for {
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				rc.close(&transportError{"receive", err})
				return
			}
			h := binary.BigEndian.Uint32(hdr[:])
			n := int(h &^ lastFragment)
			if len(rec)+n > maxRecord {
				rc.close(&transportError{"receive", fmt.Errorf("record of %d bytes", len(rec)+n)})
				return
			}
			if rec == nil && h&lastFragment != 0 {
				rec = getRecord(n)
				if _, err := io.ReadFull(r, rec); err != nil {
					rc.close(&transportError{"receive", err})
					return
				}
				break
			}
			start := len(rec)
			rec = append(rec, make([]byte, n)...)
			if _, err := io.ReadFull(r, rec[start:]); err != nil {
				rc.close(&transportError{"receive", err})
				return
			}
			if h&lastFragment != 0 {
				break
			}
		}
		rc.lastRecv.Store(time.Now().UnixNano())
		if len(rec) < 4 {
			continue
		}
		xid := binary.BigEndian.Uint32(rec)
		rc.mu.Lock()
		ch, ok := rc.pending[xid]
		if ok {
			delete(rc.pending, xid)
		}
		rc.mu.Unlock()
		if ok {
			ch <- reply{buf: rec} // buffered: never blocks
		}
		// A reply nobody waits for (the caller gave up) is dropped.
	}
}

// Large reply records (READ data) are recycled: allocating a fresh MiB per
// READ costs more than the copy out of it.
var recordPool = sync.Pool{New: func() any { return new([]byte) }}

const poolMin = 64 << 10

func getRecord(n int) []byte {
	if n < poolMin {
		return make([]byte, n)
	}
	b := recordPool.Get().(*[]byte)
	if cap(*b) < n {
		return make([]byte, n, max(n, maxIO+4096))
	}
	return (*b)[:n]
}

// putRecord recycles a reply record once nothing refers into it.
func putRecord(rec []byte) {
	if cap(rec) < poolMin {
		return
	}
	recordPool.Put(&rec)
}

// call sends one RPC and waits for its reply, ctx's deadline or the
// connection's death. It returns the procedure's result body (after the
// accepted-reply header). A call that times out on a connection that has
// received nothing since the call was sent closes the connection: it is
// presumed dead (cut link, vanished server), and the caller's retry dials
// afresh.
// The reply body aliases a pooled record: the caller passes rec to
// putRecord once it has copied out what it keeps.
func (rc *rpcConn) call(ctx context.Context, prog, vers, proc uint32, cr cred, args []byte) (body, rec []byte, err error) {
	xid := rc.xid.Add(1)
	var e enc
	e.b = make([]byte, 4, 64+len(cr.body)+len(args))
	e.u32(xid)
	e.u32(msgCall)
	e.u32(rpcVersion)
	e.u32(prog)
	e.u32(vers)
	e.u32(proc)
	e.u32(cr.flavor)
	e.opaque(cr.body)
	e.u32(authNone)
	e.u32(0)
	e.b = append(e.b, args...)
	binary.BigEndian.PutUint32(e.b, uint32(len(e.b)-4)|lastFragment)

	ch := make(chan reply, 1)
	rc.mu.Lock()
	if rc.err != nil {
		err := rc.err
		rc.mu.Unlock()
		return nil, nil, err
	}
	rc.pending[xid] = ch
	rc.mu.Unlock()
	sent := time.Now()

	rc.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = rc.c.SetWriteDeadline(dl)
	} else {
		_ = rc.c.SetWriteDeadline(time.Time{})
	}
	_, werr := rc.c.Write(e.b)
	rc.wmu.Unlock()
	if werr != nil {
		// A partial record corrupts the stream: the connection is done.
		err := &transportError{"send", werr}
		rc.close(err)
		return nil, nil, err
	}

	select {
	case r := <-ch:
		if r.err != nil {
			return nil, nil, r.err
		}
		body, err := parseReply(r.buf)
		if err != nil {
			putRecord(r.buf)
			return nil, nil, err
		}
		return body, r.buf, nil
	case <-ctx.Done():
		rc.mu.Lock()
		if rc.pending != nil {
			delete(rc.pending, xid)
		}
		rc.mu.Unlock()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && rc.lastRecv.Load() < sent.UnixNano() {
			rc.close(&transportError{"receive", syscall.ETIMEDOUT})
		}
		return nil, nil, &transportError{"wait", ctx.Err()}
	}
}

func parseReply(b []byte) ([]byte, error) {
	d := dec{b: b}
	d.u32() // xid
	if mt := d.u32(); mt != msgReply {
		return nil, &rpcError{fmt.Sprintf("message type %d is not a reply", mt)}
	}
	if st := d.u32(); st != replyAccept {
		return nil, &rpcError{fmt.Sprintf("call denied (reject_stat %d)", d.u32())}
	}
	d.u32()       // verifier flavor
	d.opaque(400) // verifier body
	as := d.u32() // accept_stat
	if d.err != nil {
		return nil, d.err
	}
	switch as {
	case acceptOK:
		return b[d.off:], nil
	case 1:
		return nil, &rpcError{"PROG_UNAVAIL"}
	case 2:
		return nil, &rpcError{"PROG_MISMATCH"}
	case 3:
		return nil, &rpcError{"PROC_UNAVAIL"}
	case 4:
		return nil, &rpcError{"GARBAGE_ARGS"}
	default:
		return nil, &rpcError{fmt.Sprintf("accept_stat %d", as)}
	}
}

// Dialer dials a TCP address; tests pass one that dials inside a network
// namespace.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

func defaultDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// dialRPC dials addr, retrying EADDRINUSE (a source-port collision) a few
// times.
func dialRPC(ctx context.Context, dial Dialer, addr string, timeout time.Duration) (*rpcConn, error) {
	var c net.Conn
	var err error
	for i := 0; i < 5; i++ {
		c, err = dial(ctx, "tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return nil, &transportError{"dial " + addr, err}
	}
	return newRPCConn(c, timeout), nil
}

// Portmapper (RFC 1833, version 2) and MOUNT v3 (RFC 1813 appendix I).
const (
	pmapProg        = 100000
	pmapVers        = 2
	pmapGetPort     = 3
	ipProtoTCP      = 6
	mountProg       = 100005
	mountVers       = 3
	mountProcMnt    = 1
	mountProcUmnt   = 3
	nfsProg         = 100003
	nfsVers         = 3
	maxFHSize       = 64
	defaultPmapPort = 111
)

// getPort asks the portmapper at host for prog's TCP port.
func getPort(ctx context.Context, dial Dialer, host string, prog, vers uint32, timeout time.Duration) (int, error) {
	rc, err := dialRPC(ctx, dial, net.JoinHostPort(host, fmt.Sprint(defaultPmapPort)), timeout)
	if err != nil {
		return 0, err
	}
	defer rc.close(errConnClosed)
	var e enc
	e.u32(prog)
	e.u32(vers)
	e.u32(ipProtoTCP)
	e.u32(0)
	res, _, err := rc.call(ctx, pmapProg, pmapVers, pmapGetPort, cred{}, e.b)
	if err != nil {
		return 0, err
	}
	d := dec{b: res}
	port := d.u32()
	if d.err != nil {
		return 0, d.err
	}
	if port == 0 {
		// The server is not (or no longer) serving: trouble, not an answer.
		return 0, &transportError{"portmap", fmt.Errorf("program %d v%d not registered at %s", prog, vers, host)}
	}
	return int(port), nil
}

// mountExport asks the MOUNT service for the export's root file handle.
func mountExport(ctx context.Context, dial Dialer, addr, export string, cr cred, timeout time.Duration) ([]byte, error) {
	rc, err := dialRPC(ctx, dial, addr, timeout)
	if err != nil {
		return nil, err
	}
	defer rc.close(errConnClosed)
	var e enc
	e.str(export)
	res, _, err := rc.call(ctx, mountProg, mountVers, mountProcMnt, cr, e.b)
	if err != nil {
		return nil, err
	}
	d := dec{b: res}
	st := d.u32()
	if d.err != nil {
		return nil, d.err
	}
	if st != 0 {
		return nil, fmt.Errorf("nfs: mount %s: %w", export, statusErrno(st))
	}
	fh := d.opaque(maxFHSize)
	if d.err != nil {
		return nil, d.err
	}
	return append([]byte(nil), fh...), nil
}
