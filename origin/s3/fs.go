package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/eddy-cluster/eddy/origin"
)

func init() {
	origin.RegisterScheme("s3", func(ctx context.Context, u *url.URL, opts origin.OpenOptions) (origin.FS, error) {
		cfg, err := configFromURL(u)
		if err != nil {
			return nil, err
		}
		return New(ctx, cfg, opts)
	}, origin.WholeHostOK)
}

const (
	// DefaultTimeout is how long an operation waits for a server that does
	// not answer before failing as unavailable.
	DefaultTimeout = 30 * time.Second
	// maxRetries is the client's attempts per request (5xx, SlowDown,
	// dropped connections), with backoff from 200 ms up to 1 s, all within
	// the operation's deadline.
	maxRetries = 5
	// maxCopy is the largest object one CopyObject request copies; larger
	// ones are copied in parts (ComposeObject).
	maxCopy = 5 << 30
)

// FS is a bucket (or a prefix in one) as an origin.FS.
type FS struct {
	cfg     Config
	cl      *minio.Client
	tr      *http.Transport
	core    minio.Core
	log     *slog.Logger
	timeout time.Duration
	dev     uint64
}

var _ origin.FS = (*FS)(nil)

// New connects to the server and checks, within the timeout, that the
// bucket exists and the credentials are accepted; otherwise the error is one
// line naming the endpoint and the server's answer.
func New(ctx context.Context, cfg Config, opts origin.OpenOptions) (*FS, error) {
	return newFS(ctx, cfg, opts, nil)
}

func newFS(ctx context.Context, cfg Config, opts origin.OpenOptions, getenv func(string) string) (*FS, error) {
	if cfg.Endpoint == nil {
		return nil, errors.New("s3 origin: no endpoint")
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	ep := (&url.URL{Scheme: cfg.Endpoint.Scheme, Host: cfg.Endpoint.Host}).String()
	cr, err := resolveCreds(cfg, getenv)
	if err != nil {
		return nil, fmt.Errorf("s3 origin %s: %w", cfg, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.ResponseHeaderTimeout = 0
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = dialer.DialContext
	if opts.Dial != nil {
		tr.DialContext = opts.Dial
	}
	lookup := minio.BucketLookupDNS
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	cl, err := minio.New(cfg.Endpoint.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cr.access, cr.secret, cr.token),
		Secure:       cfg.Endpoint.Scheme == "https",
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 origin %s: %v", cfg, err)
	}
	f := &FS{cfg: cfg, cl: cl, tr: tr, core: minio.Core{Client: cl}, log: opts.Logger, timeout: cfg.Timeout,
		dev: xxhash.Sum64String(ep + "/" + cfg.Bucket)}
	if f.log == nil {
		f.log = slog.Default()
	}
	f.log = f.log.With("origin", cfg.String())
	if f.timeout == 0 {
		f.timeout = opts.Timeout
	}
	if f.timeout == 0 {
		f.timeout = DefaultTimeout
	}
	cctx, cancel := f.bound(ctx)
	defer cancel()
	// A listing of one key both checks the bucket and the credentials
	// (HEAD on a bucket has no body, so its refusals have no code).
	err = f.probe(cctx)
	if err != nil {
		return nil, openError(ep, cfg.Bucket, err)
	}
	f.log.Info("s3 origin ready", "credentials", cr.source)
	return f, nil
}

// probe lists at most one key under the prefix.
func (f *FS) probe(ctx context.Context) error {
	return f.list(ctx, f.dirPrefix("."), 1, func(minio.ObjectInfo) bool { return false })
}

// list calls fn for the keys and common prefixes under prefix, page by
// page, until fn returns false. The client's iterator ends quietly when ctx
// is done, so that is checked here: a listing cut short is an error, never
// a shorter directory.
func (f *FS) list(ctx context.Context, prefix string, maxKeys int, fn func(obj minio.ObjectInfo) bool) error {
	for obj := range f.cl.ListObjectsIter(ctx, f.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, MaxKeys: maxKeys, FetchOwner: new(false)}) {
		if obj.Err != nil {
			return obj.Err
		}
		if !fn(obj) {
			return nil
		}
	}
	return ctx.Err()
}

// openError is the one-line reason an origin could not be opened.
func openError(ep, bucket string, err error) error {
	if r, ok := s3Error(err); ok {
		switch {
		case r.Code == "NoSuchBucket" || (r.StatusCode == http.StatusNotFound && r.Code == ""):
			return fmt.Errorf("s3 origin: no bucket %q at %s: %s", bucket, ep, orStatus(r))
		case r.Code == "AccessDenied" || r.Code == "InvalidAccessKeyId" || r.Code == "SignatureDoesNotMatch" ||
			r.StatusCode == http.StatusForbidden || r.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("s3 origin: credentials refused by %s: %s", ep, orStatus(r))
		}
		return fmt.Errorf("s3 origin: %s answered %s for bucket %q", ep, orStatus(r), bucket)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("s3 origin: cannot reach %s: %v: %w", ep, err, origin.ErrUnavailable)
}

func orStatus(r minio.ErrorResponse) string {
	if r.Code != "" {
		return r.Code
	}
	return fmt.Sprintf("HTTP %d", r.StatusCode)
}

// bound gives ctx the origin's timeout unless it has an earlier deadline.
func (f *FS) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= f.timeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, f.timeout)
}

