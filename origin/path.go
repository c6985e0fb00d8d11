package origin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// PathFS is the origin for any POSIX directory: a kernel NFS mount, SSHFS,
// GlusterFS or a local directory.
//
// Every name is resolved beneath the root: the parent directory is opened
// with openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS) and the final element
// is handled by an *at syscall that does not follow symlinks, so no symlink
// on the origin (absolute, or climbing with "..") can lead outside the root.
// Such names fail with ErrEscape.
//
// Objects created through PathFS are chowned to the Owner passed in (the
// FUSE caller), and get exactly the mode asked for (the caller has applied
// its umask already), plus the set-group-ID bit a directory inherits.
type PathFS struct {
	root   string
	rootFd int // O_PATH|O_DIRECTORY fd of the root; closed by Close
	// inoVolatile: the root is on a FUSE file system (sshfs, say), whose inode numbers are
	// handed out per lookup and change when the kernel forgets an inode: they are not part
	// of a file's fingerprint there (Attr.InoVolatile).
	inoVolatile bool
	// noHandles are the devices whose file system gives no file handles
	// (st_dev -> true): their files' Gen is 0 (pathattr.go).
	noHandles sync.Map
	// birthTimeGen makes Gen the birth time even where there are file
	// handles (tests of that path on a file system with both).
	birthTimeGen bool
}

var _ FS = (*PathFS)(nil)

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS

// KeepsUnlinkedOpenFiles: a local file descriptor outlives its name.
func (p *PathFS) KeepsUnlinkedOpenFiles() bool { return true }

// NewPath opens the origin rooted at the directory root.
func NewPath(root string) (*PathFS, error) {
	abs, err := absPath(root)
	if err != nil {
		return nil, fmt.Errorf("origin %s: %w", root, err)
	}
	fd, err := unix.Open(abs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &iofs.PathError{Op: "open origin", Path: abs, Err: err}
	}
	pfs := &PathFS{root: abs, rootFd: fd}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err == nil && sfs.Type == unix.FUSE_SUPER_MAGIC {
		pfs.inoVolatile = true
	}
	return pfs, nil
}

func absPath(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty origin path")
	}
	if !strings.HasPrefix(p, "/") {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		p = wd + "/" + p
	}
	return path.Clean(p), nil
}

// Root is the absolute path of the origin directory.
func (p *PathFS) Root() string { return p.root }

// String names the origin for logs.
func (p *PathFS) String() string { return p.root }

// Close releases the root directory descriptor.
func (p *PathFS) Close() error {
	if p.rootFd < 0 {
		return nil
	}
	err := unix.Close(p.rootFd)
	p.rootFd = -1
	return err
}

// pathErr wraps a syscall error with the operation and the origin name.
// openat2's EXDEV (a resolution that left the root) becomes ErrEscape.
func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &iofs.PathError{Op: op, Path: name, Err: err}
}

// parent resolves the directory holding name beneath the root and returns
// a descriptor for it (to be released with done), and the final element.
// For the root itself it returns the root descriptor and ".".
func (p *PathFS) parent(op, name string) (dirfd int, base string, done func(), err error) {
	c, err := Clean(name)
	if err != nil {
		return -1, "", nil, pathErr(op, name, err)
	}
	if c == "." {
		return p.rootFd, ".", func() {}, nil
	}
	dir, base := path.Split(c)
	if dir == "" {
		return p.rootFd, base, func() {}, nil
	}
	fd, err := p.openBeneath(strings.TrimSuffix(dir, "/"), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", nil, pathErr(op, name, err)
	}
	return fd, base, func() { unix.Close(fd) }, nil
}

// openBeneath opens a clean relative name with openat2 confined to the root.
func (p *PathFS) openBeneath(name string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveFlags}
	if flags&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
		how.Mode = uint64(mode)
	}
	for {
		fd, err := unix.Openat2(p.rootFd, name, &how)
		switch {
		case err == unix.EINTR || err == unix.EAGAIN:
			continue
		case err == unix.EXDEV:
			return -1, ErrEscape
		case err != nil:
			return -1, err
		}
		return fd, nil
	}
}

func checkCtx(ctx context.Context) error {
	if ctx == nil {
		return nil
	}
	return ctx.Err()
}

