package s3

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/eddy-cluster/eddy/origin"
)

// Open opens an existing object. Read-only opens remember its ETag, and
// every read is a ranged GET with If-Match on it. Opens for writing copy
// the object into a spool file (unless O_TRUNC) and upload it at Sync or
// Close.
func (f *FS) Open(ctx context.Context, name string, flag int) (origin.File, error) {
	if flag&syscall.O_CREAT != 0 {
		return nil, wrap("open", name, syscall.EINVAL)
	}
	ctx, cancel := f.bound(ctx)
	defer cancel()
	key := f.key(name)
	oi, ok, err := f.statObject(ctx, key)
	if err != nil {
		return nil, wrap("open", name, err)
	}
	if !ok {
		exists, _, err := f.dirInfo(ctx, name)
		if err != nil {
			return nil, wrap("open", name, err)
		}
		if exists {
			return nil, wrap("open", name, syscall.EISDIR)
		}
		return nil, wrap("open", name, syscall.ENOENT)
	}
	fl := &file{fs: f, name: name, key: key, attr: f.fileAttr(key, oi.Size, oi.LastModified, oi.ETag),
		etag: strings.Trim(oi.ETag, `"`)}
	if flag&syscall.O_ACCMODE == syscall.O_RDONLY {
		return fl, nil
	}
	if err := fl.spoolUp(ctx, flag&syscall.O_TRUNC == 0); err != nil {
		return nil, wrap("open", name, err)
	}
	if flag&syscall.O_TRUNC != 0 && oi.Size > 0 {
		fl.dirty = true
	}
	return fl, nil
}

// Create stores an empty object at once (so the name exists, as after
// open(O_CREAT)) unless one exists and O_TRUNC is not given, and opens it
// for writing. O_EXCL is checked, not atomically.
func (f *FS) Create(ctx context.Context, name string, flag int, mode uint32, owner origin.Owner) (origin.File, error) {
	ctx, cancel := f.bound(ctx)
	defer cancel()
	if name == "." || name == "" {
		return nil, wrap("create", name, syscall.EISDIR)
	}
	a, err := f.lstat(ctx, name)
	switch {
	case err == nil && a.IsDir():
		return nil, wrap("create", name, syscall.EISDIR)
	case err == nil && flag&syscall.O_EXCL != 0:
		return nil, wrap("create", name, syscall.EEXIST)
	case err == nil:
		return f.Open(ctx, name, flag&^(syscall.O_CREAT|syscall.O_EXCL))
	case !errors.Is(err, syscall.ENOENT):
		return nil, wrap("create", name, err)
	}
	if p := parentOf(name); p != "." {
		pa, err := f.lstat(ctx, p)
		if err != nil {
			return nil, wrap("create", name, err)
		}
		if !pa.IsDir() {
			return nil, wrap("create", name, syscall.ENOTDIR)
		}
	}
	key := f.key(name)
	fl := &file{fs: f, name: name, key: key}
	if err := fl.spoolUp(ctx, false); err != nil {
		return nil, wrap("create", name, err)
	}
	if err := fl.upload(ctx); err != nil {
		fl.sp.Close()
		return nil, wrap("create", name, err)
	}
	return fl, nil
}

// file is an open object. Read-only: attr and etag are fixed at open. For
// writing: sp holds the whole content; dirty says it differs from the
// object stored (attr, etag).
type file struct {
	fs   *FS
	name string
	key  string

	mu    sync.Mutex
	attr  origin.Attr // guarded by mu
	etag  string      // guarded by mu
	sp    *os.File    // guarded by mu; nil for read-only files
	size  int64       // guarded by mu; the spool's size
	dirty bool        // guarded by mu
}

var _ origin.AttrWitness = (*file)(nil)

// Witnessed: bytes read through a read-only file all belong to the version
// opened (If-Match), so its attributes witness them.
func (fl *file) Witnessed() (origin.Attr, bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.sp != nil {
		return origin.Attr{}, false
	}
	return fl.attr, true
}

// spoolUp makes the spool file, filled with the object's current bytes
// when fill (read under If-Match, so they are the version looked at).
func (fl *file) spoolUp(ctx context.Context, fill bool) error {
	sp, err := os.CreateTemp(fl.fs.cfg.Spool, ".eddy-s3-spool-*")
	if err != nil {
		return err
	}
	// Unlinked at once: the descriptor keeps it, a crash leaves nothing.
	os.Remove(sp.Name())
	if fill && fl.attr.Size > 0 {
		rc, _, _, err := fl.fs.core.GetObject(ctx, fl.fs.cfg.Bucket, fl.key, fl.getOpts(-1, 0))
		if err != nil {
			sp.Close()
			return err
		}
		n, err := io.Copy(sp, rc)
		rc.Close()
		if err != nil {
			sp.Close()
			return err
		}
		if n != fl.attr.Size {
			sp.Close()
			return syscall.ESTALE
		}
	}
	fl.sp = sp
	if fill {
		fl.size = fl.attr.Size
	}
	return nil
}

