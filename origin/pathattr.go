package origin

import (
	"errors"
	"hash/fnv"
	"time"

	"golang.org/x/sys/unix"
)

// A path origin's Gen (what tells a file from a later one that got its inode
// number) is a hash of the file's handle (name_to_handle_at: the inode
// number and its generation, which the file system draws anew for each file,
// on a local file system; the server's file handle on a kernel NFS client).
// Where the file system gives no handles it is the birth time (statx),
// which tells the two apart only when they were made in different ticks of
// the file system's clock (ext4 stamps times per jiffy, a few ms). FUSE
// mounts such as sshfs: Gen 0, as their handles hold the inode numbers they
// hand out per lookup, no file's lasting name (InoVolatile).

// statx reads the attributes of name in dirfd ("" with AT_EMPTY_PATH: dirfd
// itself), Gen included.
func (p *PathFS) statx(dirfd int, name string, flags int) (Attr, error) {
	var sx unix.Statx_t
	if err := unix.Statx(dirfd, name, flags|unix.AT_STATX_SYNC_AS_STAT, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx); err != nil {
		return Attr{}, err
	}
	a := attrFromStatx(&sx)
	if p.inoVolatile {
		// A FUSE file system's handles carry its per-lookup inode
		// numbers: they change for one file when the kernel forgets it.
		return a, nil
	}
	if !p.birthTimeGen {
		gen, err := p.handleGen(dirfd, name, flags&unix.AT_EMPTY_PATH, a.Dev)
		if err != nil {
			return Attr{}, err
		}
		if a.Gen = gen; gen != 0 {
			return a, nil
		}
	}
	if sx.Mask&unix.STATX_BTIME != 0 {
		a.Gen = uint64(statxTime(sx.Btime).UnixNano())
	}
	return a, nil
}

// handleGen is the Gen of the file name in dirfd (flags: AT_EMPTY_PATH or
// 0; a final symlink is not followed) on device dev from its file handle,
// or 0 where dev's file system gives no handles. A file that went since its
// statx is ENOENT, as it would be a moment later.
func (p *PathFS) handleGen(dirfd int, name string, flags int, dev uint64) (uint64, error) {
	if _, none := p.noHandles.Load(dev); none {
		return 0, nil
	}
	h, _, err := unix.NameToHandleAt(dirfd, name, flags)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return 0, err
		}
		// EOPNOTSUPP (no export support), ENOSYS: this file system gives
		// none, now or later. Its files keep Gen 0, whichever call asks.
		p.noHandles.Store(dev, true)
		return 0, nil
	}
	f := fnv.New64a()
	var typ [4]byte
	t := uint32(h.Type())
	typ[0], typ[1], typ[2], typ[3] = byte(t), byte(t>>8), byte(t>>16), byte(t>>24)
	f.Write(typ[:])
	f.Write(h.Bytes())
	return f.Sum64() | 1, nil
}

func statxTime(t unix.StatxTimestamp) time.Time { return time.Unix(t.Sec, int64(t.Nsec)) }

func attrFromStatx(sx *unix.Statx_t) Attr {
	return Attr{
		Ino:     sx.Ino,
		Dev:     unix.Mkdev(sx.Dev_major, sx.Dev_minor),
		Mode:    uint32(sx.Mode),
		Nlink:   sx.Nlink,
		Uid:     sx.Uid,
		Gid:     sx.Gid,
		Rdev:    unix.Mkdev(sx.Rdev_major, sx.Rdev_minor),
		Size:    int64(sx.Size),
		Blocks:  int64(sx.Blocks),
		Blksize: sx.Blksize,
		Atime:   statxTime(sx.Atime),
		Mtime:   statxTime(sx.Mtime),
		Ctime:   statxTime(sx.Ctime),
	}
}
