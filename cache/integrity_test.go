package cache

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// cacheFile reads name fully through s and waits until it is indexed.
func cacheFile(t *testing.T, s *Store, o *fakeOrigin, name string) {
	t.Helper()
	h, _ := mustOpen(t, s, o, name)
	readAll(t, h, o.attr(name).Size)
	waitFor(t, "file cached", func() bool { return s.CachedBytes(name) == o.attr(name).Size })
	h.Close()
}

func onlyDataFile(t *testing.T, dir string) string {
	t.Helper()
	var files []string
	_ = filepath.Walk(filepath.Join(dir, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 1 {
		t.Fatalf("data files: %v", files)
	}
	return files[0]
}

// Crash states that kill -9 can leave behind (and disk damage): on reopen
// the cache serves the origin's bytes, never damaged ones.
func TestCrashStatesReopenConsistent(t *testing.T) {
	data := pattern(4*testChunk+100, 7)
	cases := []struct {
		name        string
		damage      func(t *testing.T, dir string)
		wantCksum   bool // the damage must be caught by a checksum
		wantRefetch bool
	}{
		{"chunk bytes corrupted", func(t *testing.T, dir string) {
			f, err := os.OpenFile(onlyDataFile(t, dir), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("garbage!"), testChunk+10)
			f.Close()
		}, true, true},
		{"data file truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(onlyDataFile(t, dir), testChunk/2); err != nil {
				t.Fatal(err)
			}
		}, true, true},
		{"data file missing", func(t *testing.T, dir string) {
			if err := os.Remove(onlyDataFile(t, dir)); err != nil {
				t.Fatal(err)
			}
		}, false, true},
		{"bytes written without index entry", func(t *testing.T, dir string) {
			// A chunk written after the last commit, never indexed: harmless.
			f, err := os.OpenFile(onlyDataFile(t, dir), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(pattern(testChunk, 99), 4*testChunk) // the tail chunk, not yet read
			f.Close()
		}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := newFakeOrigin()
			o.put("f", data)
			cfg := testConfig(t)
			cfg.ReadAhead = -1
			s := openStore(t, o, cfg)
			// Cache all but the last chunk.
			h, _ := mustOpen(t, s, o, "f")
			buf := make([]byte, 4*testChunk)
			if _, err := h.ReadAt(context.Background(), buf, 0); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "4 chunks cached", func() bool { return s.CachedBytes("f") == 4*testChunk })
			h.Close()
			s.Close()
			c.damage(t, cfg.Dir)
			before := o.totalReads()
			s2 := openStore(t, o, cfg)
			h2, _ := mustOpen(t, s2, o, "f")
			mustEqual(t, "read after damage", readAll(t, h2, int64(len(data))), data)
			st := s2.Stats()
			if c.wantCksum && st.ChecksumFailures == 0 {
				t.Fatalf("damage not caught by checksum: %+v", st)
			}
			if !c.wantCksum && st.ChecksumFailures != 0 {
				t.Fatalf("unexpected checksum failures: %+v", st)
			}
			refetched := o.totalReads() - before
			if c.wantRefetch && refetched < 2 {
				t.Fatalf("damaged chunks not refetched (%d origin reads)", refetched)
			}
			if !c.wantRefetch && refetched != 1 {
				t.Fatalf("origin reads %d, want 1 (the unindexed tail)", refetched)
			}
			waitFor(t, "whole file cached again", func() bool { return s2.CachedBytes("f") == int64(len(data)) })
			// Indexed first, then marked verified: the passthrough file
			// follows the index by a moment.
			waitFor(t, "passthrough file after repair", func() bool { return h2.PassthroughFile() != nil })
		})
	}
}

