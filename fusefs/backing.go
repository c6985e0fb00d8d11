package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/origin"
)

// Live files and passthrough.
//
// A passthrough open hands the kernel a backing file (the cache's data file
// of one version) that the kernel then reads and writes without asking the
// daemon, and the kernel lets an inode have one backing file at a time: while
// any open of the inode uses passthrough, every open must use it, with that
// file (iomode.go). So the daemon keeps the backing file in step with
// the file instead of refusing opens:
//
//   - A change on the origin (another node's append or rewrite), seen in a
//     GETATTR or LOOKUP reply or at an open, is copied into the backing file
//     before the reply goes out, so open passthrough readers read it within
//     the attribute timeout as NFS clients do. A file that grew gets its new
//     bytes first (a reader following the end sees them soonest); then the
//     rest is compared with the origin and every block that differs is
//     rewritten, so a file rewritten and grown (rsync --inplace, a
//     truncating rewrite) is never served half old. The origin is read in
//     full at every change seen: that is the price of a file that changes
//     while open by passthrough, and new opens of a file still changing
//     read through the daemon instead (settled).
//   - A writer opened on this node while passthrough readers are open joins
//     passthrough (the kernel allows nothing else): its writes land in the
//     backing file, where readers on this node see them at once, and reach
//     the origin at every flush (each close) and fsync, before they return.
//   - The backing file then no longer holds the cache's version: the cache
//     entry is invalidated at the first divergence, so the cache never serves
//     it as that version.
//
// INVARIANT: while io.ptOpens > 0 and back != nil, back holds the content
// of version io.ptFP of the file, plus the writes of local passthrough
// writers not yet pushed (backDirty).

// backingFile keeps the node's registered backing file for in-step updates.
type backingFile struct {
	f        *os.File           // a duplicate of the registered descriptor (guarded by node.backMu)
	pushed   unix.Stat_t        // the backing file's stat at the last push or sync (guarded by node.backMu)
	diverged bool               // the cache entry was invalidated (guarded by node.backMu)
	version  origin.Fingerprint // origin version the content was last synced to (guarded by node.backMu)
}

// adoptBacking records the backing file the kernel was just given for this
// node (f is the cache's data file; it is duplicated, since the handle that
// offered it may close before the others).
func (n *node) adoptBacking(f *os.File, fp origin.Fingerprint) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		n.st.log.Warn("fusefs: cannot keep the passthrough backing file; changes to it will not reach open readers", "name", n.name(), "err", err)
		return
	}
	b := &backingFile{f: os.NewFile(uintptr(fd), f.Name()), version: fp}
	unix.Fstat(fd, &b.pushed)
	n.backMu.Lock()
	defer n.backMu.Unlock()
	if n.back != nil {
		n.back.f.Close()
	}
	n.back = b
	n.st.watchBacking(n, true)
}

// backingLock is backMu as the lock an I/O mode admission holds
// (iomode.go), so the backing file is neither adopted nor dropped while an
// open is admitted to it.
type backingLock struct{ n *node }

func (b backingLock) Lock()      { b.n.backMu.Lock() }
func (b backingLock) Unlock()    { b.n.backMu.Unlock() }
func (b backingLock) kept() bool { return b.n.back != nil }

// watchBacking adds n to (or removes it from) the nodes whose backing files
// watchBackings keeps in step: a passthrough reader that only reads (no
// fstat) never makes the kernel ask for attributes, so nothing else would
// notice another node's change.
func (st *state) watchBacking(n *node, on bool) {
	st.backingMu.Lock()
	defer st.backingMu.Unlock()
	if on {
		if st.backing == nil {
			st.backing = map[*node]struct{}{}
		}
		st.backing[n] = struct{}{}
	} else {
		delete(st.backing, n)
	}
}

// watchBackings checks the origin for each file open by passthrough once
// per attribute timeout, and brings its backing file up to a change, until
// done is closed.
func (st *state) watchBackings(done <-chan struct{}) {
	every := timeoutOrDefault(st.opts.AttrTimeout)
	if every <= 0 {
		every = DefaultTimeout
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		st.backingMu.Lock()
		nodes := make([]*node, 0, len(st.backing))
		for n := range st.backing {
			nodes = append(nodes, n)
		}
		st.backingMu.Unlock()
		for _, n := range nodes {
			ctx, cancel := st.octx(context.Background())
			if a, err := st.org.Lstat(ctx, n.name()); err == nil {
				n.syncBacking(ctx, a)
			}
			cancel()
		}
	}
}

// dropBacking closes the kept backing file once no passthrough handle is
// open.
func (n *node) dropBacking() {
	n.backMu.Lock()
	defer n.backMu.Unlock()
	if !n.io.passthroughOpen() && n.back != nil {
		n.back.f.Close()
		n.back = nil
		n.st.watchBacking(n, false)
	}
}

