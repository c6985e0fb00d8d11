package origin

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"syscall"
	"time"
)

// Sentinel errors. Implementations return syscall.Errno values (wrapped with
// the operation) for everything the kernel would report, so callers can map
// them to FUSE status codes with errors.As; these sentinels mark conditions
// that are eddy's own.
var (
	// ErrEscape: a name would leave the origin's root.
	ErrEscape = errors.New("path escapes the share")
	// ErrUnavailable: the origin cannot be reached right now (trouble, not absence).
	ErrUnavailable = errors.New("origin unavailable")
)

// Attr holds the attributes of one origin object, as lstat reports them.
type Attr struct {
	Ino     uint64
	Dev     uint64
	Mode    uint32 // st_mode: file type bits and permission bits
	Nlink   uint32
	Uid     uint32
	Gid     uint32
	Rdev    uint64
	Size    int64
	Blocks  int64 // 512-byte blocks
	Blksize uint32
	Atime   time.Time
	Mtime   time.Time
	Ctime   time.Time
	// Change is the origin's change attribute where it has one (NFSv4
	// change, or a server's ctime-derived counter); 0 where there is none.
	Change uint64
	// Gen tells apart files that had the same Ino at different times: an
	// origin file system gives a deleted file's inode number to the next
	// file it creates, and a mount that took the two for one object would
	// serve the new file through the old one's kernel inode (its names, its
	// page cache). The path origin uses the birth time, the NFS origin the
	// file handle; 0 where the origin has neither. Part of the fingerprint:
	// the new file's size and times may be the old one's.
	Gen uint64
	// InoVolatile: Ino is not stable for the file's life (a FUSE origin such
	// as sshfs numbers inodes per lookup), so it is left out of Fingerprint.
	InoVolatile bool
}

// SameObject reports whether a and b are attributes of one file (its inode
// number and generation), not of a later file given the same number.
func (a Attr) SameObject(b Attr) bool { return a.Ino == b.Ino && a.Gen == b.Gen }

// IsDir, IsRegular and IsSymlink report the file type.
func (a Attr) IsDir() bool     { return a.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (a Attr) IsRegular() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFREG }
func (a Attr) IsSymlink() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFLNK }

// Fingerprint identifies one version of a file's content. Cached bytes are
// valid only while the origin's current fingerprint equals the one recorded
// when they were fetched. ctime is in it because a rewrite that restores the
// old mtime (touch -d, rsync -t, tar x) still moves ctime; inode and device
// catch replacement by rename.
type Fingerprint struct {
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
	Ino     uint64 `json:"ino"`
	Dev     uint64 `json:"dev"`
	Change  uint64 `json:"change,omitempty"`
	// Gen: a file that got a deleted one's inode number is another file,
	// even when its size and times (as coarse as the clock's tick) match.
	Gen uint64 `json:"gen,omitempty"`
}

// Fingerprint derives the content fingerprint from the attributes.
func (a Attr) Fingerprint() Fingerprint {
	f := Fingerprint{
		Size:    a.Size,
		MtimeNs: a.Mtime.UnixNano(),
		CtimeNs: a.Ctime.UnixNano(),
		Ino:     a.Ino,
		Dev:     a.Dev,
		Change:  a.Change,
		Gen:     a.Gen,
	}
	if a.InoVolatile {
		f.Ino, f.Gen = 0, 0
	}
	return f
}

// String renders the fingerprint for logs.
func (f Fingerprint) String() string {
	return fmt.Sprintf("size=%d mtime=%d ctime=%d ino=%d dev=%d change=%d gen=%d",
		f.Size, f.MtimeNs, f.CtimeNs, f.Ino, f.Dev, f.Change, f.Gen)
}

// DirEntry is one directory entry.
type DirEntry struct {
	Name string
	Mode uint32 // file type bits only (S_IFDIR, S_IFREG, ...)
	Ino  uint64
	// Attr, when not nil, holds the entry's attributes as the listing
	// returned them (NFS READDIRPLUS), as fresh as an Lstat at that moment.
	Attr *Attr
}

// Owner is the identity new objects are created for (the FUSE caller).
type Owner struct {
	Uid uint32
	Gid uint32
}

// SetAttr names the attributes to change; nil fields are left alone.
type SetAttr struct {
	Mode  *uint32 // permission bits
	Uid   *uint32
	Gid   *uint32
	Size  *int64
	Atime *time.Time // UTIME_NOW is expressed by the caller as time.Now()
	Mtime *time.Time
}

// Statfs is the file system summary of the origin.
type Statfs struct {
	Blocks  uint64
	Bfree   uint64
	Bavail  uint64
	Files   uint64
	Ffree   uint64
	Bsize   uint32
	Frsize  uint32
	NameLen uint32
}