// String names the origin (no credentials).
func (f *FS) String() string { return f.cfg.String() }

// Close releases idle connections.
func (f *FS) Close() error {
	f.tr.CloseIdleConnections()
	return nil
}

// --- names -----------------------------------------------------------------

// key is the object key of name.
func (f *FS) key(name string) string {
	if name == "." || name == "" {
		return f.cfg.Prefix
	}
	if f.cfg.Prefix == "" {
		return name
	}
	return f.cfg.Prefix + "/" + name
}

// dirPrefix is the key prefix of directory name's children (its marker's key).
func (f *FS) dirPrefix(name string) string {
	k := f.key(name)
	if k == "" {
		return ""
	}
	return k + "/"
}

func parentOf(name string) string {
	d := path.Dir(name)
	if d == "" || d == "/" {
		return "."
	}
	return d
}

// ino is the inode number of a key: stable, never 0 or 1 (the root's).
func ino(key string, dir bool) uint64 {
	if dir {
		key += "/"
	}
	n := xxhash.Sum64String(key)
	if n <= 1 {
		n += 2
	}
	return n
}

// etagChange is the change attribute of an ETag (never 0).
func etagChange(etag string) uint64 {
	n := xxhash.Sum64String(strings.Trim(etag, `"`))
	if n == 0 {
		n = 1
	}
	return n
}

// mtime is Last-Modified at the one-second resolution HEAD reports, so a
// listing (which may carry milliseconds) and a HEAD agree.
func mtime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0)
	}
	return t.Truncate(time.Second)
}

func (f *FS) fileAttr(key string, size int64, lastMod time.Time, etag string) origin.Attr {
	t := mtime(lastMod)
	return origin.Attr{
		Ino: ino(key, false), Dev: f.dev, Mode: syscall.S_IFREG | 0o644, Nlink: 1,
		Uid: f.cfg.Uid, Gid: f.cfg.Gid, Size: size, Blocks: (size + 511) / 512, Blksize: 1 << 20,
		Atime: t, Mtime: t, Ctime: t, Change: etagChange(etag),
	}
}

func (f *FS) dirAttr(key string, lastMod time.Time) origin.Attr {
	t := mtime(lastMod)
	return origin.Attr{
		Ino: ino(key, true), Dev: f.dev, Mode: syscall.S_IFDIR | 0o755, Nlink: 1,
		Uid: f.cfg.Uid, Gid: f.cfg.Gid, Size: 0, Blksize: 1 << 20,
		Atime: t, Mtime: t, Ctime: t,
	}
}

// --- metadata --------------------------------------------------------------

// statObject HEADs key; absent is (ObjectInfo{}, false, nil).
func (f *FS) statObject(ctx context.Context, key string) (minio.ObjectInfo, bool, error) {
	oi, err := f.cl.StatObject(ctx, f.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		if r, ok := s3Error(err); ok {
			if errno, _ := errnoOf(r); errno == syscall.ENOENT && r.Code != "NoSuchBucket" {
				return minio.ObjectInfo{}, false, nil
			}
		}
		return minio.ObjectInfo{}, false, err
	}
	return oi, true, nil
}

