package cache

import (
	"context"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// fakeOrigin is an in-memory origin.FS that counts reads per offset, injects
// errors and latency, and lets tests change files behind the cache's back.
type fakeOrigin struct {
	mu      sync.Mutex
	files   map[string]*fakeData // guarded by mu
	reads   map[string]int       // guarded by mu: "name@off" -> ReadAt calls
	nreads  int                  // guarded by mu
	readLog []fakeRead           // guarded by mu: every ReadAt in call order
	lstats  int                  // guarded by mu
	fstats  int                  // guarded by mu: Stat calls on open files
	ino     uint64               // guarded by mu
	clock   int64                // guarded by mu: ctime source (ns)
	readErr func(name string, off int64) error
	statErr func(name string) error
	delay   time.Duration
	gate    chan struct{} // when set, ReadAt blocks until it is closed
	// staleOnReplace: a file replaced by replace reads ESTALE through
	// handles opened before (NFS); otherwise they keep its old bytes.
	staleOnReplace bool
}

// fakeRead is one logged ReadAt.
type fakeRead struct {
	name string
	off  int64
	n    int // len(p)
}

type fakeData struct {
	data []byte
	attr origin.Attr
}

func newFakeOrigin() *fakeOrigin {
	return &fakeOrigin{files: map[string]*fakeData{}, reads: map[string]int{}, ino: 100, clock: time.Now().UnixNano()}
}

// put creates or rewrites a file (new ctime; mtime as given or now).
func (o *fakeOrigin) put(name string, data []byte) origin.Attr {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clock += 1000
	fd := o.files[name]
	if fd == nil {
		o.ino++
		fd = &fakeData{attr: origin.Attr{Ino: o.ino, Dev: 1, Mode: syscall.S_IFREG | 0o644, Nlink: 1}}
		o.files[name] = fd
	}
	fd.data = append([]byte(nil), data...)
	fd.attr.Size = int64(len(data))
	fd.attr.Mtime = time.Unix(0, o.clock)
	fd.attr.Ctime = time.Unix(0, o.clock)
	return fd.attr
}

// rewriteSameMtime rewrites content in place keeping size and mtime (as
// `touch -d` would restore it); only ctime moves.
func (o *fakeOrigin) rewriteSameMtime(name string, data []byte) origin.Attr {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clock += 1000
	fd := o.files[name]
	fd.data = append([]byte(nil), data...)
	fd.attr.Ctime = time.Unix(0, o.clock)
	return fd.attr
}

// replace puts a new file (new inode and ctime) at name, as a rename over
// it would; files opened before see ESTALE, like an NFS client's handle.
func (o *fakeOrigin) replace(name string, data []byte) origin.Attr {
	o.mu.Lock()
	delete(o.files, name)
	o.mu.Unlock()
	return o.put(name, data)
}

func (o *fakeOrigin) remove(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.files, name)
}

func (o *fakeOrigin) readsAt(name string, off int64) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reads[fmt.Sprintf("%s@%d", name, off)]
}

func (o *fakeOrigin) reads0() []fakeRead {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]fakeRead(nil), o.readLog...)
}

func (o *fakeOrigin) totalReads() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nreads
}

func (o *fakeOrigin) attr(name string) origin.Attr {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.files[name].attr
}

func (o *fakeOrigin) Lstat(ctx context.Context, name string) (origin.Attr, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lstats++
	if o.statErr != nil {
		if err := o.statErr(name); err != nil {
			return origin.Attr{}, err
		}
	}
	if fd, ok := o.files[name]; ok {
		return fd.attr, nil
	}
	for n := range o.files {
		if name == "." || strings.HasPrefix(n, name+"/") {
			return origin.Attr{Mode: syscall.S_IFDIR | 0o755, Ino: 1, Dev: 1}, nil
		}
	}
	return origin.Attr{}, fmt.Errorf("lstat %s: %w", name, syscall.ENOENT)
}

