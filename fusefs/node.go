package fusefs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/eddy-cluster/eddy/origin"
)

// node is one file system object (directory, file, symlink, special file).
// Its origin name is its path from the root in go-fuse's tree; go-fuse keeps
// that tree in step with lookups, renames and unlinks.
//
// Lock order: backMu, then mu, then io's lock (a leaf).
type node struct {
	fs.Inode
	st *state

	mu sync.Mutex
	// last is the attrs last read from the origin and when (guarded by mu);
	// used for disconnected lookups of directories within OfflineGrace.
	last   origin.Attr
	lastAt time.Time
	// openSeen is the version seen by the last read-only open (guarded by
	// mu): an unchanged version lets the kernel keep its page cache.
	openSeen seenVersion
	// kernSeen is the version of the attributes last handed to the kernel
	// for this inode in a LOOKUP or GETATTR reply (guarded by mu); unset
	// when the kernel may hold others (never told, or a writable open here
	// lets it change size and times itself). A read-only open whose fresh
	// attributes match needs no attribute invalidation, which would cost a
	// GETATTR round trip to the origin.
	kernSeen seenVersion
	writers  int // open writable handles (guarded by mu)
	// checked is the node's last check of its file against the origin
	// (guarded by mu): under a consistency TTL it stands for the opens that
	// follow within the TTL (consistency.go). A change through this mount
	// forgets it.
	checked validation
	// aside is the origin name an unlinked open file was renamed to
	// (unlinked.go), removed at its last close (guarded by mu).
	aside string
	// cached are the open read-only handles served by a cache version
	// (guarded by mu): toldKernel marks them moved when the file changes.
	cached map[*handle]struct{}

	// io counts the open handles by I/O mode and admits new ones
	// (iomode.go). Lock order: mu, then io's.
	io ioMode

	// backMu serializes changes to the passthrough backing file (backing.go).
	// Lock order: backMu, then mu.
	backMu sync.Mutex
	back   *backingFile // guarded by backMu; nil while no passthrough handle is open
}

// writing reports whether the node has writable handles open on this mount.
func (n *node) writing() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.writers > 0
}

var (
	_ fs.NodeLookuper      = (*node)(nil)
	_ fs.NodeGetattrer     = (*node)(nil)
	_ fs.NodeSetattrer     = (*node)(nil)
	_ fs.NodeReaddirer     = (*node)(nil)
	_ fs.NodeOpener        = (*node)(nil)
	_ fs.NodeCreater       = (*node)(nil)
	_ fs.NodeMkdirer       = (*node)(nil)
	_ fs.NodeMknoder       = (*node)(nil)
	_ fs.NodeUnlinker      = (*node)(nil)
	_ fs.NodeRmdirer       = (*node)(nil)
	_ fs.NodeRenamer       = (*node)(nil)
	_ fs.NodeSymlinker     = (*node)(nil)
	_ fs.NodeReadlinker    = (*node)(nil)
	_ fs.NodeLinker        = (*node)(nil)
	_ fs.NodeGetxattrer    = (*node)(nil)
	_ fs.NodeSetxattrer    = (*node)(nil)
	_ fs.NodeListxattrer   = (*node)(nil)
	_ fs.NodeRemovexattrer = (*node)(nil)
	_ fs.NodeStatfser      = (*node)(nil)
)

// name is the node's origin name ("." for the root).
func (n *node) name() string {
	p := n.Path(n.Root())
	if p == "" {
		return "."
	}
	return p
}

func (n *node) child(name string) string { return origin.Join(n.name(), name) }

func (n *node) setLast(a origin.Attr) {
	n.mu.Lock()
	n.last, n.lastAt = a, time.Now()
	n.mu.Unlock()
}