// Lstat returns the attributes of name without following a final symlink.
func (p *PathFS) Lstat(ctx context.Context, name string) (Attr, error) {
	if err := checkCtx(ctx); err != nil {
		return Attr{}, err
	}
	dirfd, base, done, err := p.parent("lstat", name)
	if err != nil {
		return Attr{}, err
	}
	defer done()
	a, err := p.statx(dirfd, base, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return Attr{}, pathErr("lstat", name, err)
	}
	a.InoVolatile = p.inoVolatile
	return a, nil
}

// ReadDir lists a directory (without "." and "..").
func (p *PathFS) ReadDir(ctx context.Context, name string) ([]DirEntry, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	c, err := Clean(name)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	fd, err := p.openBeneath(c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	defer unix.Close(fd)
	var out []DirEntry
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, pathErr("readdir", name, err)
		}
		if n <= 0 {
			return out, nil
		}
		out = parseDirents(buf[:n], out)
	}
}

// parseDirents decodes linux_dirent64 records.
func parseDirents(b []byte, out []DirEntry) []DirEntry {
	for len(b) >= 19 {
		ino := binary.NativeEndian.Uint64(b[0:8])
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		typ := b[18]
		if reclen < 19 || reclen > len(b) {
			break
		}
		nameb := b[19:reclen]
		if i := strings.IndexByte(string(nameb), 0); i >= 0 {
			nameb = nameb[:i]
		}
		b = b[reclen:]
		n := string(nameb)
		if n == "." || n == ".." || ino == 0 {
			continue
		}
		out = append(out, DirEntry{Name: n, Mode: direntMode(typ), Ino: ino})
	}
	return out
}

func direntMode(typ uint8) uint32 {
	switch typ {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	}
	return 0
}

// Open opens an existing file. A final symlink is not followed (ELOOP).
func (p *PathFS) Open(ctx context.Context, name string, flag int) (File, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	if flag&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
		return nil, pathErr("open", name, unix.EINVAL)
	}
	dirfd, base, done, err := p.parent("open", name)
	if err != nil {
		return nil, err
	}
	defer done()
	fd, err := openat(dirfd, base, flag|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	return p.newPathFile(fd, name), nil
}

func openat(dirfd int, base string, flag int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, base, flag|unix.O_CLOEXEC, mode)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// Create creates a regular file owned by owner, or (without O_EXCL) opens
// the existing one, which keeps its owner and mode.
func (p *PathFS) Create(ctx context.Context, name string, flag int, mode uint32, owner Owner) (File, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	dirfd, base, done, err := p.parent("create", name)
	if err != nil {
		return nil, err
	}
	defer done()
	if base == "." {
		return nil, pathErr("create", name, unix.EISDIR)
	}
	excl := flag&unix.O_EXCL != 0
	flag &^= unix.O_CREAT | unix.O_EXCL
	for attempt := 0; attempt < 8; attempt++ {
		fd, err := openat(dirfd, base, flag|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, mode&07777)
		if err == nil {
			if err := p.ownNew(fd, dirfd, mode&07777, owner, false); err != nil {
				unix.Close(fd)
				unix.Unlinkat(dirfd, base, 0)
				return nil, pathErr("create", name, err)
			}
			return p.newPathFile(fd, name), nil
		}
		if err != unix.EEXIST || excl {
			return nil, pathErr("create", name, err)
		}
		fd, err = openat(dirfd, base, flag|unix.O_NOFOLLOW, 0)
		if err == unix.ENOENT {
			continue // removed in between: try creating again
		}
		if err != nil {
			return nil, pathErr("create", name, err)
		}
		return p.newPathFile(fd, name), nil
	}
	return nil, pathErr("create", name, unix.EAGAIN)
}