// dirInfo reports whether directory name exists (a marker or any key under
// its prefix), with the marker's time when there is one.
func (f *FS) dirInfo(ctx context.Context, name string) (exists bool, lastMod time.Time, err error) {
	p := f.dirPrefix(name)
	err = f.list(ctx, p, 1, func(obj minio.ObjectInfo) bool {
		exists = true
		if obj.Key == p {
			lastMod = obj.LastModified
		}
		return false
	})
	return exists, lastMod, err
}

// Lstat: an object named so is a file; else a prefix (or marker) is a
// directory; else ENOENT. The root is a directory as long as the bucket
// answers.
func (f *FS) Lstat(ctx context.Context, name string) (origin.Attr, error) {
	ctx, cancel := f.bound(ctx)
	defer cancel()
	if name == "." || name == "" {
		if err := f.probe(ctx); err != nil {
			return origin.Attr{}, wrap("lstat", name, err)
		}
		return f.dirAttr(f.cfg.Prefix, time.Time{}), nil
	}
	a, err := f.lstat(ctx, name)
	return a, wrap("lstat", name, err)
}

func (f *FS) lstat(ctx context.Context, name string) (origin.Attr, error) {
	key := f.key(name)
	oi, ok, err := f.statObject(ctx, key)
	if err != nil {
		return origin.Attr{}, err
	}
	if ok {
		return f.fileAttr(key, oi.Size, oi.LastModified, oi.ETag), nil
	}
	exists, lm, err := f.dirInfo(ctx, name)
	if err != nil {
		return origin.Attr{}, err
	}
	if !exists {
		return origin.Attr{}, syscall.ENOENT
	}
	return f.dirAttr(key, lm), nil
}

// ReadDir lists the direct children of name, page by page (the server's
// pages of up to 1000 keys, one at a time; never the keys further down).
// The origin interface returns the whole directory as one slice, so memory
// is bounded by the directory's width: about 200 bytes plus the name per
// entry (some 25 MB for 100,000 entries), and a name seen as both an object
// and a prefix is listed once, as the file.
func (f *FS) ReadDir(ctx context.Context, name string) ([]origin.DirEntry, error) {
	ctx, cancel := f.bound(ctx)
	defer cancel()
	p := f.dirPrefix(name)
	var ents []origin.DirEntry
	index := map[string]int{}
	seen := false
	err := f.list(ctx, p, 0, func(obj minio.ObjectInfo) bool {
		seen = true
		if obj.Key == p {
			return true // the directory's own marker
		}
		rest := strings.TrimPrefix(obj.Key, p)
		isDir := strings.HasSuffix(rest, "/")
		child := strings.TrimSuffix(rest, "/")
		if child == "" || child == "." || child == ".." || strings.Contains(child, "/") {
			return true // "a//b" and the like have no name in a tree
		}
		if i, dup := index[child]; dup {
			if !isDir && ents[i].Mode == syscall.S_IFDIR {
				ents[i] = f.fileEntry(p+child, child, obj)
			}
			return true
		}
		index[child] = len(ents)
		if isDir {
			ents = append(ents, origin.DirEntry{Name: child, Mode: syscall.S_IFDIR, Ino: ino(p+child, true)})
		} else {
			ents = append(ents, f.fileEntry(p+child, child, obj))
		}
		return true
	})
	if err != nil {
		return nil, wrap("readdir", name, err)
	}
	if !seen && name != "." && name != "" {
		// Nothing under the prefix: a file, or nothing.
		_, ok, err := f.statObject(ctx, f.key(name))
		if err != nil {
			return nil, wrap("readdir", name, err)
		}
		if ok {
			return nil, wrap("readdir", name, syscall.ENOTDIR)
		}
		return nil, wrap("readdir", name, syscall.ENOENT)
	}
	return ents, nil
}

func (f *FS) fileEntry(key, child string, obj minio.ObjectInfo) origin.DirEntry {
	a := f.fileAttr(key, obj.Size, obj.LastModified, obj.ETag)
	return origin.DirEntry{Name: child, Mode: syscall.S_IFREG, Ino: a.Ino, Attr: &a}
}

// Mkdir stores the directory marker "name/".
func (f *FS) Mkdir(ctx context.Context, name string, mode uint32, owner origin.Owner) error {
	ctx, cancel := f.bound(ctx)
	defer cancel()
	if name == "." || name == "" {
		return wrap("mkdir", name, syscall.EEXIST)
	}
	if _, err := f.lstat(ctx, name); err == nil {
		return wrap("mkdir", name, syscall.EEXIST)
	} else if !errors.Is(err, syscall.ENOENT) {
		return wrap("mkdir", name, err)
	}
	return wrap("mkdir", name, f.putMarker(ctx, f.dirPrefix(name)))
}

