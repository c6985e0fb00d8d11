package fusefs

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
)

// Opening a file: node.Open gathers the facts, asks the open plan
// (openplan.go) and the I/O mode admission (iomode.go) what to do, and
// does it.

// The open plan's reply flags are go-fuse's: a constant index out of range
// fails the build.
var _ = [1]struct{}{}[(fopenKeepCache^fuse.FOPEN_KEEP_CACHE)|(fopenNoFlush^fuse.FOPEN_NOFLUSH)]

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	name := n.name()
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	plan := planOpen(flags)
	if plan.writable {
		return n.openWritable(ctx, octx, name, plan)
	}
	return n.openReadOnly(ctx, octx, name, plan)
}

// openWritable opens the origin file for writing. While passthrough readers
// have the inode open, the handle joins them and writes through the same
// backing file (backing.go).
func (n *node) openWritable(ctx, octx context.Context, name string, plan openPlan) (fs.FileHandle, uint32, syscall.Errno) {
	st := n.st
	mode, e := n.admit(ctx, plan.writeRequest())
	if e != 0 {
		return nil, 0, e
	}
	pt := mode.passthrough()
	n.mu.Lock()
	n.writers++
	n.kernSeen.set = false
	n.checked = validation{} // written through this mount: seen at once
	n.mu.Unlock()
	st.changed(name)
	of, err := st.org.Open(octx, name, plan.oflags)
	if err != nil {
		n.release(pt, true)
		n.mu.Lock()
		n.writers--
		n.mu.Unlock()
		return nil, 0, errno(err)
	}
	if st.cache != nil && plan.truncate {
		st.cache.Invalidate(name)
	}
	h := &handle{n: n, name: name, flags: plan.oflags, writable: true, of: of, pt: pt}
	if pt {
		// Passthrough readers have the inode open: write through the same
		// backing file (backing.go), in step with the origin first.
		if a, err := of.Stat(octx); err == nil {
			n.syncBacking(ctx, a)
		}
		if plan.truncate {
			n.truncateBacking(0)
		}
		return n.newPtHandle(h, mode, nil), plan.fuseFlags, 0
	}
	return h, plan.fuseFlags, 0
}

// openReadOnly opens a file for reading, close-to-open: the handle reads
// the version the origin has now.
func (n *node) openReadOnly(ctx, octx context.Context, name string, op openPlan) (fs.FileHandle, uint32, syscall.Errno) {
	st := n.st
	// Under a consistency TTL, the node's last check against the origin
	// may stand for this open's (consistency.go).
	var (
		a         origin.Attr
		checkedAt time.Time // when the origin gave a, if before this open
		offline   bool
	)
	if c, ok := n.trustedCheck(st.ttlFor(name)); ok {
		a, checkedAt = c.attr, c.at
	} else {
		var vouched bool
		a, vouched = st.vouch.take(ctx, n.StableAttr().Ino, st.stashGen())
		if asksOrigin(vouched, n.writing()) {
			var err error
			if a, offline, err = st.lstat(ctx, name, n); err != nil {
				return nil, 0, errno(err)
			}
		}
	}
	f := readFacts{
		attr:         a,
		offline:      offline,
		offlineCache: st.offline != nil,
		cacheTakes:   st.cache != nil && st.cache.Cacheable(name),
	}
	n.mu.Lock()
	f.lastOpen, f.kernel = n.openSeen, n.kernSeen
	plan := planRead(f)
	n.openSeen = plan.lastOpen
	n.mu.Unlock()

	if plan.refuse != 0 {
		return nil, 0, plan.refuse
	}
	if plan.source == fromOfflineCache {
		return n.openOffline(ctx, name, plan)
	}
	if plan.invalidateAttrs {
		n.NotifyContent(-1, 0)
	}
	// Open passthrough readers of an older version are brought up to this one.
	n.syncBacking(ctx, a)
	if plan.source == fromCache {
		ch, res, err := st.openCache(octx, name, a, checkedAt)
		if err == nil {
			return n.openCached(ctx, name, a, op, plan, ch, res)
		}
		st.log.Debug("fusefs: cache open failed; reading the origin", "name", name, "err", err)
		plan = plan.cacheFailed()
	}
	return n.openOrigin(ctx, octx, name, op, plan)
}

