package cache

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

// A file replaced on the origin while a handle reads it (the NFS handle
// goes stale, the path now names the new file): the reopened file is the
// new version, so no byte of it is stored under the old version; the
// handle that opened the old file gets ESTALE from then on instead of
// the new file's bytes, and a new open reads the new version whole.
func TestReplacedDuringReadNeverMixes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cachedFirst bool // a chunk of the old version is cached before the replacement
	}{
		{"stale-after-first-chunk", true},
		{"replaced-before-first-open", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newFakeOrigin()
			o.staleOnReplace = true
			oldData := pattern(4*testChunk, 60)
			newData := pattern(4*testChunk, 61)
			o.put("f", oldData)
			s := openStore(t, o, testConfig(t))
			h, _ := mustOpen(t, s, o, "f")
			e := h.(*handle).e
			v0 := e.current()
			ctx := context.Background()
			if tc.cachedFirst {
				buf := make([]byte, 16<<10)
				if _, err := h.ReadAt(ctx, buf, 0); err != nil {
					t.Fatal(err)
				}
				mustEqual(t, "old chunk 0", buf, oldData[:len(buf)])
				waitFor(t, "chunk 0 cached", func() bool { return s.CachedBytes("f") == testChunk })
			}
			o.replace("f", newData)
			// One read across chunk 0 (cached or not) and chunk 1 (fetched
			// through the stale handle, then a reopen by path that finds
			// another file): the handle opened the old file and never reads
			// the new one's bytes, nor the old one's spliced with them.
			buf := make([]byte, testChunk)
			if n, err := h.ReadAt(ctx, buf, testChunk/2); !errors.Is(err, syscall.ESTALE) {
				t.Fatalf("read across the replacement: %d bytes, err %v; want ESTALE", n, err)
			}
			e.mu.Lock()
			for idx, st := range v0.state {
				if idx == 0 && tc.cachedFirst {
					continue
				}
				if st != chunkAbsent {
					t.Errorf("old version: chunk %d state %d, want absent", idx, st)
				}
			}
			e.mu.Unlock()
			if !v0.detached.Load() {
				t.Error("old version still attached")
			}
			if _, err := h.ReadAt(ctx, buf, 0); !errors.Is(err, syscall.ESTALE) {
				t.Fatalf("read of the old handle after the replacement: %v, want ESTALE", err)
			}
			v1 := e.current()
			if v1 == nil || v1.fp != o.attr("f").Fingerprint() {
				t.Fatalf("current version %v, want the new file's", v1)
			}
			h2, _ := mustOpen(t, s, o, "f")
			mustEqual(t, "new handle", readAll(t, h2, int64(len(newData))), newData)
			waitFor(t, "new version cached", func() bool { return s.CachedBytes("f") == int64(len(newData)) })
		})
	}
}

// A new file with the old one's inode number, size and times (only its
// generation differs) is another version: an open reads its bytes, never
// the old one's cached chunks, and a handle of the old file gets ESTALE.
func TestReusedInoSameTimesIsAnotherVersion(t *testing.T) {
	o := newFakeOrigin()
	o.staleOnReplace = true
	oldData := pattern(2*testChunk, 70)
	newData := pattern(2*testChunk, 71)
	o.put("f", oldData)
	s := openStore(t, o, testConfig(t))
	h, _ := mustOpen(t, s, o, "f")
	ctx := context.Background()
	buf := make([]byte, testChunk)
	if _, err := h.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "old chunk 0", buf, oldData[:testChunk])
	waitFor(t, "chunk 0 cached", func() bool { return s.CachedBytes("f") == testChunk })
	a := o.reuseIno("f", newData)
	h2, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "an open after the reuse", readAll(t, h2, int64(len(newData))), newData)
	if v := h2.(*handle).e.current(); v == nil || v.attr.Gen != a.Gen {
		t.Fatalf("current version %+v, want Gen %d", v, a.Gen)
	}
	if n, err := h.ReadAt(ctx, buf, testChunk); !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("the old file's handle read %d bytes (%v) after the reuse, want ESTALE", n, err)
	}
}