// FS is the origin: the real shared directory (a POSIX path, or an NFS
// export spoken by eddy itself). Names are clean slash-separated paths
// relative to the origin's root ("." is the root), as Clean returns them.
// Errors wrap a syscall.Errno where the origin reported one; ENOENT means
// absence, and only ENOENT does (invariant 5).
type FS interface {
	Lstat(ctx context.Context, name string) (Attr, error)
	ReadDir(ctx context.Context, name string) ([]DirEntry, error)
	// Open opens an existing file. flag is as for open(2) (O_RDONLY, O_RDWR,
	// O_TRUNC, O_APPEND, ...); O_CREAT is not allowed here, use Create.
	Open(ctx context.Context, name string, flag int) (File, error)
	// Create creates (or, without O_EXCL, opens) a regular file owned by owner.
	Create(ctx context.Context, name string, flag int, mode uint32, owner Owner) (File, error)
	Mkdir(ctx context.Context, name string, mode uint32, owner Owner) error
	Mknod(ctx context.Context, name string, mode uint32, dev uint64, owner Owner) error
	Symlink(ctx context.Context, target, name string, owner Owner) error
	Readlink(ctx context.Context, name string) (string, error)
	Link(ctx context.Context, oldname, newname string) error
	Unlink(ctx context.Context, name string) error
	Rmdir(ctx context.Context, name string) error
	// Rename renames oldname to newname; flags as for renameat2(2)
	// (RENAME_NOREPLACE, RENAME_EXCHANGE), 0 for plain rename.
	Rename(ctx context.Context, oldname, newname string, flags uint32) error
	SetAttr(ctx context.Context, name string, set SetAttr) error
	Getxattr(ctx context.Context, name, attr string) ([]byte, error)
	Setxattr(ctx context.Context, name, attr string, data []byte, flags int) error
	Listxattr(ctx context.Context, name string) ([]string, error)
	Removexattr(ctx context.Context, name, attr string) error
	Statfs(ctx context.Context) (Statfs, error)
	// String names the origin for logs and stats ("/srv/share", "nfs://...").
	String() string
	Close() error
}

// File is an open origin file.
type File interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
	Stat(ctx context.Context) (Attr, error)
	Truncate(ctx context.Context, size int64) error
	Sync(ctx context.Context) error
	Close() error
}

// AttrWitness is implemented by files whose server returns the file's
// attributes with its replies (NFS post-operation attributes, from the
// lookup that opened the file on). Witnessed returns them if every reply so
// far carried attributes and all had one fingerprint; ok is false otherwise.
// Bytes read through such a file while Witnessed reports fingerprint F
// belong to version F: F was current when the file was opened and after
// each read, and a file's ctime never goes back. The cache uses this to
// index what it fetched without asking the origin again.
type AttrWitness interface {
	Witnessed() (a Attr, ok bool)
}

// UnlinkedOpenKeeper is implemented by origins whose open files stay
// readable and writable after their name is unlinked, as POSIX requires
// (a local directory). fusefs keeps the others' unlinked open files alive
// by renaming them aside until the last close, as NFS clients do.
type UnlinkedOpenKeeper interface {
	KeepsUnlinkedOpenFiles() bool
}

// Fder is implemented by files backed by a local file descriptor (the path
// origin). fusefs uses it for POSIX locks and fallocate.
type Fder interface {
	Fd() int
}

// Clean validates a name from an untrusted source (the FUSE layer, the API,
// a task spec) and returns it in canonical form: relative, slash-separated,
// no "." or ".." elements, "." for the root. A name that would leave the
// root, or holds a NUL byte, is refused with ErrEscape.
func Clean(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%q: %w", name, ErrEscape)
	}
	name = strings.TrimLeft(name, "/")
	if name == "" {
		return ".", nil
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("%q: %w", name, ErrEscape)
		}
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") || strings.HasPrefix(c, "/") {
		return "", fmt.Errorf("%q: %w", name, ErrEscape)
	}
	return c, nil
}

// Join joins a directory name and a child name into a clean origin name.
// The child must be a single path element.
func Join(dir, child string) string {
	if dir == "." || dir == "" {
		return child
	}
	return dir + "/" + child
}

// IsNotExist reports whether err means the object is absent (ENOENT), as
// opposed to trouble reaching it.
func IsNotExist(err error) bool {
	return errors.Is(err, syscall.ENOENT)
}

// IsTrouble reports whether err is trouble with the origin (EIO, ESTALE,
// timeouts, unreachable) rather than an answer about the object.
func IsTrouble(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EIO, syscall.ESTALE, syscall.ETIMEDOUT, syscall.ECONNRESET,
			syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ENOTCONN:
			return true
		}
	}
	return false
}

// Errno extracts the errno an error carries, EIO when it carries none.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if errors.Is(err, ErrEscape) {
		return syscall.EACCES
	}
	return syscall.EIO
}
