package cache

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Disk errors on the cache (ENOSPC, EIO) never fail a read; they show in
// Stats, are logged once per condition, and the cache recovers.
func TestDiskErrorsFallBackAndRecover(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EIO} {
		t.Run(errno.Error(), func(t *testing.T) {
			o := newFakeOrigin()
			data := pattern(6*testChunk, 50)
			o.put("f", data)
			cfg := testConfig(t)
			logs := &countHandler{}
			cfg.Logger = slog.New(logs)
			s := openStore(t, o, cfg)
			var failing = true
			s.writeData = func(f *os.File, p []byte, off int64) (int, error) {
				if failing {
					return 0, errno
				}
				return f.WriteAt(p, off)
			}
			h, _ := mustOpen(t, s, o, "f")
			for range 3 {
				mustEqual(t, "read with failing disk", readAll(t, h, int64(len(data))), data)
			}
			// The chunks are written behind the reads: the failure shows once
			// those writes ran.
			waitFor(t, "the disk error in Stats and the log", func() bool { return s.Stats().Errors > 0 && logs.warns.Load() > 0 })
			st := s.Stats()
			if st.LastError == "" || !st.Degraded || st.CachedBytes != 0 {
				t.Fatalf("stats %+v", st)
			}
			if n := logs.warns.Load(); n != 1 {
				t.Fatalf("%d warnings logged, want 1 per condition", n)
			}
			failing = false
			s.disk.backoff.Store(0)
			mustEqual(t, "read after recovery", readAll(t, h, int64(len(data))), data)
			waitFor(t, "caching resumed", func() bool {
				if s.CachedBytes("f") == int64(len(data)) {
					return true
				}
				// A write still failing after the reset armed the backoff
				// again: the next read caches.
				s.disk.backoff.Store(0)
				mustEqual(t, "read after recovery", readAll(t, h, int64(len(data))), data)
				return s.CachedBytes("f") == int64(len(data))
			})
			if s.Stats().Degraded {
				t.Fatal("still degraded after recovery")
			}
		})
	}
}

// A cache directory that cannot be created: Open still succeeds and reads
// go to the origin.
func TestUnusableCacheDir(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(2*testChunk, 51)
	o.put("f", data)
	cfg := testConfig(t)
	blocker := filepath.Join(cfg.Dir, "file")
	os.WriteFile(blocker, nil, 0o600)
	cfg.Dir = filepath.Join(blocker, "cache")
	s := openStore(t, o, cfg)
	h, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "read without a cache dir", readAll(t, h, int64(len(data))), data)
	st := s.Stats()
	if !st.Degraded || st.Errors == 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Warm(context.Background(), "f", nil); err == nil {
		t.Fatal("Warm claimed success without a cache")
	}
	if l, err := s.List(context.Background(), "."); err != nil || len(l) != 0 {
		t.Fatal(l, err)
	}
}

// A real full file system (tmpfs): reads succeed while it is full, and the
// cache fills again when space returns.
func TestTmpfsFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting tmpfs needs root")
	}
	mnt := filepath.Join(t.TempDir(), "ecache-tmpfs")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "ecache-tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	o := newFakeOrigin()
	data := pattern(40*testChunk, 52)
	o.put("f", data)
	cfg := testConfig(t)
	cfg.Dir = filepath.Join(mnt, "cache")
	s := openStore(t, o, cfg)
	// Ballast leaves about 512 KiB free: below the index's reserve.
	ballast := filepath.Join(mnt, "ballast")
	var st syscall.Statfs_t
	syscall.Statfs(mnt, &st)
	free := int64(st.Bavail) * st.Bsize
	if err := os.WriteFile(ballast, make([]byte, free-512<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	h, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "read with a full disk", readAll(t, h, int64(len(data))), data)
	// The chunks are written behind the reads: the full disk shows once
	// those writes ran.
	waitFor(t, "the full disk reported", func() bool {
		st := s.Stats()
		return st.Errors > 0 && st.Degraded
	})
	os.Remove(ballast)
	s.disk.backoff.Store(0)
	s.disk.freeAt.Store(0)
	h2, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "read after space returned", readAll(t, h2, int64(len(data))), data)
	waitFor(t, "cache filled again", func() bool { return s.CachedBytes("f") > 0 })
	time.Sleep(10 * time.Millisecond)
}
