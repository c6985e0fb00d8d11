package usage

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/origin"
)

// LocalDir is an origin.FS whose ReadDir returns every entry's attributes, statted relative
// to the directory's descriptor (one fstatat per entry, as du does), for walks of an origin
// that is a local directory (a POSIX path, NFS-mounted or not). Every other call goes to FS.
// Directories are opened beneath the root (openat2 RESOLVE_BENEATH, no symlinks followed).
type LocalDir struct {
	origin.FS
	root int
}

// NewLocalDir opens dir (the origin's directory) for fast walks over fsys.
func NewLocalDir(fsys origin.FS, dir string) (*LocalDir, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return &LocalDir{FS: fsys, root: fd}, nil
}

// Close releases the root descriptor (not FS).
func (l *LocalDir) Close() error { return unix.Close(l.root) }

// ReadDir lists name with the attributes of its entries.
func (l *LocalDir) ReadDir(ctx context.Context, name string) ([]origin.DirEntry, error) {
	c, err := origin.Clean(name)
	if err != nil {
		return nil, err
	}
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	var fd int
	for {
		fd, err = unix.Openat2(l.root, c, &how)
		if err != unix.EINTR && err != unix.EAGAIN {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name) // closes fd
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: name, Err: err}
	}
	out := make([]origin.DirEntry, 0, len(names))
	var st unix.Stat_t
	for _, n := range names {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue
			}
			return nil, &os.PathError{Op: "lstat", Path: origin.Join(c, n), Err: err}
		}
		a := attrOf(&st)
		out = append(out, origin.DirEntry{Name: n, Mode: a.Mode & syscall.S_IFMT, Ino: a.Ino, Attr: &a})
	}
	return out, nil
}

func attrOf(st *unix.Stat_t) origin.Attr {
	return origin.Attr{Ino: st.Ino, Dev: st.Dev, Mode: st.Mode, Nlink: uint32(st.Nlink), Uid: st.Uid, Gid: st.Gid,
		Size: st.Size, Blocks: st.Blocks, Blksize: uint32(st.Blksize),
		Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec), Ctime: time.Unix(st.Ctim.Sec, st.Ctim.Nsec)}
}