// toldKernel records the attributes of a LOOKUP or GETATTR reply. Open
// cached handles of this file whose version they no longer are move to
// reading the origin: the kernel now knows the new size (and, with it,
// asks for the appended bytes), and an open reader sees the change within
// the attribute timeout as an NFS client's does.
func (n *node) toldKernel(a origin.Attr) {
	fp := a.Fingerprint()
	n.mu.Lock()
	n.kernSeen = seenVersion{fp: fp, set: n.writers == 0}
	var inPlace bool
	for h := range n.cached {
		if h.attr.Fingerprint() != fp && (a.InoVolatile || a.SameObject(h.attr)) && !h.moved.Swap(true) {
			inPlace = inPlace || a.Size <= h.attr.Size
		}
	}
	n.mu.Unlock()
	if inPlace {
		// Rewritten, not only appended to: pages the kernel holds are old.
		// (Not from within the request being answered.)
		go n.NotifyContent(0, 0)
	}
}

// octx bounds an origin call by Options.OriginTimeout.
func (st *state) octx(ctx context.Context) (context.Context, context.CancelFunc) {
	if st.opts.OriginTimeout > 0 {
		return context.WithTimeout(ctx, st.opts.OriginTimeout)
	}
	return ctx, func() {}
}

// errno maps an origin error to the errno the caller sees.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errors.Is(err, origin.ErrEscape) {
		return syscall.EACCES
	}
	if errors.Is(err, context.Canceled) {
		// The kernel interrupted the request of a dying caller (see
		// interrupt.go): EINTR ends its call. Anything else without an
		// errno would read as EIO, i.e. trouble.
		return syscall.EINTR
	}
	return origin.Errno(err)
}

// ino maps an origin inode number to the mount's: objects on the origin's
// root device keep their number; others (submounts) get the device mixed in.
func (st *state) ino(a origin.Attr) uint64 {
	swap := func(d uint64) uint64 { return d<<32 | d>>32 }
	return a.Ino ^ swap(a.Dev) ^ swap(st.rootDev)
}

// stable is the identity go-fuse keeps a's inode under. Gen is in it: the
// origin reuses a deleted file's inode number for a new file, possibly made
// elsewhere while this mount's kernel still holds the old one (its names,
// its page cache); with the same identity go-fuse would hand the new file
// the old inode, and a read by a name the kernel still resolves to it would
// read whichever file that inode's newest name now names.
func (st *state) stable(a origin.Attr) fs.StableAttr {
	return fs.StableAttr{Mode: a.Mode & syscall.S_IFMT, Ino: st.ino(a), Gen: a.Gen}
}

func (st *state) fillAttr(a origin.Attr, out *fuse.Attr) {
	out.Ino = st.ino(a)
	out.Size = uint64(a.Size)
	out.Blocks = uint64(a.Blocks)
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Owner = fuse.Owner{Uid: a.Uid, Gid: a.Gid}
	out.Rdev = uint32(a.Rdev)
	out.Blksize = a.Blksize
	out.Atime, out.Atimensec = uint64(a.Atime.Unix()), uint32(a.Atime.Nanosecond())
	out.Mtime, out.Mtimensec = uint64(a.Mtime.Unix()), uint32(a.Mtime.Nanosecond())
	out.Ctime, out.Ctimensec = uint64(a.Ctime.Unix()), uint32(a.Ctime.Nanosecond())
}

// lstat reads name's attrs from the origin. While the origin is in trouble
// and disconnected reads are on, it answers from what the cache (files) or
// this mount (directories, via known) last saw within OfflineGrace; offline
// is then true.
func (st *state) lstat(ctx context.Context, name string, known *node) (a origin.Attr, offline bool, err error) {
	gen, start := st.stashGen(), time.Now()
	octx, cancel := st.octx(ctx)
	a, err = st.org.Lstat(octx, name)
	cancel()
	if err == nil {
		if known != nil {
			known.setLast(a)
			known.noteChecked(a, start)
		}
		st.remember(name, a, start, gen)
		return a, false, nil
	}
	if !origin.IsTrouble(err) || st.opts.OfflineGrace <= 0 {
		return a, false, err
	}
	if st.offline != nil {
		if la, at, _, ok := st.offline.LastKnown(name); ok && time.Since(at) <= st.opts.OfflineGrace {
			return la, true, nil
		}
	}
	if known != nil {
		known.mu.Lock()
		la, at := known.last, known.lastAt
		known.mu.Unlock()
		if !at.IsZero() && time.Since(at) <= st.opts.OfflineGrace {
			return la, true, nil
		}
	}
	return a, false, err
}