// openCached makes the handle of a read-only open of version a that the
// cache has opened (ch): a passthrough handle if admitted so, a cached-I/O
// one otherwise.
func (n *node) openCached(ctx context.Context, name string, a origin.Attr, op openPlan, plan readPlan, ch cache.Handle, res cache.OpenResult) (fs.FileHandle, uint32, syscall.Errno) {
	st := n.st
	facts := cacheFacts{
		changed:       res.Changed,
		passthroughOK: st.passthroughOK(),
		settled:       settled(a, st.opts.PassthroughSettle, time.Now()),
		small:         a.Size <= pageCacheMax,
	}
	var pf *os.File
	if facts.mayPassthrough() {
		pf = ch.PassthroughFile()
		facts.offersPassthrough = pf != nil
	}
	plan = plan.cacheOpened(facts)
	mode, e := n.admit(ctx, plan.admit)
	if e != 0 {
		ch.Close()
		return nil, 0, e
	}
	h := &handle{n: n, name: name, flags: op.oflags, ch: ch, attr: a}
	if mode.passthrough() {
		h.pt = true
		st.cache.NotePassthroughOpen(a.Size)
		if mode == registerPassthrough {
			n.adoptBacking(pf, plan.admit.fp)
		}
		return n.newPtHandle(h, mode, pf), plan.fuseFlags, 0
	}
	n.mu.Lock()
	if n.cached == nil {
		n.cached = map[*handle]struct{}{}
	}
	n.cached[h] = struct{}{}
	n.mu.Unlock()
	return h, plan.fuseFlags, 0
}

// openOrigin makes the handle of a read-only open that reads the origin
// file. Admitted with passthrough, it shares the registered backing file,
// whose content is the same version: the kernel reads that.
func (n *node) openOrigin(ctx, octx context.Context, name string, op openPlan, plan readPlan) (fs.FileHandle, uint32, syscall.Errno) {
	mode, e := n.admit(ctx, plan.admit)
	if e != 0 {
		return nil, 0, e
	}
	pt := mode.passthrough()
	of, err := n.st.org.Open(octx, name, op.oflags)
	if err != nil {
		n.release(pt, false)
		return nil, 0, errno(err)
	}
	h := &handle{n: n, name: name, flags: op.oflags, of: of, pt: pt}
	if pt {
		return n.newPtHandle(h, mode, nil), plan.fuseFlags, 0
	}
	return h, plan.fuseFlags, 0
}

// openOffline serves a read-only open from the cache alone while the origin
// is in trouble.
func (n *node) openOffline(ctx context.Context, name string, plan readPlan) (fs.FileHandle, uint32, syscall.Errno) {
	ch, a, err := n.st.offline.OpenOffline(ctx, name, n.st.opts.OfflineGrace)
	if err != nil {
		return nil, 0, syscall.EIO
	}
	plan = plan.offlineOpened(a)
	mode, e := n.admit(ctx, plan.admit)
	if e != 0 {
		ch.Close()
		return nil, 0, e
	}
	pt := mode.passthrough()
	h := &handle{n: n, name: name, flags: syscall.O_RDONLY, ch: ch, attr: a, pt: pt}
	if pt {
		return n.newPtHandle(h, mode, nil), plan.fuseFlags, 0
	}
	return h, plan.fuseFlags, 0
}

// admit admits an open to the node's I/O mode (iomode.go), holding the
// backing file steady meanwhile.
func (n *node) admit(ctx context.Context, r openRequest) (ioAdmission, syscall.Errno) {
	mode, e := n.io.admit(ctx, r, backingLock{n})
	if e == syscall.ETXTBSY {
		n.st.log.Warn("fusefs: open refused while the file is open for passthrough reads of another version",
			"name", n.name(), "read_only", r.readOnly)
	}
	return mode, e
}

// newPtHandle makes the handle of an open admitted with passthrough mode.
// An open that registers offers the cache's complete file pf. An open that
// joins offers the kept backing file: go-fuse attaches its backing ID to
// the reply only after Open returns, and the passthrough handles the open
// was admitted to join may have released in between (RELEASE is
// asynchronous: close(2) has returned long before), taking go-fuse's
// backing ID with them. A handle with nothing to offer would then get
// cached I/O from the kernel (nothing else has the inode open there) while
// the daemon counts it as passthrough: a writer's writes would reach the
// origin file and be undone by the flush's push of the backing file, and a
// reader's reads would reach the daemon and turn passthrough off for the
// mount. Registered again, the kept backing file is the same file with the
// same content (backing.go's invariant), so the mode holds either way. pf,
// if any, stands in when no backing file is kept (it could not be
// duplicated): it is the joined version too.
func (n *node) newPtHandle(h *handle, mode ioAdmission, pf *os.File) *ptHandle {
	if mode == registerPassthrough {
		return &ptHandle{handle: h, f: pf}
	}
	if f := n.keptBackingDup(); f != nil {
		return &ptHandle{handle: h, f: f, ownsF: true}
	}
	return &ptHandle{handle: h, f: pf}
}

// release uncounts a handle admitted by admit; the last passthrough handle
// takes the kept backing file with it.
func (n *node) release(pt, writable bool) {
	if n.io.release(pt, writable) {
		n.dropBacking()
	}
}
