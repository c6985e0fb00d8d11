package fusefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

func TestReadYourWrites(t *testing.T) {
	for _, withCache := range []bool{false, true} {
		t.Run(map[bool]string{false: "nocache", true: "cache"}[withCache], func(t *testing.T) {
			dir := t.TempDir()
			var c Cache
			if withCache {
				org, _ := origin.NewPath(dir)
				defer org.Close()
				c = newFakeCache(t, org)
			}
			_, mp := mountT(t, dir, c, Options{})
			p := filepath.Join(mp, "f")
			for i, content := range []string{"first version", "second", "third version, longer than both"} {
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(p)
				if err != nil || string(got) != content {
					t.Fatalf("round %d: read %q %v, want %q", i, got, err, content)
				}
				// The origin has it before close returned (write-through).
				if o, _ := os.ReadFile(filepath.Join(dir, "f")); string(o) != content {
					t.Fatalf("origin has %q, want %q", o, content)
				}
			}
			if fc, ok := c.(*fakeCache); ok && fc.invalidations.Load() == 0 {
				t.Fatal("writes did not invalidate the cache")
			}
		})
	}
}

// A change made directly on the origin with the same size, in the same
// second, and the old mtime restored, is seen at the next open.
func TestForeignModificationSeen(t *testing.T) {
	for _, pt := range []bool{false, true} {
		t.Run(map[bool]string{false: "reads", true: "passthrough"}[pt], func(t *testing.T) {
			dir := t.TempDir()
			org, _ := origin.NewPath(dir)
			defer org.Close()
			fc := newFakeCache(t, org)
			fc.passthrough = pt
			v, mp := mountT(t, dir, fc, Options{})
			op := filepath.Join(dir, "data")
			writeFile(t, op, []byte("AAAAAAAAAAAAAAAA"))
			mt := time.Unix(1700000000, 123456789)
			if err := os.Chtimes(op, mt, mt); err != nil {
				t.Fatal(err)
			}
			mpath := filepath.Join(mp, "data")
			if got, _ := os.ReadFile(mpath); string(got) != "AAAAAAAAAAAAAAAA" {
				t.Fatalf("first read %q", got)
			}
			// Read again: warm (page cache may be kept).
			if got, _ := os.ReadFile(mpath); string(got) != "AAAAAAAAAAAAAAAA" {
				t.Fatalf("second read %q", got)
			}
			// Rewrite in place: same size, old mtime restored.
			f, err := os.OpenFile(op, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("BBBBBBBBBBBBBBBB"), 0)
			f.Close()
			if err := os.Chtimes(op, mt, mt); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(mpath); string(got) != "BBBBBBBBBBBBBBBB" {
				t.Fatalf("after foreign rewrite read %q, want B...", got)
			}
			// The change is noticed by the cache at the open, or, when the
			// release of the previous passthrough open has not reached the
			// daemon yet (it is asynchronous), by bringing that open's
			// backing file up to it (the cache entry is then invalidated
			// and fetched anew).
			if fc.changed.Load() == 0 && v.st.backingSyncs.Load() == 0 {
				t.Fatalf("the change was noticed neither by the cache nor by a backing sync (%d opens, %d invalidations)",
					fc.opens.Load(), fc.invalidations.Load())
			}
			// A foreign change of size is seen too.
			writeFile(t, op, []byte("CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"))
			if got, _ := os.ReadFile(mpath); string(got) != "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC" {
				t.Fatalf("after growth read %q", got)
			}
		})
	}
}

// A warm file is served with kernel passthrough: reads never reach the
// daemon, and the cache counts passthrough opens.
func TestPassthroughWarmFile(t *testing.T) {
	dir := t.TempDir()
	org, _ := origin.NewPath(dir)
	defer org.Close()
	fc := newFakeCache(t, org)
	fc.passthrough = true
	content := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	writeFile(t, filepath.Join(dir, "warm"), content)
	v, mp := mountT(t, dir, fc, Options{})
	if !v.Passthrough() {
		t.Fatal("passthrough not available: the kernel (6.9 or later) supports it for root")
	}
	p := filepath.Join(mp, "warm")
	// Two concurrent opens of one inode share the backing file.
	f1, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []*os.File{f1, f2} {
		buf := make([]byte, len(content))
		if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, content) {
			t.Fatalf("passthrough read: %v", err)
		}
	}
	f1.Close()
	f2.Close()
	if fc.ptOpens.Load() < 2 {
		t.Fatalf("passthrough opens %d, want >= 2", fc.ptOpens.Load())
	}
	if !v.Passthrough() {
		t.Fatal("reads reached the daemon on a passthrough handle: passthrough not in effect")
	}
	// A writer does not get the cached backing file, and a changed file is
	// not served from the old one.
	if err := os.WriteFile(p, []byte("new content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "new content" {
		fi, serr := os.Stat(p)
		again, aerr := os.ReadFile(p)
		t.Fatalf("after write: %q %v; stat %v %v; again %q %v; pt opens %d", got, err, fi.Size(), serr, again, aerr, fc.ptOpens.Load())
	}
	if o, _ := os.ReadFile(filepath.Join(dir, "warm")); string(o) != "new content" {
		t.Fatalf("origin after write: %q", o)
	}
}