func caller(ctx context.Context) origin.Owner {
	if c, ok := fuse.FromContext(ctx); ok {
		return origin.Owner{Uid: c.Uid, Gid: c.Gid}
	}
	return origin.Owner{}
}

// newChild makes (or finds, by inode number) the inode for a child.
func (n *node) newChild(ctx context.Context, a origin.Attr, out *fuse.EntryOut) *fs.Inode {
	n.st.fillAttr(a, &out.Attr)
	if d := n.st.attrTimeout(a); d > 0 {
		out.SetEntryTimeout(d)
		out.SetAttrTimeout(d)
	} else {
		out.SetEntryTimeout(n.st.entryTimeout)
	}
	cn := &node{st: n.st}
	cn.last, cn.lastAt = a, time.Now()
	cn.kernSeen = seenVersion{fp: a.Fingerprint(), set: true}
	ch := n.NewInode(ctx, cn, n.st.stable(a))
	if ex, ok := ch.Operations().(*node); ok && ex != cn {
		ex.setLast(a)
		ex.toldKernel(a)
	}
	return ch
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	full := n.child(name)
	var known *node
	if ch := n.GetChild(name); ch != nil {
		known, _ = ch.Operations().(*node)
	}
	ttl := n.st.ttlFor(full)
	if n.st.stash != nil && (known == nil || !known.writing()) {
		if a, readAt, ok := n.st.stash.getAt(full); ok {
			ch := n.newChild(ctx, a, out)
			n.st.vouch.withdraw(n.st.ino(a))
			cn, ok := ch.Operations().(*node)
			if ttl > 0 {
				// The stashed attributes are the origin's at readAt: under
				// a consistency TTL they count as a check then.
				setTTLTimeouts(out, ttl, readAt)
				if ok {
					cn.noteChecked(a, readAt)
				}
			}
			if !ok || !cn.writing() {
				return ch, 0
			}
			// Open for writing here under another name (a hard link): its
			// size is moving; ask the origin.
			known = cn
		}
	}
	gen, start := n.st.stashGen(), time.Now()
	a, offline, err := n.st.lstat(ctx, full, known)
	if err != nil {
		return nil, errno(err)
	}
	if known != nil && !offline {
		known.syncBacking(ctx, a)
	}
	ch := n.newChild(ctx, a, out)
	if ttl > 0 && !offline {
		// Under a consistency TTL the lookup is the check that the opens
		// within the TTL trust (consistency.go), and the kernel keeps the
		// entry as long: no vouch is needed.
		if cn, ok := ch.Operations().(*node); ok {
			cn.noteChecked(a, start)
			if !cn.writing() {
				setTTLTimeouts(out, ttl, start)
			}
		}
		n.st.vouch.withdraw(n.st.ino(a))
		return ch, 0
	}
	// A regular file's lookup answered by the origin may stand for the
	// close-to-open check of the open it is part of (vouch.go).
	if !offline && a.IsRegular() && a.Nlink == 1 {
		out.SetEntryTimeout(0)
		n.st.vouch.put(ctx, n.st.ino(a), a, gen)
	} else {
		n.st.vouch.withdraw(n.st.ino(a))
	}
	return ch, 0
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if ttl := n.st.ttlFor(n.name()); ttl > 0 {
		// Under a consistency TTL the node's last check stands for the
		// attributes too (the kernel asks again after a read, for atime).
		if c, ok := n.trustedAttr(ttl); ok {
			n.st.fillAttr(c.attr, &out.Attr)
			n.backedSize(&out.Attr)
			out.SetTimeout(ttlLeft(ttl, c.at, time.Now()))
			n.toldKernel(c.attr)
			return 0
		}
	}
	if h := asHandle(f); h != nil {
		if of := h.originFile(); of != nil {
			octx, cancel := n.st.octx(ctx)
			a, err := of.Stat(octx)
			cancel()
			if err == nil {
				n.syncBacking(ctx, a)
				n.st.fillAttr(a, &out.Attr)
				n.backedSize(&out.Attr)
				if d := n.attrTimeout(a); d > 0 {
					out.SetTimeout(d)
				}
				n.toldKernel(a)
				return 0
			}
		}
	}
	a, _, err := n.st.lstat(ctx, n.name(), n)
	if h := asHandle(f); h != nil && h.ch != nil && (origin.IsNotExist(err) || (err == nil && !a.InoVolatile && !a.SameObject(h.attr))) {
		// fstat of an open cached file that was unlinked or replaced: it is
		// still what the caller has open.
		a, err = h.attr, nil
		a.Nlink = 0
	}
	if err != nil {
		return errno(err)
	}
	n.syncBacking(ctx, a)
	n.st.fillAttr(a, &out.Attr)
	n.backedSize(&out.Attr)
	if d := n.attrTimeout(a); d > 0 {
		out.SetTimeout(d)
	}
	n.toldKernel(a)
	return 0
}