// getOpts asks for length bytes at off (all of it when length < 0) of the
// version opened.
func (fl *file) getOpts(off, length int64) minio.GetObjectOptions {
	var o minio.GetObjectOptions
	if fl.etag != "" {
		o.SetMatchETag(fl.etag)
	}
	if off >= 0 {
		o.SetRange(off, off+length-1)
	}
	return o
}

// ReadAt: one ranged GET with If-Match. A replaced or removed object fails
// with ESTALE ("the file changed"): the caller revalidates and refetches,
// and never gets bytes of two versions.
func (fl *file) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, wrap("read", fl.name, syscall.EINVAL)
	}
	fl.mu.Lock()
	if fl.sp != nil {
		defer fl.mu.Unlock()
		n, err := fl.sp.ReadAt(p, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return n, wrap("read", fl.name, err)
		}
		return n, err
	}
	size := fl.attr.Size
	fl.mu.Unlock()
	if off >= size {
		return 0, io.EOF
	}
	want := int64(len(p))
	if off+want > size {
		want = size - off
	}
	if want == 0 {
		return 0, nil
	}
	ctx, cancel := fl.fs.bound(ctx)
	defer cancel()
	rc, _, _, err := fl.fs.core.GetObject(ctx, fl.fs.cfg.Bucket, fl.key, fl.getOpts(off, want))
	if err != nil {
		return 0, fl.readErr(err)
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p[:want])
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			// Shorter than the version opened: not that version.
			return 0, wrap("read", fl.name, syscall.ESTALE)
		}
		return 0, wrap("read", fl.name, err)
	}
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// readErr: a failed If-Match, or a key gone, is the file having changed
// under the open file (ESTALE), never absence.
func (fl *file) readErr(err error) error {
	if r, ok := s3Error(err); ok {
		if errno, _ := errnoOf(r); errno == syscall.ENOENT && r.Code != "NoSuchBucket" {
			return wrap("read", fl.name, syscall.ESTALE)
		}
		if r.StatusCode == 416 || r.Code == "InvalidRange" {
			return wrap("read", fl.name, syscall.ESTALE)
		}
	}
	return wrap("read", fl.name, err)
}

func (fl *file) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.sp == nil {
		return 0, wrap("write", fl.name, syscall.EBADF)
	}
	n, err := fl.sp.WriteAt(p, off)
	if n > 0 {
		fl.dirty = true
		if end := off + int64(n); end > fl.size {
			fl.size = end
		}
	}
	return n, wrap("write", fl.name, err)
}

func (fl *file) Truncate(ctx context.Context, size int64) error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.sp == nil {
		return wrap("truncate", fl.name, syscall.EBADF)
	}
	if size < 0 {
		return wrap("truncate", fl.name, syscall.EINVAL)
	}
	if err := fl.sp.Truncate(size); err != nil {
		return wrap("truncate", fl.name, err)
	}
	if size != fl.size || fl.attr.Size != size {
		fl.dirty = true
	}
	fl.size = size
	return nil
}

// Stat: the attributes of the object as stored, or, while writes are not
// yet uploaded, of the spool's content.
func (fl *file) Stat(ctx context.Context) (origin.Attr, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	a := fl.attr
	if fl.sp != nil && fl.dirty {
		a.Size, a.Blocks = fl.size, (fl.size+511)/512
		a.Mtime, a.Ctime, a.Change = time.Now(), time.Now(), 0
	}
	return a, nil
}

// Sync uploads the spool if it holds writes: PutObject (in parts for large
// files); it returns once the object is stored.
func (fl *file) Sync(ctx context.Context) error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.sp == nil || !fl.dirty {
		return nil
	}
	ctx, cancel := fl.fs.bound(ctx)
	defer cancel()
	return wrap("write", fl.name, fl.upload(ctx))
}

// upload stores the spool as the object and takes the stored version's
// attributes. Called with mu held (or before the file is shared).
func (fl *file) upload(ctx context.Context) error {
	r := io.NewSectionReader(fl.sp, 0, fl.size)
	_, err := fl.fs.cl.PutObject(ctx, fl.fs.cfg.Bucket, fl.key, r, fl.size,
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return err
	}
	oi, ok, err := fl.fs.statObject(ctx, fl.key)
	if err != nil {
		return err
	}
	if !ok {
		return syscall.ESTALE
	}
	fl.attr = fl.fs.fileAttr(fl.key, oi.Size, oi.LastModified, oi.ETag)
	fl.etag = strings.Trim(oi.ETag, `"`)
	fl.dirty = false
	return nil
}

// Close uploads what Sync has not, then drops the spool. It returns only
// once the object is stored (or with the reason it is not).
func (fl *file) Close() error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.sp == nil {
		return nil
	}
	var err error
	if fl.dirty {
		ctx, cancel := context.WithTimeout(context.Background(), fl.fs.timeout)
		err = wrap("write", fl.name, fl.upload(ctx))
		cancel()
	}
	fl.sp.Close()
	fl.sp = nil
	return err
}
