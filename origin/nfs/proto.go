package nfs

import (
	"fmt"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// NFSv3 procedures (RFC 1813).
const (
	procGetattr     = 1
	procSetattr     = 2
	procLookup      = 3
	procReadlink    = 5
	procRead        = 6
	procWrite       = 7
	procCreate      = 8
	procMkdir       = 9
	procSymlink     = 10
	procMknod       = 11
	procRemove      = 12
	procRmdir       = 13
	procRename      = 14
	procLink        = 15
	procReaddirplus = 17
	procFsstat      = 18
	procFsinfo      = 19
	procPathconf    = 20
)

// File types (ftype3).
const (
	nf3Reg  = 1
	nf3Dir  = 2
	nf3Blk  = 3
	nf3Chr  = 4
	nf3Lnk  = 5
	nf3Sock = 6
	nf3Fifo = 7
)

// Write stability.
const fileSync = 2

// Status codes (nfsstat3) that eddy treats specially.
const (
	nfs3OK          = 0
	nfs3ErrStale    = 70
	nfs3ErrBadHndl  = 10001
	nfs3ErrNotSupp  = 10004
	nfs3ErrJukebox  = 10008
	nfs3ErrServFlt  = 10006
	nfs3ErrIO       = 5
	nfs3ErrNotSync  = 10002
	nfs3ErrBadCook  = 10003
	nfs3ErrTooSmall = 10005
	nfs3ErrBadType  = 10007
)

// statusError is an NFS status other than NFS3_OK. It unwraps to the errno
// callers branch on (errors.Is(err, syscall.ENOENT)).
type statusError struct {
	status uint32
	errno  syscall.Errno
}

func (e *statusError) Error() string {
	return fmt.Sprintf("NFS3ERR %d (%v)", e.status, e.errno)
}
func (e *statusError) Unwrap() error { return e.errno }

var statusErrnos = map[uint32]syscall.Errno{
	1:               syscall.EPERM,
	2:               syscall.ENOENT,
	nfs3ErrIO:       syscall.EIO,
	6:               syscall.ENXIO,
	13:              syscall.EACCES,
	17:              syscall.EEXIST,
	18:              syscall.EXDEV,
	19:              syscall.ENODEV,
	20:              syscall.ENOTDIR,
	21:              syscall.EISDIR,
	22:              syscall.EINVAL,
	27:              syscall.EFBIG,
	28:              syscall.ENOSPC,
	30:              syscall.EROFS,
	31:              syscall.EMLINK,
	63:              syscall.ENAMETOOLONG,
	66:              syscall.ENOTEMPTY,
	69:              syscall.EDQUOT,
	nfs3ErrStale:    syscall.ESTALE,
	71:              syscall.EREMOTE,
	nfs3ErrBadHndl:  syscall.ESTALE,
	nfs3ErrNotSync:  syscall.EIO,
	nfs3ErrBadCook:  syscall.EIO,
	nfs3ErrNotSupp:  syscall.ENOTSUP,
	nfs3ErrTooSmall: syscall.EIO,
	nfs3ErrServFlt:  syscall.EIO,
	nfs3ErrBadType:  syscall.EINVAL,
	nfs3ErrJukebox:  syscall.EAGAIN,
}

// statusErrno maps an nfsstat3 (or mountstat3, whose codes are a subset) to
// an error carrying the errno; EIO for unknown codes.
func statusErrno(st uint32) error {
	if st == nfs3OK {
		return nil
	}
	errno, ok := statusErrnos[st]
	if !ok {
		errno = syscall.EIO
	}
	return &statusError{status: st, errno: errno}
}

func isStale(err error) bool {
	return errorsIsStatus(err, nfs3ErrStale) || errorsIsStatus(err, nfs3ErrBadHndl)
}

func errorsIsStatus(err error, st uint32) bool {
	se, ok := err.(*statusError)
	return ok && se.status == st
}

// fattr3 decodes a fattr3 into an origin.Attr.
func (d *dec) fattr() origin.Attr {
	var a origin.Attr
	typ := d.u32()
	mode := d.u32() & 0o7777
	a.Nlink = d.u32()
	a.Uid = d.u32()
	a.Gid = d.u32()
	a.Size = int64(d.u64())
	used := d.u64()
	maj, min := d.u32(), d.u32()
	a.Dev = d.u64()
	a.Ino = d.u64()
	a.Atime = d.time()
	a.Mtime = d.time()
	a.Ctime = d.time()
	a.Mode = mode | typeBits(typ)
	a.Blocks = int64((used + 511) / 512)
	a.Blksize = 4096
	a.Rdev = uint64(unixMkdev(maj, min))
	// NFSv3 has no change attribute; the server's ctime (with nanoseconds)
	// moves on every data or metadata change and serves as one.
	a.Change = uint64(a.Ctime.UnixNano())
	return a
}

func unixMkdev(maj, min uint32) uint64 {
	return uint64(maj&0xfff)<<8 | uint64(maj&^0xfff)<<32 | uint64(min&0xff) | uint64(min&^0xff)<<12
}

func typeBits(t uint32) uint32 {
	switch t {
	case nf3Reg:
		return syscall.S_IFREG
	case nf3Dir:
		return syscall.S_IFDIR
	case nf3Blk:
		return syscall.S_IFBLK
	case nf3Chr:
		return syscall.S_IFCHR
	case nf3Lnk:
		return syscall.S_IFLNK
	case nf3Sock:
		return syscall.S_IFSOCK
	case nf3Fifo:
		return syscall.S_IFIFO
	}
	return 0
}

func (d *dec) time() time.Time {
	s, ns := d.u32(), d.u32()
	return time.Unix(int64(s), int64(ns))
}

// postOpAttr decodes post_op_attr; ok is false when the server sent none.
func (d *dec) postOpAttr() (origin.Attr, bool) {
	if !d.bool() {
		return origin.Attr{}, false
	}
	return d.fattr(), true
}

// wcc skips wcc_data, returning the post-op attributes if present.
func (d *dec) wcc() (origin.Attr, bool) {
	if d.bool() { // pre_op_attr: size, mtime, ctime
		d.u64()
		d.u64()
		d.u64()
	}
	return d.postOpAttr()
}

func (d *dec) postOpFH() []byte {
	if !d.bool() {
		return nil
	}
	return append([]byte(nil), d.opaque(maxFHSize)...)
}

func (e *enc) time(t time.Time) {
	e.u32(uint32(t.Unix()))
	e.u32(uint32(t.Nanosecond()))
}

// sattr3 encodes the attributes to set.
func (e *enc) sattr(s origin.SetAttr) {
	if s.Mode != nil {
		e.bool(true)
		e.u32(*s.Mode & 0o7777)
	} else {
		e.bool(false)
	}
	for _, id := range []*uint32{s.Uid, s.Gid} {
		if id != nil {
			e.bool(true)
			e.u32(*id)
		} else {
			e.bool(false)
		}
	}
	if s.Size != nil {
		e.bool(true)
		e.u64(uint64(*s.Size))
	} else {
		e.bool(false)
	}
	for _, t := range []*time.Time{s.Atime, s.Mtime} {
		if t != nil {
			e.u32(2) // SET_TO_CLIENT_TIME
			e.time(*t)
		} else {
			e.u32(0) // DONT_CHANGE
		}
	}
}

// ownerSattr is the sattr3 for a new object: its permission bits and owner.
func ownerSattr(mode uint32, owner origin.Owner) origin.SetAttr {
	m := mode & 0o7777
	uid, gid := owner.Uid, owner.Gid
	return origin.SetAttr{Mode: &m, Uid: &uid, Gid: &gid}
}
