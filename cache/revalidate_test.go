package cache

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// A same-size rewrite with the old mtime restored is caught at open (ctime
// moved): the content is dropped, Changed is reported, new bytes served.
func TestOpenDetectsSameSizeRewrite(t *testing.T) {
	o := newFakeOrigin()
	v1 := pattern(3*testChunk, 11)
	o.put("f", v1)
	s := openStore(t, o, testConfig(t))
	cacheFile(t, s, o, "f")
	v2 := pattern(3*testChunk, 12)
	a := o.rewriteSameMtime("f", v2)
	if a.Size != int64(len(v1)) {
		t.Fatal("test setup: size changed")
	}
	h, res := mustOpen(t, s, o, "f")
	if !res.Changed {
		t.Fatal("Changed not reported")
	}
	mustEqual(t, "after rewrite", readAll(t, h, a.Size), v2)
	if st := s.Stats(); st.Invalidations != 1 {
		t.Fatalf("invalidations %d", st.Invalidations)
	}
	waitFor(t, "new version cached", func() bool { return s.CachedBytes("f") == a.Size })
	if s.Stats().CachedBytes != a.Size {
		t.Fatalf("old chunks still counted: %+v", s.Stats())
	}
}

// An open handle revalidates after cfg.Revalidate and never serves the old
// bytes once the change is seen.
func TestOpenHandleRevalidates(t *testing.T) {
	o := newFakeOrigin()
	v1 := pattern(2*testChunk, 13)
	o.put("f", v1)
	cfg := testConfig(t)
	cfg.Revalidate = 30 * time.Millisecond
	s := openStore(t, o, cfg)
	h, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "v1", readAll(t, h, int64(len(v1))), v1)
	waitFor(t, "cached", func() bool { return s.CachedBytes("f") == int64(len(v1)) })
	v2 := pattern(2*testChunk, 14)
	o.rewriteSameMtime("f", v2)
	time.Sleep(40 * time.Millisecond)
	mustEqual(t, "v2 through the same handle", readAll(t, h, int64(len(v2))), v2)
	if st := s.Stats(); st.Invalidations != 1 || st.Revalidations == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A file that changes while a chunk is being fetched: the fetched bytes are
