package fusefs

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
)

// handle is one open file. Writable handles (and read-only handles of files
// the cache does not take) read and write the origin file; read-only handles
// of cacheable files read through a cache.Handle.
type handle struct {
	n        *node
	name     string
	flags    int // open(2) flags for the origin file
	writable bool
	pt       bool // admitted as a passthrough open (immutable)

	mu sync.Mutex
	// of is the origin file (guarded by mu; for cached handles opened
	// lazily, for locks and fallocate).
	of    origin.File
	ch    cache.Handle // read-only cached view, or nil (immutable)
	attr  origin.Attr  // attrs at open, for a cached handle (immutable)
	dirty bool         // written since the last sync (guarded by mu)
	// moved: the file changed on the origin since a cached handle opened
	// its version (set by node.toldKernel); reads then go to the origin.
	moved  atomic.Bool
	closed bool // guarded by mu
	// lockers are the processes (thread group ids) holding POSIX locks
	// through this handle (guarded by mu). The origin lock is one
	// open-file-description lock, dropped when one of them closes the file.
	lockers map[int]bool
}

// ptHandle is a handle admitted with passthrough (iomode.go): the kernel
// reads and writes its backing file. A distinct type, because go-fuse gives
// every handle implementing FilePassthroughFder the inode's existing backing
// file.
type ptHandle struct {
	*handle
	// f is offered to go-fuse as the inode's backing file, which it
	// registers only if it holds none for the inode when the open's reply
	// goes out (newPtHandle). Immutable.
	f *os.File
	// ownsF: f is this handle's duplicate of the kept backing file, closed
	// at Release (otherwise it is the cache handle's). Immutable.
	ownsF bool
	// daemonIO: a read or write of the handle reached the daemon.
	daemonIO sync.Once
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileGetlker   = (*handle)(nil)
	_ fs.FileSetlker   = (*handle)(nil)
	_ fs.FileSetlkwer  = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)

	_ fs.FilePassthroughFder = (*ptHandle)(nil)
	_ fs.FileReader          = (*ptHandle)(nil)
	_ fs.FileWriter          = (*ptHandle)(nil)
	_ fs.FileReleaser        = (*ptHandle)(nil)
)

func asHandle(f fs.FileHandle) *handle {
	switch h := f.(type) {
	case *handle:
		return h
	case *ptHandle:
		return h.handle
	}
	return nil
}

// originFile returns the open origin file, nil if there is none.
func (h *handle) originFile() origin.File {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.of
}