// The cache failing never fails a read.
func TestCacheFailureFallsBack(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), []byte("from the origin"))
	org, _ := origin.NewPath(dir)
	defer org.Close()
	fc := newFakeCache(t, org)
	fc.dir = filepath.Join(dir, "no-such-dir") // CreateTemp fails
	_, mp := mountT(t, dir, fc, Options{})
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	if err != nil || string(got) != "from the origin" {
		t.Fatalf("read %q %v", got, err)
	}
	if fc.opens.Load() == 0 {
		t.Fatal("cache was not asked")
	}
}

// troubleFS makes Lstat/Open/ReadDir fail with EIO while down is set.
type troubleFS struct {
	origin.FS
	down bool
}

func (f *troubleFS) Lstat(ctx context.Context, name string) (origin.Attr, error) {
	if f.down {
		return origin.Attr{}, &os.PathError{Op: "lstat", Path: name, Err: syscall.EIO}
	}
	return f.FS.Lstat(ctx, name)
}

func (f *troubleFS) Open(ctx context.Context, name string, flag int) (origin.File, error) {
	if f.down {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EIO}
	}
	return f.FS.Open(ctx, name, flag)
}

// Offline: with grace, cached files stay readable while the origin is in
// trouble; uncached ones and writes fail with EIO; without grace all fail.
func TestOfflineGrace(t *testing.T) {
	requireFUSE(t)
	for _, grace := range []time.Duration{0, time.Minute} {
		t.Run(grace.String(), func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "d", "cached"), []byte("cached bytes"))
			writeFile(t, filepath.Join(dir, "d", "cold"), []byte("never read"))
			po, _ := origin.NewPath(dir)
			defer po.Close()
			tf := &troubleFS{FS: po}
			fc := newFakeCache(t, po)
			mp, err := os.MkdirTemp("", "efs-mnt-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.Remove(mp)
			to := time.Millisecond // tiny kernel timeouts, so the origin is asked
			v, err := Mount(context.Background(), mp, tf, fc, Options{OfflineGrace: grace, EntryTimeout: to, AttrTimeout: to})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { v.Unmount(context.Background()) })
			if got, err := os.ReadFile(filepath.Join(mp, "d", "cached")); err != nil || string(got) != "cached bytes" {
				t.Fatalf("online read %q %v", got, err)
			}
			tf.down = true
			time.Sleep(20 * time.Millisecond)
			got, err := os.ReadFile(filepath.Join(mp, "d", "cached"))
			if grace > 0 {
				if err != nil || string(got) != "cached bytes" {
					t.Fatalf("offline read of cached file: %q %v", got, err)
				}
			} else if !errors.Is(err, syscall.EIO) {
				t.Fatalf("no grace: read while down: %q %v, want EIO", got, err)
			}
			if _, err := os.ReadFile(filepath.Join(mp, "d", "cold")); !errors.Is(err, syscall.EIO) {
				t.Fatalf("uncached read while down: %v, want EIO", err)
			}
			if err := os.WriteFile(filepath.Join(mp, "d", "cached"), []byte("x"), 0o644); !errors.Is(err, syscall.EIO) {
				t.Fatalf("write while down: %v, want EIO", err)
			}
			tf.down = false
			time.Sleep(20 * time.Millisecond)
			if got, err := os.ReadFile(filepath.Join(mp, "d", "cold")); err != nil || string(got) != "never read" {
				t.Fatalf("after recovery: %q %v", got, err)
			}
		})
	}
}

func TestUnmountTwiceAndWait(t *testing.T) {
	dir := t.TempDir()
	v, mp := mountT(t, dir, nil, Options{})
	if err := v.Unmount(context.Background()); err != nil {
		t.Fatal(err)
	}
	v.Wait()
	if err := v.Unmount(context.Background()); err != nil {
		t.Fatalf("second unmount: %v", err)
	}
	var st, pst syscall.Stat_t
	syscall.Stat(mp, &st)
	syscall.Stat(filepath.Dir(mp), &pst)
	if st.Dev != pst.Dev {
		t.Fatal("still mounted")
	}
}

// A busy mount (a process holds a file open) is still taken down, lazily.
func TestUnmountBusy(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), []byte("x"))
	v, mp := mountT(t, dir, nil, Options{})
	f, err := os.Open(filepath.Join(mp, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := v.Unmount(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Done():
	default:
		t.Fatal("server still running after Unmount")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("unmount took %v", d)
	}
}

// Read-only opens tell the kernel not to send FLUSH at close, also when the
// page cache is kept (an unchanged file opened again); writable ones do.
func TestReadOnlyOpensSkipFlush(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), []byte("0123456789"))
	v, mp := mountT(t, dir, nil, Options{})
	for i := range 3 {
		if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "0123456789" {
			t.Fatalf("read %d: %q %v", i, b, err)
		}
	}
	if n := v.st.flushes.Load(); n != 0 {
		t.Fatalf("%d FLUSH requests for read-only opens, want 0", n)
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v.st.flushes.Load() == 0 {
		t.Fatal("no FLUSH for a writable open: written data would not reach the origin at close")
	}
}