// not indexed under the old fingerprint.
func TestChangeDuringFetchNotIndexed(t *testing.T) {
	o := newFakeOrigin()
	v1 := pattern(testChunk, 15)
	o.put("f", v1)
	cfg := testConfig(t)
	cfg.ReadAhead = -1
	s := openStore(t, o, cfg)
	h, _ := mustOpen(t, s, o, "f")
	v2 := pattern(testChunk, 16)
	o.readErr = func(name string, off int64) error {
		o.readErr = nil
		o.rewriteSameMtime("f", v2) // changes between open and read
		return nil
	}
	buf := make([]byte, 100)
	if _, err := h.ReadAt(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if b := s.CachedBytes("f"); b != 0 {
		t.Fatalf("chunk fetched after a change was indexed under the old fingerprint (%d bytes)", b)
	}
	h2, res := mustOpen(t, s, o, "f")
	if !res.Changed {
		t.Fatal("change not reported")
	}
	mustEqual(t, "v2", readAll(t, h2, int64(len(v2))), v2)
}

// Invalidate (write through the mount) and Rename drop cached content;
// open handles revalidate before their next read.
func TestInvalidateAndRename(t *testing.T) {
	o := newFakeOrigin()
	o.put("a", pattern(testChunk, 17))
	o.put("d/b", pattern(testChunk, 18))
	o.put("d/c", pattern(testChunk, 19))
	s := openStore(t, o, testConfig(t))
	for _, n := range []string{"a", "d/b", "d/c"} {
		cacheFile(t, s, o, n)
	}
	h, _ := mustOpen(t, s, o, "a")
	s.Invalidate("a")
	if s.CachedBytes("a") != 0 {
		t.Fatal("Invalidate left content")
	}
	v2 := pattern(testChunk, 20)
	o.put("a", v2) // the write that went through the mount
	mustEqual(t, "handle after invalidate", readAll(t, h, testChunk), v2)
	s.Rename("d", "e")
	if s.CachedBytes("d") != 0 || s.CachedBytes("d/b") != 0 {
		t.Fatal("Rename left content of the old directory")
	}
	if st := s.Stats(); st.Files != 1 {
		t.Fatalf("files %d, want 1 (a, re-recorded)", st.Files)
	}
}

// Origin trouble (EIO) never drops cached data: an open handle keeps
// serving its cached bytes; ENOENT means gone and drops the entry.
func TestOriginTroubleVersusGone(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(2*testChunk, 21)
	o.put("f", data)
	cfg := testConfig(t)
	cfg.Revalidate = 10 * time.Millisecond
	s := openStore(t, o, cfg)
	h, _ := mustOpen(t, s, o, "f")
	readAll(t, h, int64(len(data)))
	waitFor(t, "cached", func() bool { return s.CachedBytes("f") == int64(len(data)) })
	o.statErr = func(string) error { return fmt.Errorf("lstat: %w", syscall.EIO) }
	o.readErr = func(string, int64) error { return syscall.EIO }
	time.Sleep(20 * time.Millisecond)
	mustEqual(t, "cached bytes during trouble", readAll(t, h, int64(len(data))), data)
	if s.CachedBytes("f") != int64(len(data)) {
		t.Fatal("trouble dropped cached data")
	}
	// An uncached file during trouble: an error, not an empty file.
	o.statErr, o.readErr = nil, nil
	o.put("g", pattern(testChunk, 22))
	hg, _ := mustOpen(t, s, o, "g")
	o.readErr = func(string, int64) error { return syscall.EIO }
	if n, err := hg.ReadAt(context.Background(), make([]byte, 10), 0); err == nil || n != 0 {
		t.Fatalf("read during trouble: n=%d err=%v, want an error", n, err)
	}
	o.readErr = nil
	o.remove("f")
	time.Sleep(20 * time.Millisecond)
	if _, err := h.ReadAt(context.Background(), make([]byte, 10), 0); err == nil {
		t.Fatal("read of a removed file succeeded after revalidation")
	}
	if s.CachedBytes("f") != 0 {
		t.Fatal("ENOENT did not drop the entry")
	}
}

// Disconnected reads: a fully cached file validated within the grace
// window opens offline; otherwise ErrNotCached.
func TestOfflineAndLastKnown(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(2*testChunk+5, 23)
	a := o.put("f", data)
	o.put("partial", pattern(3*testChunk, 24))
	s := openStore(t, o, testConfig(t))
	cacheFile(t, s, o, "f")
	hp, _ := mustOpen(t, s, o, "partial")
	hp.ReadAt(context.Background(), make([]byte, 10), 0)
	hp.Close()
	got, at, complete, ok := s.LastKnown("f")
	if !ok || !complete || got.Fingerprint() != a.Fingerprint() || time.Since(at) > time.Minute {
		t.Fatalf("LastKnown: %v %v %v %v", got, at, complete, ok)
	}
	o.statErr = func(string) error { return syscall.ETIMEDOUT }
	o.readErr = func(string, int64) error { return syscall.ETIMEDOUT }
	h, attr, err := s.OpenOffline(context.Background(), "f", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if attr.Size != a.Size {
		t.Fatal("offline attr")
	}
	mustEqual(t, "offline read", readAll(t, h, a.Size), data)
	if _, _, err := s.OpenOffline(context.Background(), "partial", time.Minute); err == nil {
		t.Fatal("partial file opened offline")
	}
	time.Sleep(5 * time.Millisecond)
	if _, _, err := s.OpenOffline(context.Background(), "f", time.Millisecond); err == nil {
		t.Fatal("opened offline outside the grace window")
	}
}