// attrTimeout is st.attrTimeout, except for a file open on this node: an
// open reader (tail -f) sees another node's appends within AttrTimeout,
// however long the file was unchanged before. Under a consistency TTL
// (consistency.go) the attributes, just read from the origin, are kept for
// the TTL unless a writable handle here is moving them.
func (n *node) attrTimeout(a origin.Attr) time.Duration {
	if ttl := n.st.ttlFor(n.name()); ttl > 0 && !n.writing() {
		return ttl
	}
	if n.io.open() {
		return 0
	}
	return n.st.attrTimeout(a)
}

// backedSize reports the size local passthrough writers have made, which
// the origin gets at their next flush.
func (n *node) backedSize(out *fuse.Attr) {
	if sz, ok := n.backingSize(); ok {
		out.Size = uint64(sz)
	}
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	name := n.name()
	var set origin.SetAttr
	if m, ok := in.GetMode(); ok {
		m &= 07777
		set.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		set.Uid = &u
	}
	if g, ok := in.GetGID(); ok {
		set.Gid = &g
	}
	if t, ok := in.GetATime(); ok {
		set.Atime = &t
	}
	if t, ok := in.GetMTime(); ok {
		set.Mtime = &t
	}
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	defer n.st.changed(name)
	defer n.forgetChecked() // changed through this mount: seen at once
	if sz, ok := in.GetSize(); ok {
		s := int64(sz)
		h := asHandle(f)
		if e := n.quotaTruncate(octx, f, name, s); e != 0 {
			return e
		}
		var err error
		if of := h.originFile(); of != nil && h.writable {
			err = of.Truncate(octx, s)
		} else {
			err = n.st.org.SetAttr(octx, name, origin.SetAttr{Size: &s})
		}
		if n.st.cache != nil {
			n.st.cache.Invalidate(name)
		}
		if err != nil {
			return errno(err)
		}
		n.truncateBacking(s)
	}
	if set.Mode != nil || set.Uid != nil || set.Gid != nil || set.Atime != nil || set.Mtime != nil {
		if err := n.st.org.SetAttr(octx, name, set); err != nil {
			return errno(err)
		}
	}
	return n.Getattr(ctx, f, out)
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	gen, start := n.st.stashGen(), time.Now()
	octx, cancel := n.st.octx(ctx)
	ents, err := n.st.org.ReadDir(octx, n.name())
	cancel()
	if err != nil {
		return nil, errno(err)
	}
	list := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		if e.Attr != nil {
			// READDIRPLUS: the kernel's lookups of these names that follow
			// (ls -l, a walk) need no origin round trip.
			n.st.remember(n.child(e.Name), *e.Attr, start, gen)
		}
		list = append(list, fuse.DirEntry{Name: e.Name, Mode: e.Mode, Ino: n.st.ino(origin.Attr{Ino: e.Ino, Dev: n.st.rootDev})})
	}
	return fs.NewListDirStream(list), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	full := n.child(name)
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	defer n.st.changed(full) // after the change: a read racing it is not kept
	if err := n.st.org.Mkdir(octx, full, mode, caller(ctx)); err != nil {
		return nil, errno(err)
	}
	a, err := n.st.org.Lstat(octx, full)
	if err != nil {
		return nil, errno(err)
	}
	return n.newChild(ctx, a, out), 0
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	full := n.child(name)
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	defer n.st.changed(full) // after the change: a read racing it is not kept
	if err := n.st.org.Mknod(octx, full, mode, uint64(dev), caller(ctx)); err != nil {
		return nil, errno(err)
	}
	a, err := n.st.org.Lstat(octx, full)
	if err != nil {
		return nil, errno(err)
	}
	return n.newChild(ctx, a, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	full := n.child(name)
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	defer n.st.changed(full) // after the change: a read racing it is not kept
	if err := n.st.org.Symlink(octx, target, full, caller(ctx)); err != nil {
		return nil, errno(err)
	}
	a, err := n.st.org.Lstat(octx, full)
	if err != nil {
		return nil, errno(err)
	}
	return n.newChild(ctx, a, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	t, err := n.st.org.Readlink(octx, n.name())
	if err != nil {
		return nil, errno(err)
	}
	return []byte(t), 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	full := n.child(name)
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	defer n.st.changed(full, tn.name()) // and the target's link count and ctime
	if err := n.st.org.Link(octx, tn.name(), full); err != nil {
		return nil, errno(err)
	}
	a, err := n.st.org.Lstat(octx, full)
	if err != nil {
		return nil, errno(err)
	}
	return n.newChild(ctx, a, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	full := n.child(name)
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	defer n.st.changed(full)
	defer n.quotaUnlink(octx, full)()
	if n.unlinkAside(octx, name, full) {
		return 0
	}
	err := n.st.org.Unlink(octx, full)
	if err == nil && n.st.cache != nil {
		n.st.cache.Invalidate(full)
	}
	return errno(err)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	full := n.child(name)
	defer n.st.changedTree(full)
	return errno(n.st.org.Rmdir(octx, full))
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	oldFull, newFull := n.child(name), np.child(newName)
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	defer func() {
		n.st.changedTree(oldFull)
		n.st.changedTree(newFull)
	}()
	if err := n.st.org.Rename(octx, oldFull, newFull, flags); err != nil {
		return errno(err)
	}
	if c := n.st.cache; c != nil {
		if flags&fs.RENAME_EXCHANGE != 0 {
			c.Invalidate(oldFull)
			c.Invalidate(newFull)
		} else {
			c.Invalidate(newFull) // the replaced file, if any
			c.Rename(oldFull, newFull)
		}
	}
	return 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	v, err := n.st.org.Getxattr(octx, n.name(), attr)
	if err != nil {
		return 0, errno(err)
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	defer n.st.changed(n.name()) // its ctime
	return errno(n.st.org.Setxattr(octx, n.name(), attr, data, int(flags)))
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	defer n.st.changed(n.name()) // its ctime
	return errno(n.st.org.Removexattr(octx, n.name(), attr))
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	l, err := n.st.org.Listxattr(octx, n.name())
	if err != nil {
		return 0, errno(err)
	}
	var b strings.Builder
	for _, s := range l {
		b.WriteString(s)
		b.WriteByte(0)
	}
	if len(dest) == 0 {
		return uint32(b.Len()), 0
	}
	if len(dest) < b.Len() {
		return uint32(b.Len()), syscall.ERANGE
	}
	return uint32(copy(dest, b.String())), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	octx, cancel := n.st.octx(ctx)
	defer cancel()
	s, err := n.st.org.Statfs(octx)
	if err != nil {
		return errno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = s.Blocks, s.Bfree, s.Bavail
	out.Files, out.Ffree = s.Files, s.Ffree
	out.Bsize, out.Frsize, out.NameLen = s.Bsize, s.Frsize, s.NameLen
	return 0
}