func (o *fakeOrigin) ReadDir(ctx context.Context, name string) ([]origin.DirEntry, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]uint32{}
	for n := range o.files {
		rel := n
		if name != "." {
			if !strings.HasPrefix(n, name+"/") {
				continue
			}
			rel = n[len(name)+1:]
		}
		if i := strings.IndexByte(rel, '/'); i >= 0 {
			seen[rel[:i]] = syscall.S_IFDIR
		} else {
			seen[rel] = syscall.S_IFREG
		}
	}
	if len(seen) == 0 && name != "." {
		return nil, fmt.Errorf("readdir %s: %w", name, syscall.ENOENT)
	}
	var out []origin.DirEntry
	for n, m := range seen {
		out = append(out, origin.DirEntry{Name: n, Mode: m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (o *fakeOrigin) Open(ctx context.Context, name string, flag int) (origin.File, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fd, ok := o.files[name]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", name, syscall.ENOENT)
	}
	return &fakeFile{o: o, name: name, fd: fd}, nil
}

var errNotImpl = syscall.ENOSYS

func (o *fakeOrigin) Create(context.Context, string, int, uint32, origin.Owner) (origin.File, error) {
	return nil, errNotImpl
}
func (o *fakeOrigin) Mkdir(context.Context, string, uint32, origin.Owner) error { return errNotImpl }
func (o *fakeOrigin) Mknod(context.Context, string, uint32, uint64, origin.Owner) error {
	return errNotImpl
}
func (o *fakeOrigin) Symlink(context.Context, string, string, origin.Owner) error { return errNotImpl }
func (o *fakeOrigin) Readlink(context.Context, string) (string, error)            { return "", errNotImpl }
func (o *fakeOrigin) Link(context.Context, string, string) error                  { return errNotImpl }
func (o *fakeOrigin) Unlink(context.Context, string) error                        { return errNotImpl }
func (o *fakeOrigin) Rmdir(context.Context, string) error                         { return errNotImpl }
func (o *fakeOrigin) Rename(context.Context, string, string, uint32) error        { return errNotImpl }
func (o *fakeOrigin) SetAttr(context.Context, string, origin.SetAttr) error       { return errNotImpl }
func (o *fakeOrigin) Getxattr(context.Context, string, string) ([]byte, error) {
	return nil, errNotImpl
}
func (o *fakeOrigin) Setxattr(context.Context, string, string, []byte, int) error { return errNotImpl }
func (o *fakeOrigin) Listxattr(context.Context, string) ([]string, error)         { return nil, errNotImpl }
func (o *fakeOrigin) Removexattr(context.Context, string, string) error           { return errNotImpl }
func (o *fakeOrigin) Statfs(context.Context) (origin.Statfs, error)               { return origin.Statfs{}, nil }
func (o *fakeOrigin) String() string                                              { return "fake:" }
func (o *fakeOrigin) Close() error                                                { return nil }

// fakeFile reads the content current at each call (like a path origin's
// file after an in-place rewrite).
type fakeFile struct {
	o    *fakeOrigin
	name string
	fd   *fakeData
}

func (f *fakeFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	o := f.o
	o.mu.Lock()
	o.reads[fmt.Sprintf("%s@%d", f.name, off)]++
	o.nreads++
	o.readLog = append(o.readLog, fakeRead{name: f.name, off: off, n: len(p)})
	rerr, delay, gate := o.readErr, o.delay, o.gate
	o.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if rerr != nil {
		if err := rerr(f.name, off); err != nil {
			return 0, err
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.files[f.name] != f.fd && o.staleOnReplace {
		return 0, fmt.Errorf("read %s: %w", f.name, syscall.ESTALE)
	}
	data := f.fd.data
	if off >= int64(len(data)) {
		return 0, io.EOF
	}
	n := copy(p, data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *fakeFile) Stat(ctx context.Context) (origin.Attr, error) {
	f.o.mu.Lock()
	defer f.o.mu.Unlock()
	f.o.fstats++
	if f.o.files[f.name] != f.fd && f.o.staleOnReplace {
		return origin.Attr{}, fmt.Errorf("fstat %s: %w", f.name, syscall.ESTALE)
	}
	return f.fd.attr, nil
}

func (f *fakeFile) WriteAt(context.Context, []byte, int64) (int, error) { return 0, errNotImpl }
func (f *fakeFile) Truncate(context.Context, int64) error               { return errNotImpl }
func (f *fakeFile) Sync(context.Context) error                          { return nil }
func (f *fakeFile) Close() error                                        { return nil }

var _ origin.FS = (*fakeOrigin)(nil)

func cleanJoin(a, b string) string { return path.Join(a, b) }

// witnessOrigin is a fakeOrigin whose files vouch for the attributes their
// reads returned (origin.AttrWitness), as NFS files do.
type witnessOrigin struct{ *fakeOrigin }

func (w witnessOrigin) Open(ctx context.Context, name string, flag int) (origin.File, error) {
	f, err := w.fakeOrigin.Open(ctx, name, flag)
	if err != nil {
		return nil, err
	}
	ff := f.(*fakeFile)
	wf := &witnessFile{fakeFile: ff}
	wf.saw(ff.fd.attr)
	return wf, nil
}

type witnessFile struct {
	*fakeFile
	mu    sync.Mutex
	first origin.Attr // guarded by mu
	set   bool        // guarded by mu
	mixed bool        // guarded by mu
}

func (f *witnessFile) saw(a origin.Attr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case !f.set:
		f.first, f.set = a, true
	case a.Fingerprint() != f.first.Fingerprint():
		f.mixed = true
	}
}

func (f *witnessFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := f.fakeFile.ReadAt(ctx, p, off)
	f.o.mu.Lock()
	a := f.fd.attr
	f.o.mu.Unlock()
	f.saw(a) // the attributes after the read, as NFS post-op attributes
	return n, err
}

func (f *witnessFile) Witnessed() (origin.Attr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first, f.set && !f.mixed
}

// reuseIno puts a new file at name with the old one's inode number, size and
// times, only its generation differing: a file system that gave the deleted
// file's number to the next file within one tick of its clock.
func (o *fakeOrigin) reuseIno(name string, data []byte) origin.Attr {
	o.mu.Lock()
	defer o.mu.Unlock()
	old := o.files[name]
	fd := &fakeData{attr: old.attr, data: append([]byte(nil), data...)}
	fd.attr.Gen = old.attr.Gen + 1
	fd.attr.Size = int64(len(data))
	o.files[name] = fd
	return fd.attr
}