// ownNew gives a freshly created object (open as fd) its owner and exact
// mode. A new object in a set-group-ID directory keeps the directory's group
// (as the kernel gave it); a new directory keeps its inherited S_ISGID.
func (p *PathFS) ownNew(fd, dirfd int, mode uint32, owner Owner, isDir bool) error {
	var pst unix.Stat_t
	if err := unix.Fstat(dirfd, &pst); err != nil {
		return err
	}
	gid := int(owner.Gid)
	if pst.Mode&unix.S_ISGID != 0 {
		gid = int(pst.Gid)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Uid != owner.Uid || int(st.Gid) != gid {
		if err := unix.Fchownat(fd, "", int(owner.Uid), gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	want := mode & 07777
	if isDir {
		want |= st.Mode & unix.S_ISGID
	}
	if st.Mode&07777 != want || st.Uid != owner.Uid {
		// chown may have cleared set-ID bits; chmod restores the exact mode.
		if err := fchmodFd(fd, want); err != nil {
			return err
		}
	}
	return nil
}

// fchmodFd changes the mode of the object an fd (possibly O_PATH) refers to.
func fchmodFd(fd int, mode uint32) error {
	err := unix.Fchmod(fd, mode)
	if err == unix.EBADF {
		// O_PATH descriptor: go through its /proc link (not a magic-link
		// resolution of a name, the fd is ours).
		err = unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), mode, 0)
	}
	return err
}

// Mkdir creates a directory owned by owner.
func (p *PathFS) Mkdir(ctx context.Context, name string, mode uint32, owner Owner) error {
	return p.mkobj(ctx, "mkdir", name, mode, owner, func(dirfd int, base string) error {
		return unix.Mkdirat(dirfd, base, mode&07777)
	}, true)
}

// Mknod creates a special file (FIFO, socket, device) or an empty regular
// file owned by owner. mode carries the file type bits.
func (p *PathFS) Mknod(ctx context.Context, name string, mode uint32, dev uint64, owner Owner) error {
	return p.mkobj(ctx, "mknod", name, mode, owner, func(dirfd int, base string) error {
		return unix.Mknodat(dirfd, base, mode, int(dev))
	}, false)
}

func (p *PathFS) mkobj(ctx context.Context, op, name string, mode uint32, owner Owner, mk func(int, string) error, isDir bool) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	dirfd, base, done, err := p.parent(op, name)
	if err != nil {
		return err
	}
	defer done()
	if base == "." {
		return pathErr(op, name, unix.EEXIST)
	}
	if err := mk(dirfd, base); err != nil {
		return pathErr(op, name, err)
	}
	fd, err := openat(dirfd, base, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return pathErr(op, name, err)
	}
	defer unix.Close(fd)
	if err := p.ownNew(fd, dirfd, mode&07777, owner, isDir); err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// Symlink creates name as a symlink to target, owned by owner. The target
// is stored verbatim: it is only ever interpreted by the kernel on the FUSE
// side, never followed by the origin.
func (p *PathFS) Symlink(ctx context.Context, target, name string, owner Owner) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	dirfd, base, done, err := p.parent("symlink", name)
	if err != nil {
		return err
	}
	defer done()
	if base == "." {
		return pathErr("symlink", name, unix.EEXIST)
	}
	if err := unix.Symlinkat(target, dirfd, base); err != nil {
		return pathErr("symlink", name, err)
	}
	gid := int(owner.Gid)
	var pst unix.Stat_t
	if unix.Fstat(dirfd, &pst) == nil && pst.Mode&unix.S_ISGID != 0 {
		gid = int(pst.Gid)
	}
	if err := unix.Fchownat(dirfd, base, int(owner.Uid), gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathErr("symlink", name, err)
	}
	return nil
}

// Readlink returns the target of a symlink.
func (p *PathFS) Readlink(ctx context.Context, name string) (string, error) {
	if err := checkCtx(ctx); err != nil {
		return "", err
	}
	dirfd, base, done, err := p.parent("readlink", name)
	if err != nil {
		return "", err
	}
	defer done()
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, base, buf)
		if err != nil {
			return "", pathErr("readlink", name, err)
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size > 1<<20 {
			return "", pathErr("readlink", name, unix.ENAMETOOLONG)
		}
	}
}

// Link creates newname as a hard link to oldname (a final symlink in
// oldname is linked itself, not followed).
func (p *PathFS) Link(ctx context.Context, oldname, newname string) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	odir, obase, odone, err := p.parent("link", oldname)
	if err != nil {
		return err
	}
	defer odone()
	ndir, nbase, ndone, err := p.parent("link", newname)
	if err != nil {
		return err
	}
	defer ndone()
	if err := unix.Linkat(odir, obase, ndir, nbase, 0); err != nil {
		return pathErr("link", oldname+" -> "+newname, err)
	}
	return nil
}

