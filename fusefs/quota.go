package fusefs

import (
	"context"
	"errors"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// Quota is the optional hook (Options.Quota) the mount consults before it lets files grow,
// and tells how files changed size: writes, creates, truncates, fallocate and unlinks through
// this mount. Sizes are apparent bytes. Writes that bypass the mount (kernel passthrough
// writes beside passthrough readers, other nodes, the origin itself) are not seen here; the
// hook's owner is expected to recount them (package usage walks the origin periodically).
type Quota interface {
	// Applies reports whether any quota may cover name; when false the mount does no
	// bookkeeping for it.
	Applies(name string) bool
	// Charge accounts delta bytes to name, owned by uid. An error wrapping syscall.EDQUOT
	// refuses growth (delta > 0, nothing is accounted then) or, with delta 0, a new file.
	Charge(name string, uid uint32, delta int64) error
}

// quotaSize is the size the quota bookkeeping knows for a file open for writing here.
type quotaSize struct {
	mu   sync.Mutex
	size int64
	uid  uint32
	ok   bool // size and uid are known
}

// quotaSizes maps *node to *quotaSize while the node has writable handles that wrote.
var quotaSizes sync.Map

// quota is the mount's hook for name, nil when none applies.
func (st *state) quota(name string) Quota {
	q := st.opts.Quota
	if q == nil || !q.Applies(name) {
		return nil
	}
	return q
}

// quotaErrno turns a refusal into EDQUOT (anything else the hook says is ignored).
func (st *state) quotaErrno(name string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errors.Is(err, syscall.EDQUOT) {
		st.log.Debug("quota: refused", "name", name, "err", err)
		return syscall.EDQUOT
	}
	return 0
}

// quotaCreate refuses a new file where a covering quota is already full.
func (n *node) quotaCreate(ctx context.Context, full string) syscall.Errno {
	q := n.st.quota(full)
	if q == nil {
		return 0
	}
	return n.st.quotaErrno(full, q.Charge(full, caller(ctx).Uid, 0))
}

// quotaGrow charges the growth of h's file to end (the end of a write or an allocation).
func (h *handle) quotaGrow(ctx context.Context, end int64) syscall.Errno {
	q := h.n.st.quota(h.name)
	if q == nil {
		return 0
	}
	v, _ := quotaSizes.LoadOrStore(h.n, &quotaSize{})
	qs := v.(*quotaSize)
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if !qs.ok {
		of := h.originFile()
		if of == nil {
			return 0
		}
		octx, cancel := h.n.st.octx(ctx)
		a, err := of.Stat(octx)
		cancel()
		if err != nil {
			return 0 // the write itself will tell
		}
		qs.size, qs.uid, qs.ok = a.Size, a.Uid, true
	}
	if end <= qs.size {
		return 0
	}
	if e := h.n.st.quotaErrno(h.name, q.Charge(h.name, qs.uid, end-qs.size)); e != 0 {
		return e
	}
	qs.size = end
	return 0
}

// quotaWrite is consulted before a write of length bytes at off.
func (h *handle) quotaWrite(ctx context.Context, off int64, length int) syscall.Errno {
	return h.quotaGrow(ctx, off+int64(length))
}

// quotaAllocate is consulted before fallocate: an allocation that extends the file grows it.
func (h *handle) quotaAllocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if mode&(unix.FALLOC_FL_KEEP_SIZE|unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_COLLAPSE_RANGE) != 0 {
		return 0
	}
	return h.quotaGrow(ctx, int64(off+size))
}

// quotaTruncate is consulted before name is truncated to size (through f when it is open).
func (n *node) quotaTruncate(ctx context.Context, f fs.FileHandle, name string, size int64) syscall.Errno {
	q := n.st.quota(name)
	if q == nil {
		return 0
	}
	if v, ok := quotaSizes.Load(n); ok {
		qs := v.(*quotaSize)
		qs.mu.Lock()
		defer qs.mu.Unlock()
		if qs.ok {
			if e := n.st.quotaErrno(name, q.Charge(name, qs.uid, size-qs.size)); e != 0 {
				return e
			}
			qs.size = size
			return 0
		}
	}
	a, err := n.st.org.Lstat(ctx, name)
	if err != nil || !a.IsRegular() {
		return 0
	}
	return n.st.quotaErrno(name, q.Charge(name, a.Uid, size-a.Size))
}

// quotaUnlink is called before full is unlinked; the function it returns, after: when the
// name is gone, the file's bytes are credited back (if it had no other name).
func (n *node) quotaUnlink(ctx context.Context, full string) func() {
	q := n.st.quota(full)
	if q == nil {
		return func() {}
	}
	a, err := n.st.org.Lstat(ctx, full)
	if err != nil || !a.IsRegular() || a.Nlink > 1 {
		return func() {}
	}
	return func() {
		if _, err := n.st.org.Lstat(ctx, full); err != nil && errors.Is(err, syscall.ENOENT) {
			_ = q.Charge(full, a.Uid, -a.Size)
		}
	}
}

// quotaRelease forgets the size of a file whose writable handle closes (the next writer
// asks the origin again).
func (h *handle) quotaRelease() {
	if h.writable {
		quotaSizes.Delete(h.n)
	}
}