func (f *FS) putMarker(ctx context.Context, key string) error {
	_, err := f.cl.PutObject(ctx, f.cfg.Bucket, key, bytes.NewReader(nil), 0,
		minio.PutObjectOptions{ContentType: "application/x-directory"})
	return err
}

// keepDir gives directory name a marker if it has none, so that removing or
// renaming its last child leaves it in place, as in a file system.
func (f *FS) keepDir(ctx context.Context, name string) error {
	if name == "." || name == "" {
		return nil
	}
	_, ok, err := f.statObject(ctx, f.dirPrefix(name))
	if err != nil || ok {
		return err
	}
	return f.putMarker(ctx, f.dirPrefix(name))
}

// Rmdir removes an empty directory's marker: ENOTEMPTY while any key is
// under it, ENOTDIR for a file, ENOENT for nothing.
func (f *FS) Rmdir(ctx context.Context, name string) error {
	ctx, cancel := f.bound(ctx)
	defer cancel()
	if name == "." || name == "" {
		return wrap("rmdir", name, syscall.EBUSY)
	}
	p := f.dirPrefix(name)
	marker, other := false, false
	err := f.list(ctx, p, 2, func(obj minio.ObjectInfo) bool {
		if obj.Key == p {
			marker = true
			return true
		}
		other = true
		return false
	})
	if err != nil {
		return wrap("rmdir", name, err)
	}
	switch {
	case other:
		return wrap("rmdir", name, syscall.ENOTEMPTY)
	case !marker:
		_, ok, err := f.statObject(ctx, f.key(name))
		if err != nil {
			return wrap("rmdir", name, err)
		}
		if ok {
			return wrap("rmdir", name, syscall.ENOTDIR)
		}
		return wrap("rmdir", name, syscall.ENOENT)
	}
	if err := f.keepDir(ctx, parentOf(name)); err != nil {
		return wrap("rmdir", name, err)
	}
	return wrap("rmdir", name, f.cl.RemoveObject(ctx, f.cfg.Bucket, p, minio.RemoveObjectOptions{}))
}

// Unlink removes the object (ENOENT if there is none, EISDIR for a
// directory). S3 deletes succeed for absent keys, so it looks first.
func (f *FS) Unlink(ctx context.Context, name string) error {
	ctx, cancel := f.bound(ctx)
	defer cancel()
	a, err := f.lstat(ctx, name)
	if err != nil {
		return wrap("unlink", name, err)
	}
	if a.IsDir() {
		return wrap("unlink", name, syscall.EISDIR)
	}
	if err := f.keepDir(ctx, parentOf(name)); err != nil {
		return wrap("unlink", name, err)
	}
	return wrap("unlink", name, f.cl.RemoveObject(ctx, f.cfg.Bucket, f.key(name), minio.RemoveObjectOptions{}))
}

// Rename of a file is a server-side copy (of the version just looked at:
// x-amz-copy-source-if-match) and then a delete of the old key: not atomic;
// a crash between the two leaves both names. Directories are refused with
// EXDEV, which mv(1) and other tools answer by copying and deleting the
// tree file by file. RENAME_EXCHANGE is EINVAL; RENAME_NOREPLACE is
// checked, not atomically.
func (f *FS) Rename(ctx context.Context, oldname, newname string, flags uint32) error {
	ctx, cancel := f.bound(ctx)
	defer cancel()
	const renameNoreplace, renameExchange = 1, 2
	if flags&renameExchange != 0 || flags&^uint32(renameNoreplace|renameExchange) != 0 {
		return wrap("rename", oldname, syscall.EINVAL)
	}
	if oldname == "." || newname == "." {
		return wrap("rename", oldname, syscall.EBUSY)
	}
	src, err := f.lstat(ctx, oldname)
	if err != nil {
		return wrap("rename", oldname, err)
	}
	if src.IsDir() {
		return wrap("rename", oldname, syscall.EXDEV)
	}
	if oldname == newname {
		return nil
	}
	switch dst, err := f.lstat(ctx, newname); {
	case err == nil && dst.IsDir():
		return wrap("rename", newname, syscall.EISDIR)
	case err == nil && flags&renameNoreplace != 0:
		return wrap("rename", newname, syscall.EEXIST)
	case err != nil && !errors.Is(err, syscall.ENOENT):
		return wrap("rename", newname, err)
	}
	oi, ok, err := f.statObject(ctx, f.key(oldname))
	if err != nil {
		return wrap("rename", oldname, err)
	}
	if !ok {
		return wrap("rename", oldname, syscall.ENOENT)
	}
	if err := f.copyObject(ctx, f.key(oldname), f.key(newname), oi); err != nil {
		return wrap("rename", oldname, err)
	}
	if err := f.keepDir(ctx, parentOf(oldname)); err != nil {
		return wrap("rename", oldname, err)
	}
	return wrap("rename", oldname, f.cl.RemoveObject(ctx, f.cfg.Bucket, f.key(oldname), minio.RemoveObjectOptions{}))
}