// Unlink removes a non-directory.
func (p *PathFS) Unlink(ctx context.Context, name string) error {
	return p.remove(ctx, "unlink", name, 0)
}

// Rmdir removes an empty directory.
func (p *PathFS) Rmdir(ctx context.Context, name string) error {
	return p.remove(ctx, "rmdir", name, unix.AT_REMOVEDIR)
}

func (p *PathFS) remove(ctx context.Context, op, name string, flags int) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	dirfd, base, done, err := p.parent(op, name)
	if err != nil {
		return err
	}
	defer done()
	if base == "." {
		return pathErr(op, name, unix.EBUSY)
	}
	if err := unix.Unlinkat(dirfd, base, flags); err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// Rename renames oldname to newname with renameat2 flags.
func (p *PathFS) Rename(ctx context.Context, oldname, newname string, flags uint32) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	odir, obase, odone, err := p.parent("rename", oldname)
	if err != nil {
		return err
	}
	defer odone()
	ndir, nbase, ndone, err := p.parent("rename", newname)
	if err != nil {
		return err
	}
	defer ndone()
	if obase == "." || nbase == "." {
		return pathErr("rename", oldname, unix.EBUSY)
	}
	if err := unix.Renameat2(odir, obase, ndir, nbase, uint(flags)); err != nil {
		return pathErr("rename", oldname+" -> "+newname, err)
	}
	return nil
}

// SetAttr changes mode, owner, size and times. A final symlink is never
// followed: its mode cannot change (EOPNOTSUPP, as on Linux), its owner and
// times can.
func (p *PathFS) SetAttr(ctx context.Context, name string, set SetAttr) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	dirfd, base, done, err := p.parent("setattr", name)
	if err != nil {
		return err
	}
	defer done()
	if set.Uid != nil || set.Gid != nil {
		uid, gid := -1, -1
		if set.Uid != nil {
			uid = int(*set.Uid)
		}
		if set.Gid != nil {
			gid = int(*set.Gid)
		}
		if err := unix.Fchownat(dirfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return pathErr("chown", name, err)
		}
	}
	if set.Mode != nil {
		if err := unix.Fchmodat(dirfd, base, *set.Mode&07777, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return pathErr("chmod", name, err)
		}
	}
	if set.Size != nil {
		fd, err := openat(dirfd, base, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			return pathErr("truncate", name, err)
		}
		err = unix.Ftruncate(fd, *set.Size)
		unix.Close(fd)
		if err != nil {
			return pathErr("truncate", name, err)
		}
	}
	if set.Atime != nil || set.Mtime != nil {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if set.Atime != nil {
			ts[0] = unix.NsecToTimespec(set.Atime.UnixNano())
		}
		if set.Mtime != nil {
			ts[1] = unix.NsecToTimespec(set.Mtime.UnixNano())
		}
		if err := unix.UtimesNanoAt(dirfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return pathErr("utimens", name, err)
		}
	}
	return nil
}

// xattrPath names the final element through the parent's descriptor, so
// the l*xattr calls resolve only that one element and never follow it.
func xattrPath(dirfd int, base string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + base
}

// Getxattr returns the value of an extended attribute.
func (p *PathFS) Getxattr(ctx context.Context, name, attr string) ([]byte, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	dirfd, base, done, err := p.parent("getxattr", name)
	if err != nil {
		return nil, err
	}
	defer done()
	pth := xattrPath(dirfd, base)
	for {
		sz, err := unix.Lgetxattr(pth, attr, nil)
		if err != nil {
			return nil, pathErr("getxattr", name, err)
		}
		buf := make([]byte, sz)
		n, err := unix.Lgetxattr(pth, attr, buf)
		if err == unix.ERANGE {
			continue // grew in between
		}
		if err != nil {
			return nil, pathErr("getxattr", name, err)
		}
		return buf[:n], nil
	}
}