// originFileOpen returns the origin file, opening it for a cached handle.
func (h *handle) originFileOpen(ctx context.Context) (origin.File, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, syscall.EBADF
	}
	if h.of != nil {
		return h.of, nil
	}
	octx, cancel := h.n.st.octx(ctx)
	defer cancel()
	of, err := h.n.st.org.Open(octx, h.n.originName(h.name), h.flags&^syscall.O_TRUNC)
	if err != nil {
		return nil, err
	}
	h.of = of
	return of, nil
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	st := n.st
	full := n.child(name)
	oflags := int(flags) & openFlagMask
	octx, cancel := st.octx(ctx)
	defer cancel()
	defer st.changed(full) // a new name, or a truncated existing file
	if e := n.quotaCreate(ctx, full); e != 0 {
		return nil, nil, 0, e
	}
	of, err := st.org.Create(octx, full, oflags, mode&07777, caller(ctx))
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	a, err := of.Stat(octx)
	if err != nil {
		of.Close()
		return nil, nil, 0, errno(err)
	}
	if st.cache != nil {
		st.cache.Invalidate(full)
	}
	ch := n.newChild(ctx, a, out)
	cn := ch.Operations().(*node)
	cn.io.countCreated()
	cn.mu.Lock()
	cn.writers++
	cn.kernSeen.set = false
	cn.mu.Unlock()
	return ch, &handle{n: cn, name: full, flags: oflags, writable: true, of: of}, 0, 0
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.ch != nil && h.moved.Load() {
		// The file changed since this handle opened its cached version:
		// read it as it is now, as a reader of the share does.
		return h.readLive(ctx, dest, off)
	}
	if h.ch != nil {
		if sr, ok := h.ch.(cache.StoredReader); ok {
			r, ok, err := sr.ReadStored(ctx, off, len(dest))
			if err != nil {
				return nil, errno(err)
			}
			if ok {
				return &storedResult{r: r}, 0
			}
		}
		n, err := h.ch.ReadAt(ctx, dest, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, errno(err)
		}
		return fuse.ReadResultData(dest[:n]), 0
	}
	of := h.originFile()
	if of == nil {
		return nil, syscall.EBADF
	}
	if fd, ok := of.(origin.Fder); ok {
		return fuse.ReadResultFd(uintptr(fd.Fd()), off, len(dest)), 0
	}
	octx, cancel := h.n.st.octx(ctx)
	defer cancel()
	n, err := of.ReadAt(octx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// readLive reads the origin file for a cached handle that moved, as long
// as the name still is the file this handle opened (ESTALE otherwise, as an
// NFS client's handle of a replaced file).
func (h *handle) readLive(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	opened := h.of != nil
	h.mu.Unlock()
	of, err := h.originFileOpen(ctx)
	if err != nil {
		return nil, errno(err)
	}
	octx, cancel := h.n.st.octx(ctx)
	defer cancel()
	if !opened {
		a, err := of.Stat(octx)
		if err != nil {
			return nil, errno(err)
		}
		if !a.InoVolatile && !a.SameObject(h.attr) {
			return nil, syscall.ESTALE
		}
	}
	if fd, ok := of.(origin.Fder); ok {
		return fuse.ReadResultFd(uintptr(fd.Fd()), off, len(dest)), 0
	}
	n, err := of.ReadAt(octx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Read on a passthrough handle means the kernel did not take the backing
// file (go-fuse turned passthrough off): serve it, and say so once.
func (p *ptHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	p.daemonIO.Do(p.n.st.notePassthroughFailed)
	return p.handle.Read(ctx, dest, off)
}

// Write on a passthrough handle means the kernel did not take the backing
// file for this open (go-fuse turned passthrough off). The write goes where
// the kernel would have put it, into the kept backing file, which the flush
// pushes to the origin: written to the origin file instead, it would be
// undone by that push whenever the backing file changed too (a truncating
// open of a writer joining passthrough truncates both).
func (p *ptHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	p.daemonIO.Do(p.n.st.notePassthroughFailed)
	if !p.writable {
		return 0, syscall.EBADF
	}
	if !p.n.backingKept() {
		return p.handle.Write(ctx, data, off)
	}
	if e := p.quotaWrite(ctx, off, len(data)); e != 0 {
		return 0, e
	}
	k, err := p.n.writeBacking(data, off)
	if err != nil {
		return uint32(k), errno(err)
	}
	return uint32(k), 0
}

// PassthroughFd offers f as the inode's backing file.
func (p *ptHandle) PassthroughFd() (int, bool) {
	if p.f == nil {
		return -1, false // only the inode's registered backing file, if any
	}
	return int(p.f.Fd()), true
}

// Release closes the handle, and its duplicate of the backing file (the
// kernel holds its own reference to a registered one).
func (p *ptHandle) Release(ctx context.Context) syscall.Errno {
	e := p.handle.Release(ctx)
	if p.ownsF {
		p.f.Close()
	}
	return e
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	of := h.originFile()
	if of == nil || !h.writable {
		return 0, syscall.EBADF
	}
	if e := h.quotaWrite(ctx, off, len(data)); e != 0 {
		return 0, e
	}
	octx, cancel := h.n.st.octx(ctx)
	defer cancel()
	n, err := of.WriteAt(octx, data, off)
	h.mu.Lock()
	first := !h.dirty
	h.dirty = true
	h.mu.Unlock()
	if first {
		// Lookups ask the origin while the file is open for writing here;
		// Release drops the name again once the writes are done.
		h.n.st.changed(h.name)
		if h.n.st.cache != nil {
			h.n.st.cache.Invalidate(h.name)
		}
	}
	if err != nil {
		return uint32(n), errno(err)
	}
	return uint32(n), 0
}

// sync flushes written data to the origin if anything was written.
func (h *handle) sync(ctx context.Context, force bool) syscall.Errno {
	if h.pt && h.writable {
		// Its writes went to the passthrough backing file.
		if of := h.originFile(); of != nil {
			if err := h.n.pushBacking(ctx, of); err != nil {
				h.n.st.log.Warn("fusefs: writes through passthrough did not reach the origin", "name", h.name, "err", err)
				return errno(err)
			}
		}
	}
	h.mu.Lock()
	of, dirty := h.of, h.dirty
	h.dirty = false
	h.mu.Unlock()
	if of == nil || (!dirty && !force) {
		return 0
	}
	octx, cancel := h.n.st.octx(ctx)
	defer cancel()
	if err := of.Sync(octx); err != nil {
		h.mu.Lock()
		h.dirty = true
		h.mu.Unlock()
		return errno(err)
	}
	if dirty && h.n.st.cache != nil {
		h.n.st.cache.Invalidate(h.name)
	}
	return 0
}

// Flush runs at every close(2): written data reaches the origin's storage
// before close returns, and the closing process's POSIX locks are dropped.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	h.n.st.flushes.Add(1)
	h.mu.Lock()
	locked := len(h.lockers) > 0
	h.mu.Unlock()
	posix := false
	var of origin.File
	if locked {
		// Only then is the caller's process worth looking up (/proc).
		pid := callerTgid(ctx)
		h.mu.Lock()
		posix, of = h.lockers[pid], h.of
		if posix {
			clear(h.lockers)
		}
		h.mu.Unlock()
	}
	if posix && of != nil {
		if fd, ok := of.(origin.Fder); ok {
			lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: 0, Len: 0}
			unix.FcntlFlock(uintptr(fd.Fd()), unix.F_OFD_SETLK, &lk)
		}
	}
	return h.sync(ctx, false)
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.sync(ctx, h.writable)
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	e := h.sync(ctx, false)
	h.mu.Lock()
	of, ch := h.of, h.ch
	h.of, h.closed = nil, true
	h.mu.Unlock()
	if of != nil {
		if err := of.Close(); err != nil && e == 0 {
			e = errno(err)
		}
	}
	if ch != nil {
		ch.Close()
	}
	h.n.mu.Lock()
	delete(h.n.cached, h)
	if h.writable {
		h.n.writers--
		h.n.checked = validation{} // written through this mount: seen at once
	}
	h.n.mu.Unlock()
	if h.writable {
		h.n.st.changed(h.name)
	}
	h.n.release(h.pt, h.writable)
	h.n.removeAside()
	h.quotaRelease()
	return e
}

func (h *handle) lockFd(ctx context.Context) (int, syscall.Errno) {
	of, err := h.originFileOpen(ctx)
	if err != nil {
		return -1, errno(err)
	}
	fd, ok := of.(origin.Fder)
	if !ok {
		return -1, syscall.ENOLCK
	}
	return fd.Fd(), 0
}

func (h *handle) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	fd, e := h.lockFd(ctx)
	if e != 0 {
		return e
	}
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	err := syscall.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &flk)
	out.FromFlockT(&flk)
	return fs.ToErrno(err)
}