// A damaged chunk is verified before a passthrough file is handed out:
// PassthroughFile refuses a file with a bad chunk.
func TestPassthroughVerifiesWholeFile(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(3*testChunk, 8)
	o.put("f", data)
	cfg := testConfig(t)
	s := openStore(t, o, cfg)
	cacheFile(t, s, o, "f")
	s.Close()
	f, _ := os.OpenFile(onlyDataFile(t, cfg.Dir), os.O_WRONLY, 0)
	f.WriteAt([]byte{1, 2, 3}, 2*testChunk+5)
	f.Close()
	s2 := openStore(t, o, cfg)
	h, _ := mustOpen(t, s2, o, "f")
	if pt := h.PassthroughFile(); pt != nil {
		t.Fatal("passthrough handed out over a corrupt chunk")
	}
	if s2.Stats().ChecksumFailures != 1 {
		t.Fatalf("checksum failures %d", s2.Stats().ChecksumFailures)
	}
	mustEqual(t, "read", readAll(t, h, int64(len(data))), data)
}

// An unreadable index is moved aside and rebuilt; the store opens and
// serves reads, and reports the condition.
func TestCorruptIndexRebuilt(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(2*testChunk, 9)
	o.put("f", data)
	cfg := testConfig(t)
	s := openStore(t, o, cfg)
	cacheFile(t, s, o, "f")
	s.Close()
	if err := os.WriteFile(filepath.Join(cfg.Dir, "index", "MANIFEST"), []byte("not a manifest"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, o, cfg)
	st := s2.Stats()
	if st.Errors == 0 || st.LastError == "" || st.Degraded {
		t.Fatalf("rebuilt index not reported (or still degraded): %+v", st)
	}
	h, _ := mustOpen(t, s2, o, "f")
	mustEqual(t, "read after rebuild", readAll(t, h, int64(len(data))), data)
	waitFor(t, "caching again", func() bool { return s2.CachedBytes("f") == int64(len(data)) })
}

// kill -9 of a process filling the cache, at several moments, leaves a
// cache that a new process reads correctly.
func TestKill9MidFetch(t *testing.T) {
	if os.Getenv("ECACHE_CRASH_CHILD") != "" {
		crashChild()
		return
	}
	root := t.TempDir()
	data := pattern(48*testChunk, 10)
	if err := os.WriteFile(filepath.Join(root, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	var sawCached int64
	for i, d := range []time.Duration{5 * time.Millisecond, 40 * time.Millisecond, 150 * time.Millisecond} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9MidFetch$")
		cmd.Env = append(os.Environ(), "ECACHE_CRASH_CHILD=1", "ECACHE_ORIGIN="+root, "ECACHE_DIR="+cfg.Dir)
		ready := filepath.Join(root, "ready")
		os.Remove(ready)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "child ready", func() bool { _, err := os.Stat(ready); return err == nil })
		time.Sleep(d)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		o := newOSOrigin(root)
		s, err := Open(context.Background(), o, cfg)
		if err != nil {
			t.Fatalf("reopen after kill %d: %v", i, err)
		}
		sawCached += s.CachedBytes("big")
		attr, _ := o.Lstat(context.Background(), "big")
		h, _, err := s.OpenFile(context.Background(), "big", attr)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "read after kill -9", readAll(t, h, int64(len(data))), data)
		h.Close()
		_ = s.Evict(context.Background(), "big") // the next child starts cold
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if sawCached == 0 {
		t.Fatal("the killed processes never left cached chunks: the test proves nothing")
	}
}

// crashChild reads the origin's file through a cache until killed.
func crashChild() {
	o := newOSOrigin(os.Getenv("ECACHE_ORIGIN"))
	s, err := Open(context.Background(), o, Config{Dir: os.Getenv("ECACHE_DIR"), ChunkSize: testChunk, MaxBytes: 1 << 30})
	if err != nil {
		os.Exit(2)
	}
	os.WriteFile(filepath.Join(os.Getenv("ECACHE_ORIGIN"), "ready"), nil, 0o644)
	for {
		attr, _ := o.Lstat(context.Background(), "big")
		h, _, err := s.OpenFile(context.Background(), "big", attr)
		if err != nil {
			os.Exit(3)
		}
		buf := make([]byte, 32<<10)
		for off := int64(0); off < attr.Size; off += int64(len(buf)) {
			_, _ = h.ReadAt(context.Background(), buf, off)
			time.Sleep(time.Millisecond) // a slow reader: the kill lands mid-file
		}
		h.Close()
	}
}