// keptBackingDup returns a duplicate of the kept backing file for an open
// joining the inode's passthrough, nil if none is kept. The caller's handle
// is counted in io.ptOpens, so the backing file is neither dropped nor
// replaced meanwhile (dropBacking, adoptBacking).
func (n *node) keptBackingDup() *os.File {
	n.backMu.Lock()
	defer n.backMu.Unlock()
	if n.back == nil {
		return nil
	}
	fd, err := unix.FcntlInt(n.back.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		n.st.log.Warn("fusefs: cannot duplicate the passthrough backing file for a new open", "name", n.name(), "err", err)
		return nil
	}
	return os.NewFile(uintptr(fd), n.back.f.Name())
}

// backingKept reports whether a backing file is kept for the inode.
func (n *node) backingKept() bool {
	n.backMu.Lock()
	defer n.backMu.Unlock()
	return n.back != nil
}

// writeBacking writes p at off into the kept backing file, as the kernel
// does for a passthrough writer (ptHandle.Write); the next flush pushes it.
func (n *node) writeBacking(p []byte, off int64) (int, error) {
	n.backMu.Lock()
	defer n.backMu.Unlock()
	b := n.back
	if b == nil {
		return 0, syscall.EBADF
	}
	n.divergeLocked(b)
	w, err := b.writable()
	if err != nil {
		return 0, err
	}
	defer w.Close()
	return w.WriteAt(p, off)
}

// writableBacking opens the backing file for writing (the kept descriptor
// is read-only).
func (b *backingFile) writable() (*os.File, error) {
	return os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(b.f.Fd())), os.O_WRONLY, 0)
}

// syncBacking brings the backing file of an inode open for passthrough up to
// version a of the origin file (see the top of this file). It does nothing
// when no passthrough handle is open, the backing file already holds a, a
// is another file (the name was replaced: open handles keep what they
// opened), or local writes are not yet pushed (they win until then).
func (n *node) syncBacking(ctx context.Context, a origin.Attr) {
	if !a.IsRegular() {
		return
	}
	if !n.io.passthroughOpen() {
		return
	}
	n.backMu.Lock()
	defer n.backMu.Unlock()
	b := n.back
	fp := a.Fingerprint()
	if b == nil || b.version == fp {
		return
	}
	if !a.InoVolatile && (a.Ino != b.version.Ino || a.Gen != b.version.Gen) {
		return
	}
	if n.backDirtyLocked() {
		return
	}
	if err := n.copyIntoBacking(ctx, b, a); err != nil {
		n.st.log.Warn("fusefs: cannot bring the passthrough backing file up to date; open readers on this node see the old content", "name", n.name(), "err", err)
		return
	}
	n.io.setBackingVersion(fp)
	n.st.backingSyncs.Add(1)
}

// backDirtyLocked reports whether a local passthrough writer changed the
// backing file since the last push. Requires backMu.
func (n *node) backDirtyLocked() bool {
	if !n.io.passthroughWriters() || n.back == nil {
		return false
	}
	var st unix.Stat_t
	if unix.Fstat(int(n.back.f.Fd()), &st) != nil {
		return true
	}
	return st.Size != n.back.pushed.Size || st.Mtim != n.back.pushed.Mtim || st.Ctim != n.back.pushed.Ctim
}

// divergeLocked invalidates the cache entry whose data file is the backing
// file, once, before the backing file is changed. Requires backMu.
func (n *node) divergeLocked(b *backingFile) {
	if !b.diverged && n.st.cache != nil {
		n.st.cache.Invalidate(n.name())
	}
	b.diverged = true
}

// copyIntoBacking copies version a of the origin file into b. Requires backMu.
func (n *node) copyIntoBacking(ctx context.Context, b *backingFile, a origin.Attr) error {
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	of, err := n.st.org.Open(octx, n.name(), syscall.O_RDONLY)
	if err != nil {
		return err
	}
	defer of.Close()
	cur, err := of.Stat(octx)
	if err != nil {
		return err
	}
	if !cur.InoVolatile && (cur.Ino != b.version.Ino || cur.Gen != b.version.Gen) {
		return nil // replaced meanwhile: not this file
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(b.f.Fd()), &st); err != nil {
		return err
	}
	n.divergeLocked(b)
	w, err := b.writable()
	if err != nil {
		return err
	}
	defer w.Close()
	old := min(st.Size, cur.Size)
	if cur.Size > old {
		// Grown: the new end first, for readers following it.
		if _, err := copyRange(octx, w, of, old, cur.Size); err != nil {
			return err
		}
	}
	if err := w.Truncate(cur.Size); err != nil {
		return err
	}
	if _, err := mendRange(octx, w, fileReader{b.f}, of, 0, old); err != nil {
		return err
	}
	b.version = cur.Fingerprint()
	unix.Fstat(int(b.f.Fd()), &b.pushed)
	return nil
}

