package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// osOrigin is a minimal read-only origin.FS over a local directory, for
// benchmarks and the crash test (the real path origin lives in package origin).
type osOrigin struct {
	fakeOrigin // unimplemented methods
	root       string
}

func newOSOrigin(root string) *osOrigin { return &osOrigin{root: root} }

func statToAttr(st *syscall.Stat_t) origin.Attr {
	return origin.Attr{
		Ino: st.Ino, Dev: st.Dev, Mode: st.Mode, Nlink: uint32(st.Nlink), Uid: st.Uid, Gid: st.Gid,
		Size: st.Size, Blocks: st.Blocks, Blksize: uint32(st.Blksize),
		Atime: time.Unix(st.Atim.Sec, st.Atim.Nsec), Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Ctime: time.Unix(st.Ctim.Sec, st.Ctim.Nsec),
	}
}

func (o *osOrigin) Lstat(ctx context.Context, name string) (origin.Attr, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(o.root, name), &st); err != nil {
		return origin.Attr{}, fmt.Errorf("lstat %s: %w", name, err)
	}
	return statToAttr(&st), nil
}

func (o *osOrigin) ReadDir(ctx context.Context, name string) ([]origin.DirEntry, error) {
	ents, err := os.ReadDir(filepath.Join(o.root, name))
	if err != nil {
		return nil, err
	}
	var out []origin.DirEntry
	for _, e := range ents {
		m := uint32(syscall.S_IFREG)
		if e.IsDir() {
			m = syscall.S_IFDIR
		}
		out = append(out, origin.DirEntry{Name: e.Name(), Mode: m})
	}
	return out, nil
}

func (o *osOrigin) Open(ctx context.Context, name string, flag int) (origin.File, error) {
	f, err := os.OpenFile(filepath.Join(o.root, name), flag, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (o *osOrigin) String() string { return o.root }

type osFile struct{ f *os.File }

func (f osFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return f.f.ReadAt(p, off)
}
func (f osFile) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	return f.f.WriteAt(p, off)
}
func (f osFile) Stat(ctx context.Context) (origin.Attr, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.f.Fd()), &st); err != nil {
		return origin.Attr{}, err
	}
	return statToAttr(&st), nil
}
func (f osFile) Truncate(ctx context.Context, size int64) error { return f.f.Truncate(size) }
func (f osFile) Sync(ctx context.Context) error                 { return f.f.Sync() }
func (f osFile) Close() error                                   { return f.f.Close() }
