package fusefs

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
)

// requireFUSE skips when this machine cannot mount FUSE at all.
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fusefs tests mount with the mount syscall and need root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine")
	}
}

// mountT mounts a view of originDir (with cache c, may be nil) on a fresh
// mountpoint and unmounts it at cleanup, even when the test fails.
func mountT(t testing.TB, originDir string, c Cache, opts Options) (*View, string) {
	t.Helper()
	requireFUSE(t)
	org, err := origin.NewPath(originDir)
	if err != nil {
		t.Fatal(err)
	}
	return mountOrigin(t, org, org, c, opts)
}

// mountOrigin mounts org (closing closer at cleanup) like mountT.
func mountOrigin(t testing.TB, org origin.FS, closer io.Closer, c Cache, opts Options) (*View, string) {
	t.Helper()
	if opts.PassthroughSettle == 0 {
		// Tests write a file and read it warm at once; TestPassthroughSettle
		// tests the wait itself.
		opts.PassthroughSettle = -1
	}
	mp, err := os.MkdirTemp("", "efs-mnt-")
	if err != nil {
		t.Fatal(err)
	}
	v, err := Mount(context.Background(), mp, org, c, opts)
	if err != nil {
		closer.Close()
		os.Remove(mp)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := v.Unmount(ctx); err != nil {
			t.Errorf("unmount %s: %v", mp, err)
		}
		closer.Close()
		os.Remove(mp)
	})
	return v, mp
}

// fakeCache is a whole-file cache in a temp dir: OpenFile copies the origin
// file once per fingerprint and serves it; it reports Changed when the
// fingerprint moved, and offers the copy as a passthrough file when
// passthrough is set.
type fakeCache struct {
	dir         string
	org         origin.FS
	passthrough bool

	mu    sync.Mutex
	files map[string]fakeEntry // guarded by mu

	opens, ptOpens, invalidations, renames atomic.Int64
	changed                                atomic.Int64
}

type fakeEntry struct {
	fp        origin.Fingerprint
	attr      origin.Attr
	path      string
	validated time.Time
}

func newFakeCache(t testing.TB, org origin.FS) *fakeCache {
	return &fakeCache{dir: t.TempDir(), org: org, files: map[string]fakeEntry{}}
}

func (c *fakeCache) Cacheable(name string) bool { return true }

func (c *fakeCache) OpenFile(ctx context.Context, name string, attr origin.Attr) (cache.Handle, cache.OpenResult, error) {
	c.opens.Add(1)
	c.mu.Lock()
	e, ok := c.files[name]
	c.mu.Unlock()
	var res cache.OpenResult
	fp := attr.Fingerprint()
	if !ok || e.fp != fp {
		if ok {
			res.Changed = true
			c.changed.Add(1)
		}
		src, err := c.org.Open(ctx, name, os.O_RDONLY)
		if err != nil {
			return nil, res, err
		}
		dst, err := os.CreateTemp(c.dir, "efs-fake-")
		if err != nil {
			src.Close()
			return nil, res, err
		}
		_, err = io.Copy(dst, io.NewSectionReader(readerAt{ctx, src}, 0, attr.Size))
		src.Close()
		dst.Close()
		if err != nil {
			return nil, res, err
		}
		e = fakeEntry{fp: fp, attr: attr, path: dst.Name()}
	}
	e.validated = time.Now()
	c.mu.Lock()
	c.files[name] = e
	c.mu.Unlock()
	h, err := c.open(e.path)
	return h, res, err
}

func (c *fakeCache) open(p string) (cache.Handle, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	return &fakeHandle{f: f, pt: c.passthrough}, nil
}

func (c *fakeCache) Invalidate(name string) {
	c.invalidations.Add(1)
	c.mu.Lock()
	delete(c.files, name)
	c.mu.Unlock()
}

func (c *fakeCache) Rename(oldname, newname string) {
	c.renames.Add(1)
	c.mu.Lock()
	delete(c.files, oldname)
	delete(c.files, newname)
	c.mu.Unlock()
}

func (c *fakeCache) NotePassthroughOpen(int64) { c.ptOpens.Add(1) }

func (c *fakeCache) LastKnown(name string) (origin.Attr, time.Time, bool, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.files[name]
	return e.attr, e.validated, ok, ok
}

func (c *fakeCache) OpenOffline(ctx context.Context, name string, grace time.Duration) (cache.Handle, origin.Attr, error) {
	c.mu.Lock()
	e, ok := c.files[name]
	c.mu.Unlock()
	if !ok || time.Since(e.validated) > grace {
		return nil, origin.Attr{}, fmt.Errorf("open offline %s: %w", name, cache.ErrNotCached)
	}
	h, err := c.open(e.path)
	return h, e.attr, err
}

var _ OfflineCache = (*fakeCache)(nil)

type readerAt struct {
	ctx context.Context
	f   origin.File
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(r.ctx, p, off) }

type fakeHandle struct {
	f  *os.File
	pt bool
}

func (h *fakeHandle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return h.f.ReadAt(p, off)
}

func (h *fakeHandle) PassthroughFile() *os.File {
	if h.pt {
		return h.f
	}
	return nil
}

func (h *fakeHandle) Close() error { return h.f.Close() }

func writeFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// newFakeCacheDir is a fake cache over a path origin at dir.
func newFakeCacheDir(t testing.TB, dir string) *fakeCache {
	t.Helper()
	org, err := origin.NewPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { org.Close() })
	return newFakeCache(t, org)
}