// pushBacking writes the backing file's content to the origin file of (a
// local passthrough writer's flush or fsync), if it changed since the last
// push, so the writes reach the origin before close or fsync returns.
func (n *node) pushBacking(ctx context.Context, of origin.File) error {
	n.backMu.Lock()
	defer n.backMu.Unlock()
	b := n.back
	if b == nil || !n.backDirtyLocked() {
		return nil
	}
	n.divergeLocked(b)
	var st unix.Stat_t
	if err := unix.Fstat(int(b.f.Fd()), &st); err != nil {
		return err
	}
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	// A descriptor of its own: the writer's may be O_APPEND, which would
	// put every positioned write at the end.
	mine, err := n.st.org.Open(octx, n.name(), syscall.O_WRONLY)
	if err != nil {
		return fmt.Errorf("push passthrough writes: %w", err)
	}
	defer mine.Close()
	if a, err := mine.Stat(octx); err != nil {
		return fmt.Errorf("push passthrough writes: %w", err)
	} else if w, err := of.Stat(octx); err == nil && !a.InoVolatile && !a.SameObject(w) {
		return fmt.Errorf("push passthrough writes: %w", syscall.ESTALE)
	}
	if _, err := copyRange(octx, originWriter{octx, mine}, fileReader{b.f}, 0, st.Size); err != nil {
		return fmt.Errorf("push passthrough writes: %w", err)
	}
	if err := mine.Truncate(octx, st.Size); err != nil {
		return fmt.Errorf("push passthrough writes: %w", err)
	}
	if err := mine.Sync(octx); err != nil {
		return fmt.Errorf("push passthrough writes: %w", err)
	}
	b.pushed = st
	if a, err := of.Stat(octx); err == nil {
		b.version = a.Fingerprint()
		n.io.setBackingVersion(b.version)
	}
	n.st.backingPushes.Add(1)
	return nil
}

// truncateBacking applies a size change made through this node to the
// backing file too, so passthrough readers and writers see it.
func (n *node) truncateBacking(size int64) {
	n.backMu.Lock()
	defer n.backMu.Unlock()
	b := n.back
	if b == nil {
		return
	}
	n.divergeLocked(b)
	w, err := b.writable()
	if err != nil {
		n.st.log.Warn("fusefs: cannot truncate the passthrough backing file", "name", n.name(), "err", err)
		return
	}
	defer w.Close()
	if err := w.Truncate(size); err != nil {
		n.st.log.Warn("fusefs: cannot truncate the passthrough backing file", "name", n.name(), "err", err)
	}
}

// backingSize is the backing file's size while local passthrough writers
// have it open (their writes reach the origin only at flush, so the origin's
// size is behind); ok is false otherwise.
func (n *node) backingSize() (int64, bool) {
	if !n.io.passthroughWriters() {
		return 0, false
	}
	n.backMu.Lock()
	defer n.backMu.Unlock()
	if n.back == nil {
		return 0, false
	}
	var st unix.Stat_t
	if unix.Fstat(int(n.back.f.Fd()), &st) != nil {
		return 0, false
	}
	return st.Size, true
}

// copyRange copies [from, to) of src to the same offsets of dst.
func copyRange(ctx context.Context, dst io.WriterAt, src readerAtCtx, from, to int64) (int64, error) {
	buf := make([]byte, 1<<20)
	var done int64
	for off := from; off < to; {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		want := min(int64(len(buf)), to-off)
		k, err := src.ReadAt(ctx, buf[:want], off)
		if k > 0 {
			if _, werr := dst.WriteAt(buf[:k], off); werr != nil {
				return done, werr
			}
			off += int64(k)
			done += int64(k)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return done, nil
			}
			return done, err
		}
		if k == 0 {
			return done, nil
		}
	}
	return done, nil
}

// mendRange makes [from, to) of dst equal to src, reading both and writing
// only the blocks that differ (cur reads dst); it returns the bytes written.
func mendRange(ctx context.Context, dst io.WriterAt, cur, src readerAtCtx, from, to int64) (int64, error) {
	want := make([]byte, 1<<20)
	have := make([]byte, len(want))
	var written int64
	for off := from; off < to; {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		n := int(min(int64(len(want)), to-off))
		k, err := readFull(ctx, src, want[:n], off)
		if err != nil {
			return written, err
		}
		if k == 0 {
			return written, nil // shrunk meanwhile: the next sync sees it
		}
		h, err := readFull(ctx, cur, have[:k], off)
		if err != nil {
			return written, err
		}
		if h != k || !bytes.Equal(have[:k], want[:k]) {
			if _, err := dst.WriteAt(want[:k], off); err != nil {
				return written, err
			}
			written += int64(k)
		}
		off += int64(k)
	}
	return written, nil
}

// readFull reads len(p) bytes at off, fewer only at the end of the file.
func readFull(ctx context.Context, r readerAtCtx, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		k, err := r.ReadAt(ctx, p[n:], off+int64(n))
		n += k
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		if k == 0 {
			break
		}
	}
	return n, nil
}

// readerAtCtx is what copyRange reads: an origin file, or a local file.
type readerAtCtx interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
}

type fileReader struct{ f *os.File }

func (r fileReader) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	return r.f.ReadAt(p, off)
}

type originWriter struct {
	ctx context.Context
	of  origin.File
}

func (w originWriter) WriteAt(p []byte, off int64) (int, error) { return w.of.WriteAt(w.ctx, p, off) }