func (h *handle) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.setLock(ctx, lk, flags, false)
}

func (h *handle) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.setLock(ctx, lk, flags, true)
}

// setLock takes flock(2) locks and POSIX record locks on the origin file
// (open-file-description locks, so two handles conflict as two processes do).
func (h *handle) setLock(ctx context.Context, lk *fuse.FileLock, flags uint32, wait bool) syscall.Errno {
	fd, e := h.lockFd(ctx)
	if e != 0 {
		return e
	}
	if flags&fuse.FUSE_LK_FLOCK != 0 {
		var op int
		switch lk.Typ {
		case syscall.F_RDLCK:
			op = syscall.LOCK_SH
		case syscall.F_WRLCK:
			op = syscall.LOCK_EX
		case syscall.F_UNLCK:
			op = syscall.LOCK_UN
		default:
			return syscall.EINVAL
		}
		if !wait {
			op |= syscall.LOCK_NB
		}
		return fs.ToErrno(syscall.Flock(fd, op))
	}
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	if err := syscall.FcntlFlock(uintptr(fd), cmd, &flk); err != nil {
		return fs.ToErrno(err)
	}
	if lk.Typ != syscall.F_UNLCK {
		pid := callerTgid(ctx)
		h.mu.Lock()
		if h.lockers == nil {
			h.lockers = map[int]bool{}
		}
		h.lockers[pid] = true
		h.mu.Unlock()
	}
	return 0
}

// callerTgid is the process (thread group) of the FUSE caller; the kernel
// reports the calling thread.
func callerTgid(ctx context.Context) int {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(c.Pid)) + "/status")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					return n
				}
			}
		}
	}
	return int(c.Pid)
}

func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if !h.writable {
		return syscall.EBADF
	}
	of := h.originFile()
	fd, ok := of.(origin.Fder)
	if of == nil || !ok {
		return syscall.EOPNOTSUPP
	}
	if e := h.quotaAllocate(ctx, off, size, mode); e != 0 {
		return e
	}
	if err := unix.Fallocate(fd.Fd(), mode, int64(off), int64(size)); err != nil {
		return fs.ToErrno(err)
	}
	h.mu.Lock()
	h.dirty = true
	h.mu.Unlock()
	h.n.st.changed(h.name)
	if h.n.st.cache != nil {
		h.n.st.cache.Invalidate(h.name)
	}
	return 0
}