func (f *FS) copyObject(ctx context.Context, from, to string, oi minio.ObjectInfo) error {
	src := minio.CopySrcOptions{Bucket: f.cfg.Bucket, Object: from, MatchETag: strings.Trim(oi.ETag, `"`)}
	dst := minio.CopyDestOptions{Bucket: f.cfg.Bucket, Object: to}
	var err error
	if oi.Size > maxCopy {
		_, err = f.cl.ComposeObject(ctx, dst, src)
	} else {
		_, err = f.cl.CopyObject(ctx, dst, src)
	}
	return err
}

// SetAttr supports a size change (truncate, as a rewrite of the object);
// mode, owner and times cannot be stored, so they fail with EPERM.
func (f *FS) SetAttr(ctx context.Context, name string, set origin.SetAttr) error {
	if set.Mode != nil || set.Uid != nil || set.Gid != nil || set.Atime != nil || set.Mtime != nil {
		return wrap("setattr", name, errNotSupported)
	}
	if set.Size == nil {
		return nil
	}
	fl, err := f.Open(ctx, name, syscall.O_RDWR)
	if err != nil {
		return err
	}
	if err := fl.Truncate(ctx, *set.Size); err != nil {
		fl.Close()
		return err
	}
	if err := fl.Sync(ctx); err != nil {
		fl.Close()
		return err
	}
	return fl.Close()
}

// Mknod, Symlink and Link: S3 has only objects and prefixes.
func (f *FS) Mknod(ctx context.Context, name string, mode uint32, dev uint64, owner origin.Owner) error {
	return wrap("mknod", name, errNotSupported)
}

func (f *FS) Symlink(ctx context.Context, target, name string, owner origin.Owner) error {
	return wrap("symlink", name, errNotSupported)
}

func (f *FS) Link(ctx context.Context, oldname, newname string) error {
	return wrap("link", newname, errNotSupported)
}

// Readlink: there are no symbolic links, so every name is not one.
func (f *FS) Readlink(ctx context.Context, name string) (string, error) {
	ctx, cancel := f.bound(ctx)
	defer cancel()
	if _, err := f.lstat(ctx, name); err != nil {
		return "", wrap("readlink", name, err)
	}
	return "", wrap("readlink", name, syscall.EINVAL)
}

// Extended attributes are not stored: none to read, none can be set.
func (f *FS) Getxattr(ctx context.Context, name, attr string) ([]byte, error) {
	return nil, wrap("getxattr", name, syscall.ENODATA)
}

func (f *FS) Setxattr(ctx context.Context, name, attr string, data []byte, flags int) error {
	return wrap("setxattr", name, syscall.ENOTSUP)
}

func (f *FS) Listxattr(ctx context.Context, name string) ([]string, error) { return nil, nil }

func (f *FS) Removexattr(ctx context.Context, name, attr string) error {
	return wrap("removexattr", name, syscall.ENODATA)
}

// Statfs reports a large, mostly free file system: S3 has no capacity to
// ask for.
func (f *FS) Statfs(ctx context.Context) (origin.Statfs, error) {
	const blocks = 1 << 40 // 4 PiB in 4 KiB blocks
	return origin.Statfs{Blocks: blocks, Bfree: blocks, Bavail: blocks, Files: 1 << 40, Ffree: 1 << 40,
		Bsize: 4096, Frsize: 4096, NameLen: 1024}, nil
}