// Setxattr sets an extended attribute (flags: XATTR_CREATE, XATTR_REPLACE).
func (p *PathFS) Setxattr(ctx context.Context, name, attr string, data []byte, flags int) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	dirfd, base, done, err := p.parent("setxattr", name)
	if err != nil {
		return err
	}
	defer done()
	if err := unix.Lsetxattr(xattrPath(dirfd, base), attr, data, flags); err != nil {
		return pathErr("setxattr", name, err)
	}
	return nil
}

// Listxattr lists the names of the extended attributes.
func (p *PathFS) Listxattr(ctx context.Context, name string) ([]string, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	dirfd, base, done, err := p.parent("listxattr", name)
	if err != nil {
		return nil, err
	}
	defer done()
	pth := xattrPath(dirfd, base)
	for {
		sz, err := unix.Llistxattr(pth, nil)
		if err != nil {
			return nil, pathErr("listxattr", name, err)
		}
		if sz == 0 {
			return nil, nil
		}
		buf := make([]byte, sz)
		n, err := unix.Llistxattr(pth, buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, pathErr("listxattr", name, err)
		}
		var out []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	}
}

// Removexattr removes an extended attribute.
func (p *PathFS) Removexattr(ctx context.Context, name, attr string) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	dirfd, base, done, err := p.parent("removexattr", name)
	if err != nil {
		return err
	}
	defer done()
	if err := unix.Lremovexattr(xattrPath(dirfd, base), attr); err != nil {
		return pathErr("removexattr", name, err)
	}
	return nil
}

// Statfs summarizes the file system holding the root.
func (p *PathFS) Statfs(ctx context.Context) (Statfs, error) {
	if err := checkCtx(ctx); err != nil {
		return Statfs{}, err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(p.rootFd, &st); err != nil {
		return Statfs{}, pathErr("statfs", ".", err)
	}
	return Statfs{
		Blocks:  st.Blocks,
		Bfree:   st.Bfree,
		Bavail:  st.Bavail,
		Files:   st.Files,
		Ffree:   st.Ffree,
		Bsize:   uint32(st.Bsize),
		Frsize:  uint32(st.Frsize),
		NameLen: uint32(st.Namelen),
	}, nil
}

// pathFile is an open file of the path origin, backed by an *os.File.
type pathFile struct {
	p           *PathFS
	f           *os.File
	name        string
	fd          int
	inoVolatile bool // see PathFS.inoVolatile
}

var (
	_ File = (*pathFile)(nil)
	_ Fder = (*pathFile)(nil)
)

func (p *PathFS) newPathFile(fd int, name string) *pathFile {
	return &pathFile{p: p, f: os.NewFile(uintptr(fd), name), name: name, fd: fd, inoVolatile: p.inoVolatile}
}

// ReadAt reads like io.ReaderAt (io.EOF at the end of the file).
func (f *pathFile) ReadAt(ctx context.Context, b []byte, off int64) (int, error) {
	return f.f.ReadAt(b, off)
}

// WriteAt writes at off. On a file opened with O_APPEND the kernel appends
// (pwrite ignores the offset there), which is what the caller asked for.
func (f *pathFile) WriteAt(ctx context.Context, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Pwrite(f.fd, b[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, pathErr("write", f.name, err)
		}
		if m == 0 {
			return n, pathErr("write", f.name, unix.EIO)
		}
		n += m
	}
	return n, nil
}

func (f *pathFile) Stat(ctx context.Context) (Attr, error) {
	a, err := f.p.statx(f.fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return Attr{}, pathErr("fstat", f.name, err)
	}
	a.InoVolatile = f.inoVolatile
	return a, nil
}

func (f *pathFile) Truncate(ctx context.Context, size int64) error {
	if err := unix.Ftruncate(f.fd, size); err != nil {
		return pathErr("truncate", f.name, err)
	}
	return nil
}

func (f *pathFile) Sync(ctx context.Context) error {
	if err := unix.Fsync(f.fd); err != nil {
		return pathErr("fsync", f.name, err)
	}
	return nil
}

// Fd returns the file's descriptor (for locks, fallocate, passthrough).
func (f *pathFile) Fd() int { return f.fd }

func (f *pathFile) Close() error { return f.f.Close() }
