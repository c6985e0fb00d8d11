package cache

import (
	"context"
	"testing"
)

// A file replaced on the origin while a handle reads it (the NFS handle
// goes stale, the path now names the new file): the reopened file is the
// new version, so no byte of it is stored under the old version and no
// read mixes the two; readers revalidate and get the new version whole.
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
			// through the stale handle, then a reopen by path).
			buf := make([]byte, testChunk)
			n, err := h.ReadAt(ctx, buf, testChunk/2)
			if err != nil {
				t.Logf("read across the replacement failed (allowed): %v", err)
			} else {
				mustEqual(t, "read across the replacement", buf[:n], newData[testChunk/2:testChunk/2+n])
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
			mustEqual(t, "whole file after the replacement", readAll(t, h, int64(len(newData))), newData)
			v1 := e.current()
			if v1 == nil || v1.fp != o.attr("f").Fingerprint() {
				t.Fatalf("current version %v, want the new file's", v1)
			}
			waitFor(t, "new version cached", func() bool { return s.CachedBytes("f") == int64(len(newData)) })
			h2, _ := mustOpen(t, s, o, "f")
			mustEqual(t, "new handle", readAll(t, h2, int64(len(newData))), newData)
		})
	}
}
